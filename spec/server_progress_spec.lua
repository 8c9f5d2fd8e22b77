-- The server's body_timeout and send_timeout bound the time without progress, not the
-- whole transfer: a slow but steady client is served, a stalled one is cut off.
local loom = require "loom"
local run = require "support.run"

local function start(app)
    return assert(app:listen{ host = "127.0.0.1", port = 0 })
end

describe("server progress timeouts", function()
    it("serves a body that trickles in slower than body_timeout in total", function()
        run(function()
            local app = loom.app{ body_timeout = 1.2 }
            app:post("/", function(req) return assert(req:text()) end)
            local srv <close> = start(app)
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            st:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n")
            -- 15 x 0.1 s: past body_timeout in all, never 1.2 s idle (1.1 s of room in each
            -- gap for a loaded machine)
            for _ = 1, 15 do
                loom.sleep(0.1)
                assert(st:write("a"))
            end
            assert.equal("HTTP/1.1 200 OK", st:read_line())
        end)
    end)

    it("answers 408 to a body that stops coming", function()
        run(function()
            local app = loom.app{ body_timeout = 0.3 }
            local got
            app:post("/", function(req)
                local b, err = req:text()
                got = err
                return b or err
            end)
            local srv <close> = start(app)
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            st:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nab")
            assert.equal("HTTP/1.1 408 Request Timeout", st:read_line())
            assert.matches("^timeout: request body", got)
        end)
    end)

    it("streams to a slow, steady reader longer than send_timeout in total", function()
        run(function()
            -- 1 s: the sleeps alone make the transfer longer (128 reads x 10 ms at least), and
            -- each 256 KiB piece takes about 80 ms, with room for a loaded machine
            local app = loom.app{ send_timeout = 1 }
            local size = 4 * 1024 * 1024
            local result = loom.event()
            app:get("/", function(req)
                local out = req:stream{ headers = { ["content-length"] = tostring(size) } }
                result.ok, result.err = out:write(("x"):rep(size))
                result:set()
            end)
            local srv <close> = start(app)
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            st:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            local got = 0
            local t0 = loom.now()
            while got < size do
                local d = assert(st:read(32768))
                got = got + #d
                loom.sleep(0.01) -- about 3 MB/s
            end
            result:wait()
            assert.is_true(result.ok, tostring(result.err))
            assert.is_true(loom.now() - t0 > 1, "the transfer outlasted send_timeout")
        end)
    end)

    it("gives up on a reader that stops reading", function()
        run(function()
            local app = loom.app{ send_timeout = 0.3 }
            local result = loom.event()
            app:get("/", function(req)
                local out = req:stream{}
                repeat
                    result.ok, result.err = out:write(("x"):rep(65536))
                until not result.ok
                result:set()
            end)
            local srv <close> = start(app)
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            st:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            result:wait()
            assert.matches("^timeout: the client read nothing", result.err)
        end)
    end)
end)
