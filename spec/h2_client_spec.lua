-- The HTTP/2 client (src/http2/h2_client.c, lua/loom/client.lua "http2") against real
-- peers: Node's http2 module over TLS (ALPN h2) and by prior knowledge (h2c), a Node
-- https server that speaks HTTP/1.1 only (the ALPN fallback), and nginx with
-- `listen ... ssl http2` in its own prefix directory. Certificates are made by
-- openssl at test time (spec/support/make_certs.sh).
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"

-- the peers next to this file (so the spec runs from any checkout's directory)
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

local dir, tls_port, h2c_port, h1_port, h2c2_port, pids = nil, nil, nil, nil, nil, {}

setup(function()
    dir = util.tmpdir()
    assert(os.execute("bash " .. here .. "/support/make_certs.sh " .. dir))
    tls_port, h2c_port, h1_port = util.free_port(), util.free_port(), util.free_port()
    local node = "node " .. here .. "/support/h2_node_server.js "
    local certs = " " .. dir .. "/a.pem " .. dir .. "/a.key"
    pids[1] = util.start_process(node .. tls_port .. " tls" .. certs, tls_port)
    pids[2] = util.start_process(node .. h2c_port .. " h2c", h2c_port)
    pids[3] = util.start_process(node .. h1_port .. " tls1" .. certs, h1_port)
    h2c2_port = util.free_port()
    pids[4] = util.start_process(node .. h2c2_port .. " h2c2", h2c2_port)
    util.warm_default()
end)

teardown(function()
    for _, pid in ipairs(pids) do util.stop_process(pid) end
    if dir then os.execute("rm -rf " .. dir) end
end)

local function tls() return { ca_file = dir .. "/ca.pem" } end

describe("fetch over HTTP/2", function()
    it("negotiates h2 through ALPN: GET, res.version is \"2\"", function()
        run(function()
            local res = assert(loom.fetch("https://localhost:" .. tls_port .. "/hi", { http2 = true, tls = tls() }))
            assert.are.equal(200, res.status)
            assert.are.equal("2", res.version)
            assert.are.equal("2.0", res.headers["x-version"])
            assert.are.equal("hello 2.0", res:text())
        end)
    end)

    it("POSTs a string body and a streamed body", function()
        run(function()
            local base = "https://localhost:" .. tls_port
            local res = assert(loom.fetch(base .. "/echo", { http2 = true, tls = tls(), method = "POST",
                body = string.rep("p", 100000) }))
            assert.are.equal("POST", res.headers["x-method"])
            assert.are.equal(100000, #res:text())
            local i = 0
            res = assert(loom.fetch(base .. "/echo", { http2 = true, tls = tls(), method = "PUT",
                body = function() i = i + 1; if i <= 50 then return string.rep("z", 4096) end end }))
            assert.are.equal("PUT", res.headers["x-method"])
            assert.are.equal(50 * 4096, #res:text())
        end)
    end)

    it("shares one connection between concurrent fetches of a session", function()
        run(function()
            local reused = 0
            local s = loom.session{ http2 = true, tls = tls(),
                trace = { on_reuse = function() reused = reused + 1 end } }
            local base = "https://localhost:" .. tls_port
            local before = tonumber(assert(loom.fetch(base .. "/sessions", { http2 = true, tls = tls() })):text())
            local ts = {}
            for i = 1, 40 do
                ts[i] = loom.spawn(function()
                    local res = assert(s:get(base .. "/slow"))
                    return res.version, res:text()
                end)
            end
            for i = 1, 40 do
                local ok, v, body = ts[i]:join()
                assert.is_true(ok)
                assert.are.equal("2", v)
                assert.are.equal("slow 2.0", body)
            end
            local after = assert(s:get(base .. "/sessions")):text()
            assert.are.equal(40, reused) -- on_reuse: all but the request that connected
            assert.are.equal(before + 1, tonumber(after)) -- the 40 and this one: one session
        end)
    end)

    it("follows redirects and keeps cookies on h2", function()
        run(function()
            local s = loom.session{ http2 = "prior_knowledge" }
            local res = assert(s:get("http://127.0.0.1:" .. h2c_port .. "/redir"))
            assert.are.equal("2", res.version)
            assert.are.equal("cookie k=v1", res:text())
        end)
    end)

    it("decodes gzip bodies, whole and streamed, with max_body on the decoded size", function()
        run(function()
            local base = "http://127.0.0.1:" .. h2c_port
            local res = assert(loom.fetch(base .. "/gzip?n=100000", { http2 = "prior_knowledge" }))
            assert.matches("gzip", res.headers["x-accept-encoding"])
            assert.are.equal(string.rep("z", 100000), res:text())
            res = assert(loom.fetch(base .. "/gzip?n=300000", { http2 = "prior_knowledge", stream = true }))
            local n = 0
            for piece in res:chunks() do n = n + #piece end
            assert.are.equal(300000, n)
            local _, err = loom.fetch(base .. "/gzip?n=100000", { http2 = "prior_knowledge", max_body = 50000 })
            assert.matches("^limit: response body over 50000 bytes", err)
            res = assert(loom.fetch(base .. "/gzip?n=1000", { http2 = "prior_knowledge", decode = false }))
            assert.are.equal("none", res.headers["x-accept-encoding"])
            assert.are_not.equal(string.rep("z", 1000), res:text())
        end)
    end)

    it("falls back to HTTP/1.1 when the server does not offer h2", function()
        run(function()
            local res = assert(loom.fetch("https://localhost:" .. h1_port .. "/hi", { http2 = true, tls = tls() }))
            assert.are.equal("1.1", res.version)
            assert.are.equal("hello 1.1", res:text())
            -- concurrent first requests of a session: one learns the server's choice, the
            -- others go HTTP/1.1 on connections of their own
            local s = loom.session{ http2 = true, tls = tls() }
            local ts = {}
            for i = 1, 8 do
                ts[i] = loom.spawn(function()
                    local r = assert(s:get("https://localhost:" .. h1_port .. "/slow"))
                    return r.version, r:text()
                end)
            end
            for i = 1, 8 do
                local ok, v, body = ts[i]:join()
                assert.is_true(ok)
                assert.are.equal("1.1", v)
                assert.are.equal("slow 1.1", body)
            end
        end)
    end)

    it("speaks h2c by prior knowledge on http://", function()
        run(function()
            local res = assert(loom.fetch("http://127.0.0.1:" .. h2c_port .. "/hi", { http2 = "prior_knowledge" }))
            assert.are.equal("2", res.version)
            assert.are.equal("hello 2.0", res:text())
        end)
    end)

    it("streams a large body with res:chunks under flow control", function()
        run(function()
            local n = 8 * 1024 * 1024
            local res = assert(loom.fetch("http://127.0.0.1:" .. h2c_port .. "/big?n=" .. n,
                { http2 = "prior_knowledge", stream = true }))
            local got, pieces = 0, 0
            for piece in res:chunks() do
                got = got + #piece
                pieces = pieces + 1
                if pieces % 16 == 0 then loom.sleep(0) end
            end
            assert.are.equal(n, got)
        end)
    end)

    it("retries on a new connection after the server's GOAWAY", function()
        run(function()
            local s = loom.session{ http2 = "prior_knowledge" }
            local base = "http://127.0.0.1:" .. h2c_port
            local res = assert(s:get(base .. "/goaway"))
            assert.are.equal("bye", res:text())
            for _ = 1, 3 do
                res = assert(s:get(base .. "/hi"))
                assert.are.equal("2", res.version)
                assert.are.equal("hello 2.0", res:text())
            end
        end)
    end)

    it("retries the streams a GOAWAY refused on a new connection", function()
        run(function()
            local s = loom.session{ http2 = "prior_knowledge" }
            local base = "http://127.0.0.1:" .. h2c_port
            local before = tonumber(assert(s:get(base .. "/sessions")):text())
            assert.are.equal("armed", assert(s:get(base .. "/arm")):text())
            local ts = {}
            for i = 1, 10 do
                ts[i] = loom.spawn(function()
                    local res, err = s:get(base .. "/slow")
                    if not res then return err end
                    return res.version, res:text()
                end)
            end
            for i = 1, 10 do
                local ok, v, body = ts[i]:join()
                assert.is_true(ok)
                assert.are.equal("2", v)
                assert.are.equal("slow 2.0", body)
            end
            -- the first connection took one /slow and refused nine; a second one took them
            assert.are.equal(before + 1, tonumber(assert(s:get(base .. "/sessions")):text()))
        end)
    end)

    it("opens a second connection past the server's SETTINGS_MAX_CONCURRENT_STREAMS", function()
        run(function()
            local s = loom.session{ http2 = "prior_knowledge" }
            local base = "http://127.0.0.1:" .. h2c2_port
            local before = tonumber(assert(s:get(base .. "/sessions")):text()) -- its SETTINGS are in
            local ts = {}
            for i = 1, 6 do
                ts[i] = loom.spawn(function()
                    local res = assert(s:get(base .. "/slow"))
                    return res:text()
                end)
            end
            for i = 1, 6 do
                local ok, body = ts[i]:join()
                assert.is_true(ok)
                assert.are.equal("slow 2.0", body)
            end
            local after = tonumber(assert(s:get(base .. "/sessions")):text())
            assert.are.equal(before + 2, after) -- 6 requests, 2 streams each: 3 connections
        end)
    end)

    it("rejects a bad http2 option naming it", function()
        assert.has_error(function() loom.fetch("http://127.0.0.1:1/", { http2 = "yes" }) end)
        local ok, err = pcall(loom.fetch, "http://127.0.0.1:1/", { http2 = "yes" })
        assert.is_false(ok)
        assert.matches("http2", err)
    end)
end)

-- nginx with HTTP/2 on TLS, daemonized in its own prefix directory, stopped by its PID.
local NGINX_CONF = [[
worker_processes 1;
daemon on;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path tmp;
    server {
        listen 127.0.0.1:%d ssl http2;
        ssl_certificate %s/a.pem;
        ssl_certificate_key %s/a.key;
        location = /hello { default_type text/plain; return 200 "nginx $server_protocol $request_method"; }
        location = /conn { default_type text/plain; return 200 "$connection"; }
    }
}
]]

describe("fetch over HTTP/2 from nginx", function()
    local ng, port
    setup(function()
        ng = util.tmpdir()
        port = util.free_port()
        assert(os.execute("mkdir -p " .. ng .. "/logs " .. ng .. "/tmp"))
        local f = assert(io.open(ng .. "/nginx.conf", "w"))
        f:write(NGINX_CONF:format(port, dir, dir))
        f:close()
        local p = io.popen("nginx -p " .. ng .. " -c nginx.conf 2>&1")
        local out = p:read("a")
        p:close()
        assert(os.execute("test -s " .. ng .. "/logs/nginx.pid"),
            "nginx did not start (is nginx installed? scripts/deps.sh): " .. out)
    end)
    teardown(function()
        if not ng then return end
        os.execute("kill $(cat " .. ng .. "/logs/nginx.pid) 2>/dev/null")
        os.execute("rm -rf '" .. ng .. "'")
    end)

    it("speaks h2 to https by default; http2 = false forces HTTP/1.1", function()
        run(function()
            local url = "https://localhost:" .. port .. "/hello"
            local res = assert(loom.fetch(url, { tls = { ca_file = dir .. "/ca.pem" } }))
            assert.are.equal("2", res.version)
            assert.are.equal("nginx HTTP/2.0 GET", res:text())
            res = assert(loom.fetch(url, { http2 = false, tls = { ca_file = dir .. "/ca.pem" } }))
            assert.are.equal("1.1", res.version)
            assert.are.equal("nginx HTTP/1.1 GET", res:text())
            res = assert(loom.session{ http2 = false, tls = { ca_file = dir .. "/ca.pem" } }:get(url))
            assert.are.equal("1.1", res.version)
        end)
    end)

    it("GETs and HEADs over h2, many concurrent fetches on one nginx connection", function()
        run(function()
            local s = loom.session{ http2 = true, tls = { ca_file = dir .. "/ca.pem" } }
            local base = "https://localhost:" .. port
            local res = assert(s:get(base .. "/hello"))
            assert.are.equal("2", res.version)
            assert.are.equal("nginx HTTP/2.0 GET", res:text())
            res = assert(s:head(base .. "/hello"))
            assert.are.equal(200, res.status)
            assert.are.equal("", res:text())
            local ts = {}
            for i = 1, 50 do
                ts[i] = loom.spawn(function() return assert(s:get(base .. "/conn")):text() end)
            end
            local seen = {}
            for i = 1, 50 do
                local ok, c = ts[i]:join()
                assert.is_true(ok)
                seen[c] = true
            end
            local n = 0
            for _ in pairs(seen) do n = n + 1 end
            assert.are.equal(1, n) -- nginx's $connection: one serial number for all 50
        end)
    end)
end)
