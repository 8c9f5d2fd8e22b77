-- HTTPS serving: app:listen{tls = ...} with a throwaway CA made by openssl at test time
-- (spec/support/make_certs.sh), met by loom's own TLS client on 127.0.0.1: requests and
-- keep-alive, big bodies both ways, certificates chosen by SNI, handshakes that stall or
-- fail while others are served, and websockets over TLS (wss) in both directions.
-- spec/smoke/https.sh does the same checks with curl and openssl s_client.
local loom = require "loom"
local run = require "support.run"
local timing = require "support.timing"

local format = string.format

local CERTS = os.tmpname()
os.remove(CERTS)
assert(os.execute("bash spec/support/make_certs.sh " .. CERTS), "make_certs.sh failed")
local function cert(name) return CERTS .. "/" .. name end

local TLS = { { cert = cert("a.pem"), key = cert("a.key") }, { cert = cert("b.pem"), key = cert("b.key") } }

-- An HTTPS app: GET /hello, POST /len (answers the body's length), GET /big/{n} (n bytes),
-- and a websocket echo at /echo.
local function serve(limits, tls)
    local app = loom.app(limits or { max_body = 8 << 20 })
    app:get("/hello", function(req) return "hello " .. req.remote end)
    app:post("/len", function(req) return tostring(#assert(req:text())) end)
    app:get("/big/{n}", function(req) return string.rep("b", tonumber(req.params.n)) end)
    app:ws("/echo", function(ws)
        for msg, kind in ws:each() do ws:send(msg, kind) end
    end)
    return assert(app:listen{ host = "127.0.0.1", port = 0, tls = tls or TLS })
end

local function connect(srv, name, opts)
    local tls = { ca_file = cert("ca.pem"), server_name = name or "a.test" }
    for k, v in pairs(opts or {}) do tls[k] = v end
    return loom.connect("127.0.0.1", srv.port, { tls = tls, timeout = 5 })
end

-- Sends one request on st and reads the answer: status, body.
local function request(st, method, path, body)
    assert(st:write(format("%s %s HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n%s",
        method, path, body and #body or 0, body or "")))
    local status = tonumber(assert(st:read_line()):match("^HTTP/1%.1 (%d+)"))
    local len
    while true do
        local line = assert(st:read_line())
        if line == "" then break end
        len = len or tonumber(line:lower():match("^content%-length:%s*(%d+)"))
    end
    return status, len > 0 and assert(st:read(len)) or ""
end

describe("app:listen{tls = ...}", function()
    teardown(function() os.execute("rm -rf '" .. CERTS .. "'") end)

    it("serves requests over TLS, kept alive", function()
        run(function()
            local srv <close> = serve()
            local st <close> = assert(connect(srv))
            assert.same({ 200, "hello 127.0.0.1" }, { request(st, "GET", "/hello") })
            assert.same({ 200, "hello 127.0.0.1" }, { request(st, "GET", "/hello") })
            assert.same({ 404, "Not Found" }, { request(st, "GET", "/nope") })
        end)
    end)

    it("carries big bodies both ways", function()
        run(function()
            local srv <close> = serve()
            local st <close> = assert(connect(srv))
            local body = string.rep("u", 3 << 20)
            assert.same({ 200, tostring(#body) }, { request(st, "POST", "/len", body) })
            local status, got = request(st, "GET", "/big/" .. (5 << 20))
            assert.equal(200, status)
            assert.equal(5 << 20, #got)
        end, { timeout = 20 })
    end)

    it("answers pipelined requests in order", function()
        run(function()
            local srv <close> = serve()
            local st <close> = assert(connect(srv))
            assert(st:write(string.rep("GET /big/3 HTTP/1.1\r\nHost: a.test\r\n\r\n", 3)))
            for _ = 1, 3 do
                assert.equal("HTTP/1.1 200 OK", st:read_line())
                repeat local line = assert(st:read_line()) until line == ""
                assert.equal("bbb", st:read(3))
            end
        end)
    end)

    it("picks the certificate by SNI; an unknown name gets the first", function()
        run(function()
            local srv <close> = serve()
            -- the client verifies the chain and the name: only the right certificate passes
            local b <close> = assert(connect(srv, "b.test"))
            assert.same({ 200, "hello 127.0.0.1" }, { request(b, "GET", "/hello") })
            local w <close> = assert(connect(srv, "www.b.test")) -- *.b.test
            assert.same({ 200, "hello 127.0.0.1" }, { request(w, "GET", "/hello") })
            local a <close> = assert(connect(srv, "a.test"))
            assert.same({ 200, "hello 127.0.0.1" }, { request(a, "GET", "/hello") })
            -- c.test: the default (a.test) certificate, which the client then refuses
            local st, err = connect(srv, "c.test")
            assert.is_nil(st)
            assert.matches("^tls: certificate verify failed", err)
            -- without verification the default certificate serves the unknown name
            local c <close> = assert(connect(srv, "c.test", { verify = false }))
            assert.same({ 200, "hello 127.0.0.1" }, { request(c, "GET", "/hello") })
        end)
    end)

    it("drops a client that never handshakes, serving others meanwhile", function()
        run(function()
            -- 2 s: room for a handshake on a loaded machine before the stalled ones go
            local srv <close> = serve({ header_timeout = 2 })
            local t0 = loom.now()
            local silent <close> = assert(loom.connect("127.0.0.1", srv.port))
            local half <close> = assert(loom.connect("127.0.0.1", srv.port))
            -- the start of a TLS record (a handshake message) that never completes
            assert(half:write("\22\3\1\2\0\1"))
            local ok <close> = assert(connect(srv))
            assert.same({ 200, "hello 127.0.0.1" }, { request(ok, "GET", "/hello") })
            -- answered while the stalled ones are still held: it did not wait for them
            assert.equal(3, srv.connections, "the good client waited for the stalled ones")
            assert.same({ nil, "closed: end of stream" }, { silent:read() })
            assert.same({ nil, "closed: end of stream" }, { half:read() })
            timing.within(loom.now() - t0, 1.95, 2, "the stalled clients dropped")
            assert.equal(1, srv.connections) -- only the good client's
        end, { timeout = 20 })
    end)

    it("closes on a client that does not speak TLS, and goes on", function()
        run(function()
            local srv <close> = serve()
            local plain <close> = assert(loom.connect("127.0.0.1", srv.port))
            assert(plain:write("GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n"))
            local got = plain:read("a") -- maybe an alert, then the end: never an HTTP answer
            assert.is_nil((got or ""):find("HTTP/1.1", 1, true))
            local st <close> = assert(connect(srv))
            assert.same({ 200, "hello 127.0.0.1" }, { request(st, "GET", "/hello") })
        end)
    end)

    it("upgrades to websockets over TLS (wss)", function()
        run(function()
            local srv <close> = serve()
            local url = format("wss://localhost:%d/echo", srv.port)
            local ws <close> = assert(loom.websocket(url, { tls = { ca_file = cert("ca.pem") } }))
            assert(ws:send("over tls"))
            assert.same({ "over tls", "text" }, { ws:receive() })
            local big = string.rep("w", 1 << 20)
            assert(ws:send(big, "binary"))
            assert.is_true(ws:receive() == big)
            assert(ws:send({ "frag", "ments" }))
            assert.equal("fragments", ws:receive())
            assert.is_true(ws:close(4000, "tls bye"))
            assert.equal(4000, ws.close_code)
        end, { timeout = 20 })
    end)

    it("keeps the frames a client sent right behind its upgrade request", function()
        run(function()
            local core = require "loom.core"
            local srv <close> = serve()
            local st <close> = assert(connect(srv))
            -- the upgrade request and a first frame in one write, so in one TLS read
            assert(st:write(format("GET /echo HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n" ..
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                core.ws_key()), core.ws_frame(1, "eager", true, true)))
            assert.equal("HTTP/1.1 101 Switching Protocols", st:read_line())
            repeat local line = assert(st:read_line()) until line == ""
            local fin, _, op, _, payload = core.ws_read_frame(st, 1000)
            assert.same({ true, 1, "eager" }, { fin, op, payload })
        end)
    end)

    it("reports certificate problems as tls errors and raises on a bad option", function()
        run(function()
            local app = loom.app()
            local srv, err = app:listen{ host = "127.0.0.1", port = 0,
                tls = { cert = cert("missing.pem"), key = cert("a.key") } }
            assert.is_nil(srv)
            assert.matches("^tls: .*missing%.pem", err)
            srv, err = app:listen{ host = "127.0.0.1", port = 0, tls = { cert = cert("a.pem"), key = cert("b.key") } }
            assert.is_nil(srv)
            assert.matches("^tls: ", err)
            assert.error_matches(function() app:listen{ port = 0, tls = "a.pem" } end, "option 'tls'")
            assert.error_matches(function() app:listen{ port = 0, tls = { cert = cert("a.pem") } } end,
                "option 'tls'")
        end)
    end)
end)
