-- The HTTP/2 client beyond a plain connection to the origin (lua/loom/client.lua, h2_conn):
-- https through an HTTP proxy's CONNECT tunnel (ALPN h2 inside it) to Node's http2 secure
-- server and to loom's own TLS listener; over a unix socket to loom's listener with TLS
-- (ALPN) and with h2c by prior knowledge; and a request waiting for another task's
-- connection to the same origin, bounded by its own connect_timeout, and taking over when
-- that other request is cancelled. Certificates are made
-- by openssl at test time (spec/support/make_certs.sh).
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

local dir, tls_port, h1_port, pids = nil, nil, nil, {}

setup(function()
    dir = util.tmpdir()
    assert(os.execute("bash " .. here .. "/support/make_certs.sh " .. dir .. " >/dev/null 2>&1"),
        "make_certs.sh failed")
    tls_port, h1_port = util.free_port(), util.free_port()
    local node = "node " .. here .. "/support/h2_node_server.js "
    local certs = " " .. dir .. "/a.pem " .. dir .. "/a.key"
    pids[1] = util.start_process(node .. tls_port .. " tls" .. certs, tls_port)
    pids[2] = util.start_process(node .. h1_port .. " tls1" .. certs, h1_port)
    util.warm_default()
end)

teardown(function()
    for _, pid in ipairs(pids) do util.stop_process(pid) end
    if dir then os.execute("rm -rf " .. dir) end
end)

local function ca() return { ca_file = dir .. "/ca.pem" } end
local function server_tls() return { cert = dir .. "/a.pem", key = dir .. "/a.key" } end

-- loom's own app: which HTTP version each request came over
local function app()
    local a = loom.app()
    a:get("/v", function(req) return "loom " .. req.version end)
    a:post("/echo", function(req) return assert(req:text()) end)
    return a
end

local function count(log, method)
    local n = 0
    for _, r in ipairs(log) do
        if r.method == method then n = n + 1 end
    end
    return n
end

