-- TCP streams and the raw listener: loom.listen, loom.connect and the stream methods, over
-- real loopback sockets (127.0.0.1, port 0).
local loom = require "loom"
local run = require "support.run"
local timing = require "support.timing"

-- Starts a listener whose handler is `handler(st)`; returns it (to-be-closed).
local function serve(handler)
    return assert(loom.listen{ host = "127.0.0.1", port = 0, handler = handler })
end

-- A server that sends `data` to each client, then closes.
local function sender(data, ...)
    local parts = table.pack(data, ...)
    return serve(function(st)
        for i = 1, parts.n do st:write(parts[i]) end
        st:close()
    end)
end

-- A port with no listener: bound by a listener that is then closed.
local function closed_port()
    local l = serve(function() end)
    local port = l.port
    l:close()
    return port
end

describe("loom.listen and loom.connect", function()
    it("echo a line", function()
        run(function()
            local srv <close> = serve(function(st)
                local line = assert(st:read_line())
                assert(st:write("echo: " .. line .. "\n"))
                st:close()
            end)
            assert.is_true(srv.port > 0)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.is_true(c:write("hello\n"))
            assert.equal("echo: hello", c:read_line())
            assert.same({ nil, "closed: end of stream" }, { c:read_line() })
        end)
    end)

    it("run each connection in a task of its own", function()
        run(function()
            local release, all_in = loom.event(), loom.event()
            local active, most = 0, 0
            local srv <close> = serve(function(st)
                active = active + 1
                most = math.max(most, active)
                if active == 5 then all_in:set() end
                release:wait()
                st:write(st:read_line() .. "\n")
                active = active - 1
                st:close()
            end)
            local clients = {}
            for i = 1, 5 do
                clients[i] = assert(loom.connect("127.0.0.1", srv.port))
                clients[i]:write("c" .. i .. "\n")
            end
            all_in:wait() -- five handlers at once, each in its own task
            release:set()
            for i = 1, 5 do
                assert.equal("c" .. i, clients[i]:read_line())
                clients[i]:close()
            end
            assert.equal(5, most)
        end)
    end)

    it("resolve localhost", function()
        run(function()
            local srv <close> = sender("hi")
            local c <close> = assert(loom.connect("localhost", srv.port))
            assert.equal("hi", c:read("a"))
        end)
    end)

    it("give the peer's address", function()
        run(function()
            local server_peer = {}
            local done = loom.event()
            local srv <close> = serve(function(st)
                server_peer = { st:peer() }
                done:set()
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.same({ "127.0.0.1", srv.port }, { c:peer() })
            done:wait()
            assert.equal("127.0.0.1", server_peer[1])
            assert.equal("number", math.type(server_peer[2]) and "number")
            assert.matches("^loom%.stream %(127%.0%.0%.1:%d+%)$", tostring(c))
        end)
    end)

    it("listener.port and listener:close(), twice", function()
        run(function()
            local srv = serve(function(st) st:close() end)
            local port = srv.port
            assert.equal("integer", math.type(port))
            assert.is_true(port > 0 and port < 65536)
            local c = assert(loom.connect("127.0.0.1", port))
            c:close()
            srv:close()
            srv:close()
            assert.equal(port, srv.port)
            local st, err = loom.connect("127.0.0.1", port)
            assert.is_nil(st)
            assert.matches("^connect: ", err)
        end)
    end)

    it("a listener is closed by <close>", function()
        run(function()
            local port
            do
                local srv <close> = serve(function(st) st:close() end)
                port = srv.port
            end
            local st, err = loom.connect("127.0.0.1", port)
            assert.is_nil(st)
            assert.matches("^connect: connection refused", err)
        end)
    end)

    it("listen on a port in use gives nil, 'listen: ...'", function()
        run(function()
            local srv <close> = serve(function() end)
            local l2, err = loom.listen{ host = "127.0.0.1", port = srv.port, handler = print }
            assert.is_nil(l2)
            assert.matches("^listen: address already in use", err)
        end)
    end)
end)

describe("st:read", function()
    it("read() gives what has arrived, read(n) exactly n bytes", function()
        run(function()
            local srv <close> = sender("abcdefghij")
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.equal("abc", c:read(3))
            assert.equal("", c:read(0))
            assert.equal("defg", c:read(4))
            local rest = c:read()
            assert.equal("hij", rest)
            assert.same({ nil, "closed: end of stream" }, { c:read() })
            assert.same({ nil, "closed: end of stream" }, { c:read(1) })
        end)
    end)

    it("read(n) waits for n bytes across several writes, and gives fewer at the end", function()
        run(function()
            local go = loom.event()
            local srv <close> = serve(function(st)
                st:write("12")
                go:wait()
                st:write("345")
                st:write("67")
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            local reader = loom.spawn(function() return c:read(5) end)
            loom.sleep(0.02)
            assert.is_false(reader:done())
            go:set()
            assert.same({ true, "12345" }, { reader:join() })
            assert.equal("67", c:read(10))
            assert.same({ nil, "closed: end of stream" }, { c:read(10) })
        end)
    end)

    it("read('a') reads to the end, and gives '' at the end", function()
        run(function()
            local srv <close> = sender("one ", "two ", "three")
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.equal("one two three", c:read("a"))
            assert.equal("", c:read("a"))
            assert.equal("", c:read("*a"))
        end)
    end)

    it("read_line() takes CRLF and LF lines, and a last line without newline", function()
        run(function()
            local srv <close> = sender("crlf\r\nlf\n\nlast")
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.equal("crlf", c:read_line())
            assert.equal("lf", c:read_line())
            assert.equal("", c:read_line())
            assert.equal("last", c:read_line())
            assert.same({ nil, "closed: end of stream" }, { c:read_line() })
        end)
    end)

    it("read('l') is read_line()", function()
        run(function()
            local srv <close> = sender("a\r\nb")
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.equal("a", c:read("l"))
            assert.equal("b", c:read("*l"))
        end)
    end)

    it("read_line() mixes with read(n) on one buffer", function()
        run(function()
            local srv <close> = sender("head\r\n12345tail\n")
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.equal("head", c:read_line())
            assert.equal("12345", c:read(5))
            assert.equal("tail", c:read_line())
        end)
    end)


    it("read_line() of an over-long line gives nil, 'limit: ...'", function()
        run(function()
            -- (1) the line is still arriving: the limit is hit before its end
            local more = loom.event()
            local srv <close> = serve(function(st)
                st:write(string.rep("x", 70000))
                more:wait()
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.same({ nil, "limit: line longer than 65536 bytes" }, { c:read_line() })
            more:set()
        end)
        run(function()
            -- (2) the whole line and its newline are there before the read
            local sent = loom.event()
            local srv <close> = serve(function(st)
                st:write(string.rep("x", 70000) .. "\nok\n")
                sent:set()
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            sent:wait()
            assert.same({ nil, "limit: line longer than 65536 bytes" }, { c:read_line() })
        end)
    end)

    it("read_line() takes a line of exactly 64 KiB", function()
        run(function()
            local line = string.rep("y", 65536)
            local srv <close> = sender(line .. "\r\n" .. line .. "\n")
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.equal(line, c:read_line())
            assert.equal(line, c:read_line())
        end)
    end)

    it("returns buffered data even outside a task", function()
        local c
        run(function()
            local srv <close> = sender("one\ntwo\n")
            c = assert(loom.connect("127.0.0.1", srv.port))
            assert.equal("one", c:read_line()) -- the rest came in the same read
        end)
        assert.equal("two", c:read_line())
        c:close()
    end)

    it("that has to wait raises outside any task", function()
        local c, peer
        run(function()
            local accepted = loom.event()
            local srv <close> = serve(function(st)
                peer = st -- kept open, not read: nothing waits on it
                accepted:set()
            end)
            c = assert(loom.connect("127.0.0.1", srv.port))
            accepted:wait()
        end)
        assert.error_matches(function() c:read() end, "read: called outside any task")
        assert.error_matches(function() c:read_line() end, "read_line: called outside any task")
        peer:close()
        c:close()
    end)

    it("by a second task at once is misuse", function()
        run(function()
            local srv <close> = serve(function(st)
                st:write(st:read()) -- echo
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            local first = loom.spawn(function() return c:read() end)
            loom.sleep(0)
            assert.error_matches(function() c:read() end, "another task is already reading")
            c:write("x")
            assert.same({ true, "x" }, { first:join() })
        end)
    end)
end)

describe("st:write", function()
    it("takes several strings", function()
        run(function()
            local got = loom.queue()
            local srv <close> = serve(function(st)
                got:put(st:read("a"))
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.is_true(c:write("a", "bc", "", "def"))
            c:shutdown()
            assert.equal("abcdef", got:get())
        end)
    end)

    it("waits under backpressure, and every byte arrives intact", function()
        run(function()
            -- 32 MiB: more than the socket buffers and the reader's buffer hold together.
            -- Numbered lines, so a lost or repeated chunk shows.
            local lines = {}
            for i = 0, 4095 do lines[#lines + 1] = string.format("%07x\n", i) end
            local block = table.concat(lines)
            local blocks = {}
            for i = 1, 1024 do blocks[i] = string.format("%07x", i) .. block:sub(8) end
            local big = table.concat(blocks)
            assert.equal(32 * 1024 * 1024, #big)
            local go, got = loom.event(), loom.queue()
            local srv <close> = serve(function(st)
                go:wait()
                got:put(st:read("a"))
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            local writer = loom.spawn(function() return c:write(big) end)
            loom.sleep(0.1)
            assert.is_false(writer:done(), "the write finished while the peer read nothing")
            go:set()
            assert.same({ true, true }, { writer:join() })
            c:shutdown()
            local data = got:get()
            assert.equal(#big, #data)
            assert.is_true(data == big, "the bytes differ")
        end)
    end)

    it("to a peer that has gone gives nil, 'closed: ...'", function()
        run(function()
            local srv <close> = serve(function(st) st:close() end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.same({ nil, "closed: end of stream" }, { c:read() })
            local ok, err
            for _ = 1, 100 do -- the first writes may still land in the socket buffer
                ok, err = c:write(string.rep("z", 65536))
                if not ok then break end
            end
            assert.is_nil(ok)
            assert.matches("^closed: ", err)
        end)
    end)
end)

describe("close and shutdown", function()
    it("close: the peer reads nil, 'closed: end of stream'; our calls give 'closed: ...'", function()
        run(function()
            local seen = loom.queue()
            local srv <close> = serve(function(st)
                seen:put({ st:read() })
                st:close()
            end)
            local c = assert(loom.connect("127.0.0.1", srv.port))
            c:close()
            assert.same({ nil, "closed: end of stream" }, seen:get())
            assert.same({ nil, "closed: stream is closed" }, { c:read() })
            assert.same({ nil, "closed: stream is closed" }, { c:read_line() })
            assert.same({ nil, "closed: stream is closed" }, { c:write("x") })
            assert.same({ nil, "closed: stream is closed" }, { c:shutdown() })
            c:close() -- twice is harmless
            assert.matches("closed%)$", tostring(c))
        end)
    end)

    it("close wakes a task waiting to read, with 'closed: ...'", function()
        run(function()
            local srv <close> = serve(function(st)
                st:read()
                st:close()
            end)
            local c = assert(loom.connect("127.0.0.1", srv.port))
            local reader = loom.spawn(function() return c:read() end)
            loom.sleep(0)
            c:close()
            assert.same({ true, nil, "closed: stream is closed" }, { reader:join() })
        end)
    end)

    it("shutdown: the peer reads the end, and we still read its answer", function()
        run(function()
            local srv <close> = serve(function(st)
                local all = st:read("a")
                st:write("got " .. #all .. " bytes")
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            c:write("12345")
            assert.is_true(c:shutdown())
            assert.equal("got 5 bytes", c:read("a"))
        end)
    end)

    it("<close> closes a stream", function()
        run(function()
            local seen = loom.queue()
            local srv <close> = serve(function(st)
                seen:put({ st:read() })
                st:close()
            end)
            do
                local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            end
            assert.same({ nil, "closed: end of stream" }, seen:get())
        end)
    end)

    it("a stream dropped without close is closed by the garbage collector", function()
        run(function()
            local seen = loom.queue()
            local srv <close> = serve(function(st)
                seen:put({ st:read() })
                st:close()
            end)
            assert(loom.connect("127.0.0.1", srv.port))
            collectgarbage()
            collectgarbage()
            assert.same({ nil, "closed: end of stream" }, seen:get())
        end)
    end)
end)

describe("cancelling", function()
    it("a task blocked in st:read() frees its connection", function()
        run(function()
            local seen = loom.queue()
            local srv <close> = serve(function(st)
                seen:put("accepted")
                seen:put({ st:read() })
                st:close()
            end)
            local t = loom.spawn(function()
                local c <close> = assert(loom.connect("127.0.0.1", srv.port))
                return c:read()
            end)
            assert.equal("accepted", seen:get())
            loom.sleep(0)
            assert.is_false(t:done())
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            assert.same({ nil, "closed: end of stream" }, seen:get())
        end)
    end)

    it("a reader leaves the stream usable by another task", function()
        run(function()
            local go = loom.event()
            local srv <close> = serve(function(st)
                go:wait()
                st:write("late\n")
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            local t = loom.spawn(function() return c:read_line() end)
            loom.sleep(0)
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            go:set()
            assert.equal("late", c:read_line())
        end)
    end)

    it("a task blocked in a write", function()
        run(function()
            local go = loom.event()
            local srv <close> = serve(function(st)
                go:wait() -- reads nothing until the end
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            local big = string.rep("w", 32 * 1024 * 1024)
            local t = loom.spawn(function() return c:write(big) end)
            loom.sleep(0.05)
            assert.is_false(t:done())
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            go:set()
        end)
    end)
end)

describe("connect failures", function()
    it("a closed port gives nil, 'connect: ...'", function()
        run(function()
            local port = closed_port()
            local st, err = loom.connect("127.0.0.1", port)
            assert.is_nil(st)
            assert.equal("connect: connection refused (127.0.0.1:" .. port .. ")", err)
        end)
    end)

    it("an unknown host gives nil, 'dns: ...'", function()
        run(function()
            local st, err = loom.connect("nonexistent.invalid", 80)
            assert.is_nil(st)
            assert.matches("^dns: .*%(nonexistent%.invalid%)$", err)
        end)
    end)

    it("a peer that never answers gives nil, 'timeout: ...' after the timeout option", function()
        -- A listening socket with a backlog of 0 that never accepts: once its queue is full,
        -- the kernel drops further SYNs and connect() waits. It lives in a python3 process
        -- that exits when we close the pipe (its next write fails).
        local p = assert(io.popen([[exec python3 -c '
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
for _ in range(1200):
    time.sleep(0.05)
    try:
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:
        break
os._exit(0)
']]))
        local port = assert(tonumber(p:read("l")), "no port from python3")
        local ok, err = pcall(run, function()
            local kept, result = {}, nil
            for _ = 1, 8 do
                local t0 = loom.now()
                local st, e = loom.connect("127.0.0.1", port, { timeout = 0.2 })
                if not st then
                    result = { e, loom.now() - t0 }
                    break
                end
                kept[#kept + 1] = st -- a queued connection: keep it, so the queue stays full
            end
            for _, st in ipairs(kept) do st:close() end
            assert.is_not_nil(result, "every connect succeeded")
            assert.equal("timeout: connect to 127.0.0.1:" .. port, result[1])
            timing.within(result[2], 0.18, 0.2, "connect timeout")
        end)
        p:close()
        assert(ok, err)
    end)

    it("timeout = 0 gives up at once", function()
        run(function()
            local srv <close> = serve(function(st) st:close() end)
            local st, err = loom.connect("127.0.0.1", srv.port, { timeout = 0 })
            assert.is_nil(st)
            assert.matches("^timeout: connect to 127%.0%.0%.1:", err)
        end)
    end)
end)

describe("timeouts on reads and writes", function()
    it("settimeout bounds a read: nil, 'timeout: ...', and the stream stays usable", function()
        run(function()
            local go = loom.event()
            local srv <close> = serve(function(st)
                go:wait()
                st:write("now\n")
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            c:settimeout(0.1)
            local t0 = loom.now()
            local line, err = c:read_line()
            local dt = loom.now() - t0
            assert.is_nil(line)
            assert.equal("timeout: read from 127.0.0.1:" .. srv.port, err)
            timing.within(dt, 0.09, 0.1, "read timeout")
            go:set()
            c:settimeout(nil)
            assert.equal("now", c:read_line())
        end)
    end)

    it("the read_timeout option of connect does the same", function()
        run(function()
            local go = loom.event()
            local srv <close> = serve(function(st)
                go:wait()
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port, { read_timeout = 0.05 }))
            assert.same({ nil, "timeout: read from 127.0.0.1:" .. srv.port }, { c:read(1) })
            go:set()
        end)
    end)

    it("settimeout bounds a write to a peer that does not read", function()
        run(function()
            local go = loom.event()
            local srv <close> = serve(function(st)
                go:wait()
                st:close()
            end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            c:settimeout(0.1)
            local ok, err = c:write(string.rep("w", 32 * 1024 * 1024))
            assert.is_nil(ok)
            assert.equal("timeout: write to 127.0.0.1:" .. srv.port, err)
            go:set()
        end)
    end)
end)

describe("misuse raises, naming the argument or option", function()
    it("in loom.connect", function()
        run(function()
            assert.error_matches(function() loom.connect(1, 80) end,
                "bad argument #1 to 'connect' %(string expected, got number%)")
            assert.error_matches(function() loom.connect("127.0.0.1", "x") end,
                "bad argument #2 to 'connect' %(integer port expected, got string%)")
            assert.error_matches(function() loom.connect("127.0.0.1", 0) end,
                "bad argument #2 to 'connect' %(port out of range%)")
            assert.error_matches(function() loom.connect("127.0.0.1", 70000) end,
                "bad argument #2 to 'connect' %(port out of range%)")
            assert.error_matches(function() loom.connect("127.0.0.1", 80, 5) end,
                "bad argument #3 to 'connect' %(table expected, got number%)")
            assert.error_matches(function() loom.connect("127.0.0.1", 80, { timeout = "x" }) end,
                "bad argument #3 to 'connect' %(option 'timeout': non%-negative number expected")
            assert.error_matches(function() loom.connect("127.0.0.1", 80, { timeout = -1 }) end,
                "option 'timeout'")
            assert.error_matches(function() loom.connect("127.0.0.1", 80, { read_timeout = {} }) end,
                "option 'read_timeout'")
            assert.error_matches(function() loom.connect("127.0.0.1", 80, { timout = 1 }) end,
                "bad argument #3 to 'connect' %(unknown option 'timout'%)")
        end)
    end)

    it("in loom.listen", function()
        assert.error_matches(function() loom.listen() end,
            "bad argument #1 to 'listen' %(table expected, got no value%)")
        assert.error_matches(function() loom.listen{ port = 0 } end,
            "bad argument #1 to 'listen' %(option 'handler': function expected, got nil%)")
        assert.error_matches(function() loom.listen{ handler = print } end,
            "bad argument #1 to 'listen' %(option 'port'")
        assert.error_matches(function() loom.listen{ port = "x", handler = print } end,
            "bad argument #1 to 'listen' %(option 'port': integer port expected, got string%)")
        assert.error_matches(function() loom.listen{ port = -1, handler = print } end,
            "option 'port': port out of range")
        assert.error_matches(function() loom.listen{ host = 1, port = 0, handler = print } end,
            "option 'host': string expected, got number")
        assert.error_matches(function() loom.listen{ port = 0, handler = print, backlog = "x" } end,
            "bad argument #1 to 'listen' %(option 'backlog'")
        assert.error_matches(function() loom.listen{ port = 0, handler = print, backlog = 1.5 } end,
            "bad argument #1 to 'listen' %(option 'backlog': non%-negative integer expected, got 1.5%)")
        assert.error_matches(function() loom.listen{ port = 0, handler = print, hots = "x" } end,
            "unknown option 'hots'")
        assert.same({ nil, "listen: invalid address (256.1.1.1)" },
            { loom.listen{ host = "256.1.1.1", port = 0, handler = print } })
    end)

    it("in the stream methods", function()
        run(function()
            local srv <close> = serve(function(st) st:close() end)
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert.error_matches(function() c:read("x") end, "bad argument #1 to 'read' %(invalid format")
            assert.error_matches(function() c:read(-1) end, "bad argument #1 to 'read' %(count must be non%-negative%)")
            assert.error_matches(function() c:read({}) end, "bad argument #1 to 'read'")
            assert.error_matches(function() c:write() end, "bad argument #1 to 'write'")
            assert.error_matches(function() c:write({}) end,
                "bad argument #1 to 'write' %(string expected, got table%)")
            assert.error_matches(function() c:settimeout("x") end,
                "bad argument #1 to 'settimeout' %(number expected, got string%)")
            assert.error_matches(function() c.read(5) end,
                "bad argument #1 to 'read' %(loom.stream expected, got number%)")
        end)
    end)
end)
