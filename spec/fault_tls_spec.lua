-- TLS faults, both ends. Client side (loom.fetch, loom.connect, loom.websocket): a server
-- that accepts and never answers the ClientHello, or stalls mid-handshake, gives timeout:
-- after the connect timeout; one that answers garbage gives tls: at once; a record
-- corrupted or cut after the handshake is tls: (or closed:), never a short body passed off
-- as whole. Server side (app:listen{tls}): clients that stall after their ClientHello, send
-- garbage before or after the handshake, or corrupt a record mid-request are dropped (the
-- stalled ones after header_timeout) while others are served. After each, an HTTPS request
-- succeeds and support.run checks nothing was left running; run under ASan too.
-- spec/https_spec.lua has the simplest stalls (a silent client, half a record) and a
-- client that speaks plain HTTP; spec/client_tls_spec.lua certificate failures.
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"
local timing = require "support.timing"

local format = string.format

local CERTS = os.tmpname()
os.remove(CERTS)
assert(os.execute("bash spec/support/make_certs.sh " .. CERTS), "make_certs.sh failed")
local CA = CERTS .. "/ca.pem"
local TLS = { cert = CERTS .. "/a.pem", key = CERTS .. "/a.key" }
local CLIENT_TLS = { ca_file = CA }

local py_port, py_pid

setup(function()
    util.warm_default()
    py_port = util.free_port()
    py_pid = util.start_process(format("python3 spec/fixtures/fault_tls_server.py %d %s %s",
        py_port, TLS.cert, TLS.key), py_port)
end)

teardown(function()
    util.stop_process(py_pid)
    os.execute("rm -rf '" .. CERTS .. "'")
end)

-- loom's HTTPS app: GET /hello, GET /big (300000 bytes), POST /len, a websocket echo.
local function serve(opts)
    local app = loom.app(opts)
    app:get("/hello", function() return "hello" end)
    app:get("/big", function() return string.rep("b", 300000) end)
    app:post("/len", function(req) return tostring(#(req:text() or "")) end)
    app:ws("/ws", function(ws) for m, k in ws:each() do ws:send(m, k) end end)
    return assert(app:listen{ host = "127.0.0.1", port = 0, tls = TLS })
end

local function https(port, path) return format("https://127.0.0.1:%d%s", port, path or "/hello") end

-- The process still serves and fetches HTTPS.
local function still_serving(srv)
    local s <close> = loom.session{ tls = CLIENT_TLS }
    assert.equal("hello", assert(s:get(https(srv.port))):text())
end

-- A TCP relay on 127.0.0.1 in front of 127.0.0.1:`port`. For each piece read in a direction
-- ("up": client to server, "down": server to client), tamper[dir](piece, before, state)
-- gives what to pass on (before: bytes of that direction read so far; state: a table per
-- connection and direction): a string, and true to close both ends after it; false to pass
-- nothing more that way (the rest is read and dropped, the connection stays); nil to close
-- both ends now. At the end of the stream tamper[dir .. "_end"](state) may give the last
-- bytes to pass on. `log.closed` (an event) is set when the server side of a relayed
-- connection has ended.
local function relay(port, tamper)
    local log = { closed = loom.event() }
    local srv = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(down)
        local up = assert(loom.connect("127.0.0.1", port))
        local function pipe(from, to, dir)
            local fn, before, state, dead = tamper[dir], 0, {}, false
            while true do
                local d = from:read()
                if not d then
                    local last = tamper[dir .. "_end"]
                    if last then to:write(last(state)) end
                    break
                end
                if not dead then
                    local out, close_after = d, false
                    if fn then out, close_after = fn(d, before, state) end
                    before = before + #d
                    if out == nil then break end
                    if out == false then dead = true
                    elseif out ~= "" and not to:write(out) then break end
                    if close_after then break end
                end
            end
            if dir == "down" then log.closed:set() end
            from:close()
            to:close()
        end
        local back = loom.spawn(pipe, up, down, "down")
        pipe(down, up, "up")
        back:join()
    end })
    return srv, log
