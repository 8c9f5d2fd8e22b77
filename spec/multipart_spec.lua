-- multipart/form-data over real sockets: req:parts() and req:form() on the server, the
-- client's `multipart` option, with loom, curl -F and Python requests as the clients, and
-- malformed bodies written raw (see docs/web.md, "multipart/form-data").
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local core = require "loom.core"

local TMP = os.getenv("TMPDIR") or "/tmp"

local function tmpfile(tag)
    return ("%s/loom-mp-%d-%s-%s"):format(TMP, core.process_pid and core.process_pid() or 0, tag,
        loom.crypto.hex(loom.crypto.random(4)))
end

local function write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
end

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- Bytes of every value 0-255, repeated up to n bytes, with CRLF-- runs that look like a
-- delimiter's start.
local function binary(n)
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    local unit = table.concat(t) .. "\r\n--\r\n-" .. "\r\n--loom"
    return unit:rep(n // #unit + 1):sub(1, n)
end

-- Runs body(srv, base) with app listening on 127.0.0.1, port 0.
local function serve(app, body)
    run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        return body(srv, ("http://127.0.0.1:%d"):format(srv.port))
    end)
end

-- Runs a shell command beside the loop; its exit code.
local function sh(cmd)
    local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
    return p:wait()
end

-- A raw connection and a reader over it.
local function open(srv)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    return st, testing.reader(st)
end

local function exchange(srv, wire)
    local st, r = open(srv)
    local _ <close> = st
    assert(st:write(wire))
    return assert(r:response()), r
end

-- A multipart request written by hand: parts is a list of {head lines..., body = s}.
local function raw_request(path, boundary, body, extra)
    return ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=%s\r\n%sContent-Length: %d\r\n\r\n%s")
        :format(path, boundary, extra or "", #body, body)
end

-- An app whose /parts route describes each part and reads it whole.
local function parts_app(opts)
    local app = loom.app(opts)
    app:post("/parts", function(req)
        local out = {}
        for part in req:parts() do
            out[#out + 1] = { name = part.name, filename = part.filename or false, type = part.type or false,
                size = #part:text(), disposition = part.headers["Content-Disposition"] }
        end
        return { json = out }
    end)
    return app
end

describe("multipart: req:parts()", function()
    it("reads parts sent by the loom client: fields, a 5 MiB file from disk, a blob, odd filenames", function()
        local path = tmpfile("big")
        local data = binary(5 * 1024 * 1024 + 17)
        write_file(path, data)
        local app = loom.app{ max_body = 8 * 1024 * 1024 }
        local saved = tmpfile("saved")
        app:post("/up", function(req)
            local out = {}
            for part in req:parts() do
                local e = { name = part.name, filename = part.filename or false, type = part.type or false }
                if part.name == "file" then
                    e.n = part:save(saved)
                else
                    e.text = part:text()
                end
                out[#out + 1] = e
            end
            return { json = out }
        end)
        serve(app, function(_, base)
            local res = assert(loom.fetch(base .. "/up", { method = "POST", multipart = {
                field = "v", n = 42,
                file = { path = path, type = "application/x-test" },
                blob = { body = "bytes", filename = 'a "quoted"\r\nname ü.txt' },
            } }))
            assert.equal(200, res.status)
            local got = res:json()
            os.remove(path)
            assert.same({
                { name = "blob", filename = 'a %22quoted%22%0D%0Aname ü.txt', type = false, text = "bytes" },
                { name = "field", filename = false, type = false, text = "v" },
                { name = "file", filename = path:match("[^/]+$"), type = "application/x-test", n = #data },
                { name = "n", filename = false, type = false, text = "42" },
            }, got)
            assert.is_true(read_file(saved) == data, "the saved file differs")
            os.remove(saved)
        end)
    end)
end)
