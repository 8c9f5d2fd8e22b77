-- part:save off the loop (issue 13): the file is opened, written and closed on the thread
-- pool, so a save that waits on its file (here a FIFO nobody reads yet) holds no other
-- request; and a large save keeps memory at about one batch. spec/multipart_spec.lua holds
-- the parser, limits and real clients.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local testing = require "loom.testing"

local GUARD = 10

local function exists(path)
    local f = io.open(path, "rb")
    if f then f:close() end
    return f ~= nil
end

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local function multipart(boundary, data)
    return "--" .. boundary .. "\r\n"
        .. 'Content-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n'
        .. data .. "\r\n--" .. boundary .. "--\r\n"
end

describe("part:save", function()
    it("waits on its file in the thread pool while other requests are answered", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        local fifo, mark, out = dir .. "/fifo", dir .. "/mark", dir .. "/out"
        assert(os.execute("mkfifo " .. fifo))
        local _ <close> = setmetatable({}, { __close = function() os.execute("rm -rf " .. dir) end })
        local app = loom.app()
        app:post("/up", function(req)
            local n
            for part in req:parts() do n = assert(part:save(fifo)) end
            return tostring(n)
        end)
        app:get("/ok", function() return "ok" end)
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            -- the FIFO's reader comes only after 8 s, past the hang guard of what follows (a
            -- blocking open of the FIFO for writing would hold the whole loop until then); it
            -- leaves a mark as it comes
            local reader = assert(core.process_spawn("/bin/sh",
                { "-c", ("sleep 8; : > %s; cat %s > %s"):format(mark, fifo, out) }))
            local body = multipart("XyZ", "ten bytes!")
            local st1 = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st1
            local r1 = testing.reader(st1)
            assert(st1:write(("POST /up HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
                .. "boundary=XyZ\r\nContent-Length: %d\r\n\r\n%s"):format(#body, body)))
            -- another request on another connection is answered meanwhile
            local st2 = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st2
            local r2 = testing.reader(st2)
            loom.sleep(0.2) -- let the save reach its open (the assertion below does not depend on it)
            assert(st2:write("GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"))
            local res = assert(loom.timeout(GUARD, function() return r2:response() end))
            assert.equal("ok", res.body)
            assert.is_false(exists(mark), "the loop was held until the FIFO's reader came")
            res = assert(loom.timeout(GUARD, function() return r1:response() end))
            assert.equal(200, res.status)
            assert.equal("10", res.body)
            assert.equal(0, reader:wait())
            assert.equal("ten bytes!", read_file(out))
        end, { timeout = 30 })
    end)

    it("saves a 64 MiB part byte-exact with memory about flat", function()
        local path = os.tmpname()
        local _ <close> = setmetatable({}, { __close = function() os.remove(path) end })
        local app = loom.app{ max_body = 128 * 1024 * 1024 }
        local grew
        app:post("/up", function(req)
            local n
            collectgarbage()
            local before = collectgarbage("count")
            for part in req:parts() do n = assert(part:save(path)) end
            grew = collectgarbage("count") - before
            return tostring(n)
        end)
        local block = {}
        for i = 1, 4096 do block[i] = ("%015d\n"):format(i) end
        block = table.concat(block) -- 64 KiB, every line different
        local size = 64 * 1024 * 1024
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st
            local head = '--B\r\nContent-Disposition: form-data; name="f"; filename="big"\r\n\r\n'
            local tail = "\r\n--B--\r\n"
            assert(st:write(("POST /up HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                .. "Content-Length: %d\r\n\r\n%s"):format(#head + size + #tail, head)))
            for _ = 1, size // #block do assert(st:write(block)) end
            assert(st:write(tail))
            local res = assert(loom.timeout(GUARD * 6, function() return testing.reader(st):response() end))
            assert.equal(200, res.status)
            assert.equal(tostring(size), res.body)
        end, { timeout = 90 })
        local f = assert(io.open(path, "rb"))
        local ok = true
        for _ = 1, size // #block do
            if f:read(#block) ~= block then ok = false break end
        end
        f:close()
        assert.is_true(ok, "the saved file differs")
        -- the Lua heap held a few batches at most, not the part (64 MiB)
        assert.is_true(grew < 8 * 1024, ("the Lua heap grew by %.0f KiB"):format(grew))
    end)
end)
