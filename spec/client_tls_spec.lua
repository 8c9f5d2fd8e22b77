-- Client TLS against Python's http.server under ssl, with a throwaway CA and certificates
-- made by openssl at test time: verification on by default, ca_file, host names, IP
-- addresses, verify = false, client certificates, pool separation, CONNECT tunnels.
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"

local dir, port, pid, mtls_port, mtls_pid

setup(function()
    dir = util.tmpdir()
    assert(os.execute("bash spec/fixtures/client_certs.sh " .. dir))
    port, mtls_port = util.free_port(), util.free_port()
    local py = "python3 spec/fixtures/client_tls_server.py "
    pid = util.start_process(py .. port .. " " .. dir .. "/server.pem " .. dir .. "/server.key", port)
    mtls_pid = util.start_process(py .. mtls_port .. " " .. dir .. "/server.pem " .. dir .. "/server.key "
        .. dir .. "/ca.pem", mtls_port)
    util.warm_default()
end)

teardown(function()
    util.stop_process(pid)
    util.stop_process(mtls_pid)
    if dir then os.execute("rm -rf " .. dir) end
end)

describe("https", function()
    it("fails verification with tls: against an unknown CA, by default", function()
        run(function()
            local res, err = loom.fetch("https://localhost:" .. port .. "/")
            assert.is_nil(res)
            assert.matches("^tls: certificate verify failed: ", err)
        end)
    end)

    it("succeeds with ca_file, by name and by IP address", function()
        run(function()
            local s <close> = loom.session{ tls = { ca_file = dir .. "/ca.pem" } }
            local res = assert(s:get("https://localhost:" .. port .. "/"))
            assert.equal(200, res.status)
            assert.equal("hello tls", res:text())
            assert.equal("hello tls", assert(s:get("https://127.0.0.1:" .. port .. "/")):text())
            assert.equal("hello tls", assert(s:get("https://localhost:" .. port .. "/")):text())
            assert.equal(1, s:stats().reused)
        end)
    end)

    it("fails on a wrong host name, and server_name sets the one checked", function()
        run(function()
            local tls = { ca_file = dir .. "/ca.pem", server_name = "wrong.example" }
            local res, err = loom.fetch("https://127.0.0.1:" .. port .. "/", { tls = tls })
            assert.is_nil(res)
            assert.matches("^tls: certificate verify failed: .*CN", err)
            tls.server_name = "localhost"
            assert.equal("hello tls", assert(loom.fetch("https://127.0.0.1:" .. port .. "/", { tls = tls })):text())
        end)
    end)

    it("skips verification only with verify = false", function()
        run(function()
            local res = assert(loom.fetch("https://127.0.0.1:" .. port .. "/", { tls = { verify = false } }))
            assert.equal("hello tls", res:text())
        end)
    end)

    it("keeps connections with other TLS settings apart", function()
        run(function()
            local s <close> = loom.session()
            local u = "https://localhost:" .. port .. "/"
            assert(s:get(u, { tls = { ca_file = dir .. "/ca.pem" } }))
            assert(s:get(u, { tls = { verify = false } }))
            assert(s:get(u, { tls = { ca_file = dir .. "/ca.pem" } }))
            assert.equal(2, s:stats().opened)
            assert.equal(1, s:stats().reused)
        end)
    end)

    it("sends a client certificate when the server asks for one", function()
        run(function()
            local u = "https://localhost:" .. mtls_port .. "/whoami"
            local tls = { ca_file = dir .. "/ca.pem" }
            local res, err = loom.fetch(u, { tls = tls })
            assert.is_nil(res)
            assert.matches("^[a-z]+: ", err)
            tls.cert, tls.key = dir .. "/client.pem", dir .. "/client.key"
            assert.equal("loom-client", assert(loom.fetch(u, { tls = tls })):text())
        end)
    end)

    it("reports a missing ca_file as tls:", function()
        run(function()
            local res, err = loom.fetch("https://localhost:" .. port .. "/", { tls = { ca_file = dir .. "/nope.pem" } })
            assert.is_nil(res)
            assert.matches("^tls: ", err)
        end)
    end)

    it("goes through an HTTPS proxy's CONNECT tunnel", function()
        run(function()
            local log = {}
            local proxy <close>, purl = util.proxy(log)
            local s <close> = loom.session{ proxy = purl, tls = { ca_file = dir .. "/ca.pem" } }
            assert.equal("hello tls", assert(s:get("https://localhost:" .. port .. "/")):text())
            assert.equal("hello tls", assert(s:get("https://localhost:" .. port .. "/")):text())
            assert.equal(1, #log)
            assert.equal("CONNECT", log[1].method)
            assert.equal("localhost:" .. port, log[1].target)
            assert.is_nil(log[1].headers["proxy-authorization"])
            local s2 <close> = loom.session{ proxy = purl:gsub("http://", "http://u:p@"),
                tls = { ca_file = dir .. "/ca.pem" } }
            assert.equal("hello tls", assert(s2:get("https://localhost:" .. port .. "/")):text())
            assert.equal("Basic dTpw", log[2].headers["proxy-authorization"])
        end)
    end)
end)

describe("against loom's own HTTPS server", function()
    it("reads a large body whole and streamed, on one kept-alive connection", function()
        run(function()
            local big = string.rep("0123456789", 300000)
            local app = loom.app()
            app:get("/big", function() return { body = big } end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0,
                tls = { cert = dir .. "/server.pem", key = dir .. "/server.key" } })
            local s <close> = loom.session{ tls = { ca_file = dir .. "/ca.pem" } }
            local u = "https://localhost:" .. srv.port .. "/big"
            assert.is_true(assert(s:get(u)):text() == big)
            local parts = {}
            for p in assert(s:get(u, { stream = true })):chunks() do parts[#parts + 1] = p end
            assert.is_true(table.concat(parts) == big)
            assert.equal(1, s:stats().opened)
        end)
    end)
end)

describe("loom.connect with tls", function()
    it("gives a TLS stream", function()
        run(function()
            local st <close> = assert(loom.connect("localhost", port, { tls = { ca_file = dir .. "/ca.pem" } }))
            assert(st:write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            assert.equal("HTTP/1.1 200 OK", st:read_line())
            local _, err = loom.connect("localhost", port, { tls = {} })
            assert.matches("^tls: certificate verify failed", err)
        end)
    end)
end)