end

local function timed(fn, ...)
    local t0 = loom.now()
    local r = table.pack(fn(...))
    return loom.now() - t0, table.unpack(r, 1, r.n)
end

-- A timeout of `expected` seconds fired no sooner than `lo`; the upper bound is a guard
-- against a hang (support.timing), not a test of the machine's speed.
local function within(secs, lo, expected)
    timing.within(secs, lo, expected, "gave up")
end

describe("the TLS client", function()
    it("gets timeout: from a server that never answers the ClientHello, after the connect timeout", function()
        run(function()
            local got = loom.queue()
            local silent <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                local n = 0
                while true do
                    local d = st:read()
                    if not d then break end
                    n = n + #d
                end
                got:put(n) -- the client hung up
                st:close()
            end })
            local s <close> = loom.session{ tls = CLIENT_TLS }
            local u = https(silent.port)
            local secs, res, err = timed(s.get, s, u, { connect_timeout = 0.3 })
            assert.is_nil(res)
            assert.equal(format("timeout: TLS handshake with 127.0.0.1 (127.0.0.1:%d)", silent.port), err)
            within(secs, 0.29, 0.3)
            assert.is_true(got:get() > 0) -- a ClientHello came, then the close
            secs, res, err = timed(s.get, s, u, { timeout = 0.3 })
            assert.matches("^timeout: ", err)
            within(secs, 0.29, 0.3)
            assert.is_true(got:get() > 0)
            secs, res, err = timed(loom.connect, "127.0.0.1", silent.port, { timeout = 0.3, tls = CLIENT_TLS })
            assert.matches("^timeout: TLS handshake", err)
            within(secs, 0.29, 0.3)
            secs, res, err = timed(loom.websocket, format("wss://127.0.0.1:%d/ws", silent.port),
                { timeout = 0.3, tls = CLIENT_TLS })
            assert.matches("^timeout: TLS handshake", err)
            within(secs, 0.29, 0.3)
            assert.equal(0, s:stats().active)
        end)
    end)

    it("gets timeout: from a server that stalls mid-handshake", function()
        run(function()
            local srv <close> = serve()
            -- the server's first flight gets through in part, then nothing more
            local r <close> = relay(srv.port, { down = function(d, before)
                if before + #d <= 100 then return d end
                return before < 100 and d:sub(1, 100 - before) or false
            end })
            local secs, res, err = timed(loom.fetch, https(r.port), { connect_timeout = 0.3, tls = CLIENT_TLS })
            assert.is_nil(res)
            assert.matches("^timeout: TLS handshake with 127%.0%.0%.1 ", err)
            within(secs, 0.29, 0.3)
            still_serving(srv)
        end)
    end)

    for _, case in ipairs({
        { "an HTTP answer", "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" },
        { "a handshake record of garbage", "\22\3\3\0\5hello" },
        { "zero bytes", string.rep("\0", 100) },
        { "a fatal alert", "\21\3\3\0\2\2\40" },
        { "a record longer than TLS allows", "\22\3\3\255\255" .. string.rep("g", 2000) },
        { "random bytes", (string.rep("\x8f\x13\xd4\x77\xa0\x3c\xee\x51", 64)) },
    }) do
        it("gets tls: at once from a server that answers " .. case[1], function()
            run(function()
                local bad <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                    st:read()
                    st:write(case[2])
                    repeat until not st:read()
                    st:close()
                end })
                local secs, res, err = timed(loom.fetch, https(bad.port), { connect_timeout = 30, tls = CLIENT_TLS })
                assert.is_nil(res)
                assert.matches("^tls: ", err)
                -- at once: not at the connect timeout (30 s, far past the hang guard), which
                -- would be timeout: anyway
                assert.is_true(secs < timing.guard(0), "took " .. secs)
                local st
                st, err = loom.connect("127.0.0.1", bad.port, { timeout = 5, tls = CLIENT_TLS })
                assert.is_nil(st)
                assert.matches("^tls: ", err)
                local srv <close> = serve()
                still_serving(srv)
            end)
        end)
    end

    it("gets tls: for a record corrupted after the handshake, never the body", function()
        run(function()
            local srv <close> = serve()
            -- one byte flipped 150000 bytes into what the server sends: inside the body
            local r <close> = relay(srv.port, { down = function(d, before)
                local at = 150000 - before
                if at < 1 or at > #d then return d end
                return d:sub(1, at - 1) .. string.char(d:byte(at) ~ 0x5a) .. d:sub(at + 1)
            end })
            local s <close> = loom.session{ tls = CLIENT_TLS }
            local res, err = s:get(https(r.port, "/big"))
            assert.is_nil(res)
            assert.matches("^tls: read failed: .*%(https://127%.0%.0%.1:%d+%)$", err)
            -- streamed: the head may come first (then chunks() raises), or the failure
            res, err = s:get(https(r.port, "/big"), { stream = true })
            if res then
                local n = 0
                local ok, e = pcall(function() for piece in res:chunks() do n = n + #piece end end)
                assert.is_false(ok)
                assert.matches("tls: read failed: ", e)
                assert.is_true(n < 300000)
            else
                assert.matches("^tls: read failed: ", err)
            end
            assert.equal(0, s:stats().active)
            still_serving(srv)
        end)
    end)

    it("gets tls: or closed: for a connection cut mid-record in a Content-Length body", function()
        run(function()
            local srv <close> = serve()
            local r <close> = relay(srv.port, { down = function(d, before)
                if before + #d < 150000 then return d end
                return d:sub(1, 150000 - before), true
            end })
            local res, err = loom.fetch(https(r.port, "/big"), { tls = CLIENT_TLS })
            assert.is_nil(res)
            assert.matches("^%a+: ", err)
            assert.is_not_nil(err:match("^tls: ") or err:match("^closed: "), err)
            still_serving(srv)
        end)
    end)

    describe("a body that runs until the close (RFC 9112 9.8)", function()
        it("is whole when close_notify ends it", function()
            run(function()
                local res = assert(loom.fetch(https(py_port, "/notify"), { tls = CLIENT_TLS }))
                assert.equal(50000, #res:text())
            end)
        end)

        it("is taken as whole when the connection ends between records, as Go does", function()
            run(function()
                local res = assert(loom.fetch(https(py_port, "/bare"), { tls = CLIENT_TLS }))
                assert.equal(50000, #res:text())
            end)
        end)

        it("is tls: when the connection ends inside a record: a cut, not an end", function()
            run(function()
                -- everything the server sent but its last 100 bytes (inside the body's last
                -- record), then the close: past the handshake (10000 bytes in, well inside
                -- the body) the last 100 bytes read are held back, and dropped at the end
                local function hold_back(d, before, state)
                    if before + #d < 10000 then return d end
                    local all = (state.tail or "") .. d
                    state.tail = all:sub(-100)
                    return all:sub(1, -101)
                end
                local r <close> = relay(py_port, { down = hold_back, down_end = function() return "" end })
                local res, err = loom.fetch(https(r.port, "/bare"), { tls = CLIENT_TLS })
                assert.is_nil(res)
                assert.equal(format("tls: connection closed in the middle of a TLS record (https://127.0.0.1:%d)",
                    r.port), err)
                res = assert(loom.fetch(https(r.port, "/bare"), { tls = CLIENT_TLS, stream = true }))
                local ok, e = pcall(function() for _ in res:chunks() do end end)
                assert.is_false(ok)
                assert.matches("tls: connection closed in the middle of a TLS record", e)
                -- and a stream reads it as a TLS failure, not as the end
                local st = assert(loom.connect("127.0.0.1", r.port, { tls = CLIENT_TLS }))
                assert(st:write("GET /bare HTTP/1.1\r\nHost: a.test\r\n\r\n"))
                local all, serr = st:read("a")
                assert.is_nil(all)
                assert.matches("^tls: connection closed in the middle of a TLS record", serr)
                st:close()
            end)
        end)
    end)
end)

describe("the TLS server", function()
    it("drops clients stalled after their ClientHello at header_timeout, serving others meanwhile", function()
        run(function()
            local srv <close> = serve({ header_timeout = 2 })
            -- a real ClientHello goes up; the client's next flight never does
            local r <close>, log = relay(srv.port, { up = function(d, before)
                return before == 0 and d or false
            end })
            local t0 = loom.now()
            local stalled = {}
            for i = 1, 10 do
                stalled[i] = loom.spawn(loom.connect, "127.0.0.1", r.port, { timeout = 5, tls = CLIENT_TLS })
            end
            still_serving(srv) -- 2 s from accept to request head: room for a loaded machine
            -- served while the stalled ones are still held: no relayed connection has ended
            assert.is_false(log.closed:is_set(), "a good client waited for the stalled ones")
            for i = 1, 10 do
                local _, st, err = stalled[i]:join()
                assert.is_nil(st)
                assert.matches("^tls: ", err) -- the server hung up mid-handshake
            end
            log.closed:wait()
            within(loom.now() - t0, 1.95, 2)
            assert.equal(0, srv.connections)
            still_serving(srv)
        end, { timeout = 20 })
    end)

    for _, case in ipairs({
        { "random bytes", string.rep("\xde\xad\xbe\xef", 300) },
        { "a record longer than TLS allows", "\22\3\1\255\255" .. string.rep("g", 3000) },
        { "a ClientHello of garbage", "\22\3\1\0\60" .. string.rep("\1", 60) },
        { "an SSLv2 hello", "\128\46\1\0\2\0\21\0\0\0\16" .. string.rep("\7", 37) },
    }) do
        it("closes on a client that sends " .. case[1] .. " before header_timeout", function()
            run(function()
                local srv <close> = serve({ header_timeout = 5 })
                local st <close> = assert(loom.connect("127.0.0.1", srv.port))
                local t0 = loom.now()
                st:write(case[2])
                local got = st:read("a") or "" -- maybe an alert, then the end
                assert.is_nil(got:find("HTTP/1.1", 1, true))
                -- at once: well before header_timeout (5 s)
                assert.is_true(loom.now() - t0 < 3, "the server waited for its header_timeout")
                assert.equal(0, srv.connections)
                still_serving(srv)
            end)
        end)
    end

    it("closes on garbage right after a good ClientHello", function()
        run(function()
            local srv <close> = serve({ header_timeout = 5 })
            local r <close>, log = relay(srv.port, { up = function(d, before)
                return before == 0 and (d .. string.rep("\xba\xd0", 500)) or false
            end })
            local t0 = loom.now()
            local st, err = loom.connect("127.0.0.1", r.port, { timeout = 5, tls = CLIENT_TLS })
            assert.is_nil(st)
            assert.matches("^tls: ", err)
            log.closed:wait()
            -- at once: well before header_timeout (5 s)
            assert.is_true(loom.now() - t0 < 3, "the server waited for its header_timeout")
            still_serving(srv)
        end)
    end)

    it("closes on a record corrupted mid-request, and goes on serving", function()
        run(function()
            local srv <close> = serve({ max_body = 4 << 20 })
            -- one byte flipped 500000 bytes into what the client sends: inside the body
            local r <close>, log = relay(srv.port, { up = function(d, before)
                local at = 500000 - before
                if at < 1 or at > #d then return d end
                return d:sub(1, at - 1) .. string.char(d:byte(at) ~ 0x5a) .. d:sub(at + 1)
            end })
            local s <close> = loom.session{ tls = CLIENT_TLS }
            local res, err = s:post(https(r.port, "/len"), { body = string.rep("u", 2 << 20) })
            assert.is_nil(res)
            -- the server's alert (bad_record_mac), or the close that follows it
            assert.is_not_nil(err:match("^tls: ") or err:match("^closed: "), err)
            log.closed:wait()
            assert.equal(0, srv.connections)
            assert.equal(tostring(2 << 20), assert(s:post(https(srv.port, "/len"),
                { body = string.rep("u", 2 << 20) })):text())
        end)
    end)
end)