describe("h2 through a proxy's CONNECT tunnel", function()
    it("speaks h2 to Node's http2 secure server, one tunnel for the session's requests, HTTP/1.1 where the origin picks it", function()
        run(function()
            local log = {}
            local proxy <close>, purl = util.proxy(log)
            local s <close> = loom.session{ proxy = purl, tls = ca() }
            local base = "https://localhost:" .. tls_port
            local res = assert(s:get(base .. "/hi"))
            assert.equal(200, res.status)
            assert.equal("2", res.version)
            assert.equal("2.0", res.headers["x-version"])
            assert.equal("hello 2.0", res:text())
            res = assert(s:post(base .. "/echo", { body = string.rep("p", 100000) }))
            assert.equal("2", res.version)
            assert.equal(100000, #res:text())
            -- concurrent requests share the tunnelled connection
            local ts = {}
            for i = 1, 8 do
                ts[i] = loom.spawn(function()
                    local r = assert(s:get(base .. "/hi"))
                    return r.version, r:text()
                end)
            end
            for i = 1, 8 do
                assert.same({ true, "2", "hello 2.0" }, { ts[i]:join() })
            end
            assert.equal(1, count(log, "CONNECT"))
            assert.equal("localhost:" .. tls_port, log[1].target)
            assert.equal(1, s:stats().opened)
            -- an origin that picks HTTP/1.1 by ALPN inside its tunnel gets HTTP/1.1 there
            for _ = 1, 2 do
                res = assert(s:get("https://localhost:" .. h1_port .. "/hi"))
                assert.equal("1.1", res.version)
                assert.equal("hello 1.1", res:text())
            end
            assert.equal(2, count(log, "CONNECT"))
        end, { timeout = 30 })
    end)

    it("speaks h2 to loom's own TLS listener through the tunnel; http:// stays HTTP/1.1", function()
        run(function()
            local log = {}
            local proxy <close>, purl = util.proxy(log)
            local srv <close> = assert(app():listen{ host = "127.0.0.1", port = 0, tls = server_tls() })
            local s <close> = loom.session{ proxy = purl, tls = ca() }
            local base = "https://127.0.0.1:" .. srv.port
            local res = assert(s:get(base .. "/v"))
            assert.equal("2", res.version)
            assert.equal("loom 2", res:text())
            res = assert(s:post(base .. "/echo", { body = string.rep("e", 300000) }))
            assert.equal("2", res.version)
            assert.equal(300000, #res:text())
            assert.equal(1, count(log, "CONNECT"))
            -- http:// through the proxy stays HTTP/1.1 absolute-form, prior knowledge or not
            local s2 <close> = loom.session{ proxy = purl, http2 = "prior_knowledge" }
            res = assert(s2:get("http://example.invalid/x"))
            assert.equal("1.1", res.version)
            assert.equal("proxied http://example.invalid/x auth=none", res:text())
            assert.equal("GET", log[#log].method)
        end, { timeout = 30 })
    end)
end)

describe("h2 over a unix socket", function()
    it("negotiates h2 by ALPN with loom's TLS listener on a unix socket", function()
        run(function()
            local path = dir .. "/tls.sock"
            local srv <close> = assert(app():listen{ path = path, tls = server_tls() })
            local s <close> = loom.session{ unix = path, tls = ca() }
            local res = assert(s:get("https://localhost/v"))
            assert.equal("2", res.version)
            assert.equal("loom 2", res:text())
            res = assert(s:post("https://localhost/echo", { body = string.rep("u", 200000) }))
            assert.equal("2", res.version)
            assert.equal(200000, #res:text())
            assert.equal(1, s:stats().opened)
            -- http2 = false still offers HTTP/1.1 only
            res = assert(loom.fetch("https://localhost/v", { unix = path, tls = ca(), http2 = false }))
            assert.equal("1.1", res.version)
            assert.equal("loom 1.1", res:text())
        end, { timeout = 30 })
    end)

    it("speaks h2c by prior knowledge to loom's listener with http2 = true on a unix socket", function()
        run(function()
            local path = dir .. "/h2c.sock"
            local srv <close> = assert(app():listen{ path = path, http2 = true })
            local res = assert(loom.fetch("http://localhost/v", { unix = path, http2 = "prior_knowledge" }))
            assert.equal("2", res.version)
            assert.equal("loom 2", res:text())
            -- without prior knowledge, http:// stays HTTP/1.1
            res = assert(loom.fetch("http://localhost/v", { unix = path }))
            assert.equal("1.1", res.version)
            assert.equal("loom 1.1", res:text())
        end, { timeout = 30 })
    end)
end)

describe("a request waiting for another's h2 connection", function()
    it("is bounded by its own connect_timeout and timeout", function()
        run(function()
            -- accepts TCP, never answers the TLS handshake
            local held = {}
            local ln <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                held[#held + 1] = st
                repeat until not st:read() -- the ClientHello, then the client's close
                st:close()
            end })
            local s <close> = loom.session{ tls = ca() }
            local u = "https://127.0.0.1:" .. ln.port .. "/"
            local t0 = loom.now()
            local function timed(opts)
                return loom.spawn(function()
                    local res, err = s:get(u, opts)
                    return res, err, loom.now() - t0
                end)
            end
            local first = timed({ connect_timeout = 3 }) -- makes the connection
            local second = timed({ connect_timeout = 0.3 }) -- waits for it
            local third = timed({ timeout = 0.4 }) -- waits too, bounded by the total timeout
            local ok, res, err, took = second:join()
            assert.is_true(ok)
            assert.is_nil(res)
            assert.matches("^timeout: ", err)
            assert.is_true(took >= 0.29, "took " .. took)
            assert.is_false(first:done(), "the waiter returned only after the connecting request")
            ok, res, err, took = third:join()
            assert.is_true(ok)
            assert.is_nil(res)
            assert.matches("^timeout: ", err)
            assert.is_true(took >= 0.39, "took " .. took)
            assert.is_false(first:done(), "the waiter returned only after the connecting request")
            ok, res, err, took = first:join()
            assert.is_true(ok)
            assert.is_nil(res)
            assert.matches("^timeout: ", err)
            assert.is_true(took >= 2.9, "took " .. took)
            for _, st in ipairs(held) do st:close() end
        end, { timeout = 30 })
    end)

    it("takes over when the connecting request is cancelled", function()
        run(function()
            local held, accepted = {}, { loom.event(), loom.event() }
            local ln <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                held[#held + 1] = st
                if accepted[#held] then accepted[#held]:set() end
                repeat until not st:read()
                st:close()
            end })
            local s <close> = loom.session{ tls = ca() }
            local u = "https://127.0.0.1:" .. ln.port .. "/"
            local t0 = loom.now()
            local first = loom.spawn(function() return s:get(u, { connect_timeout = 20 }) end)
            local second = loom.spawn(function()
                local res, err = s:get(u, { connect_timeout = 1 })
                return res, err, loom.now() - t0
            end)
            -- both ran before the accept: first connects, second waits for it
            accepted[1]:wait()
            first:cancel()
            assert.same({ false, "cancelled" }, { first:join() })
            accepted[2]:wait() -- second dials on its own, within what is left of its 1 s
            local ok, res, err, took = second:join()
            assert.is_true(ok)
            assert.is_nil(res)
            assert.matches("^timeout: ", err)
            assert.is_true(took >= 0.99, "took " .. took)
            for _, st in ipairs(held) do st:close() end
        end, { timeout = 10 })
    end)
end)
