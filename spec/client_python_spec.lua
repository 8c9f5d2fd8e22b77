-- Client against a third-party server on 127.0.0.1: Python's http.server
-- (spec/fixtures/client_http_server.py), plus the process-level behaviours: proxies from
-- the environment and idle pooled connections that never keep the process alive.
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"

local port, pid, base

setup(function()
    port = util.free_port()
    pid = util.start_process("python3 spec/fixtures/client_http_server.py " .. port, port)
    base = "http://127.0.0.1:" .. port
    util.warm_default()
end)

teardown(function() util.stop_process(pid) end)

describe("against Python's http.server", function()
    it("gets bodies over one kept-alive connection", function()
        run(function()
            local s <close> = loom.session()
            for _ = 1, 5 do
                local res = assert(s:get(base .. "/hello"))
                assert.equal(200, res.status)
                assert.equal("hello from python", res:text())
                assert.equal("text/plain", res.headers["Content-Type"])
                assert.equal("1.1", res.version)
            end
            assert.equal(1, s:stats().opened)
            local res = assert(s:head(base .. "/hello"))
            assert.equal("17", res.headers["content-length"])
            assert.equal("", res:text())
            assert.equal(404, assert(s:get(base .. "/nope")).status)
            assert.is_false(assert(s:get(base .. "/nope")).ok)
        end)
    end)

    it("decodes gzip and deflate, reads chunked bodies", function()
        run(function()
            assert.equal("gzip from python", assert(loom.fetch(base .. "/gzip")):text())
            assert.equal("deflate from python", assert(loom.fetch(base .. "/deflate")):text())
            assert.equal("one two three", assert(loom.fetch(base .. "/chunked")):text())
            local pieces = {}
            for p in assert(loom.fetch(base .. "/chunked", { stream = true })):chunks() do pieces[#pieces + 1] = p end
            assert.equal("one two three", table.concat(pieces))
        end)
    end)

    it("follows redirects: 302 chains, 303 to GET, 307 keeping the POST", function()
        run(function()
            local res = assert(loom.fetch(base .. "/redirect/4"))
            assert.equal("done", res:text())
            assert.equal(base .. "/redirect/0", res.url)
            assert.same({ nil, "http: too many redirects" }, { loom.fetch(base .. "/redirect/4", { redirects = 3 }) })
            assert.equal("GET ", assert(loom.fetch(base .. "/see-other", { method = "POST", body = "b" })):text())
            assert.equal("POST b", assert(loom.fetch(base .. "/temporary", { method = "POST", body = "b" })):text())
        end)
    end)

    it("keeps its cookies in a session", function()
        run(function()
            local s <close> = loom.session()
            assert.equal("none", assert(s:get(base .. "/cookies")):text())
            assert(s:get(base .. "/set-cookie"))
            assert.equal("py=1; py2=2", assert(s:get(base .. "/cookies")):text())
        end)
    end)

    it("sends plain http through HTTP_PROXY, except NO_PROXY hosts", function()
        run(function()
            local log = {}
            local proxy <close>, purl = util.proxy(log)
            local s <close> = loom.session{ proxy = { http = purl .. "", no_proxy = "localhost" } }
            local res = assert(s:get(base .. "/hello"))
            assert.equal("proxied " .. base .. "/hello auth=none", res:text())
            assert.equal("hello from python", assert(s:get("http://localhost:" .. port .. "/hello")):text())
            local s2 <close> = loom.session{ proxy = purl:gsub("http://", "http://u:p@") }
            res = assert(s2:get(base .. "/hello"))
            assert.equal("proxied " .. base .. "/hello auth=Basic dTpw", res:text())
            assert.equal(2, #log)
        end)
    end)
end)

describe("a loom process", function()
    local function loom_run(env, code)
        local name = os.tmpname()
        local f = assert(io.open(name, "w"))
        f:write(code)
        f:close()
        local t0 = loom.now()
        local p = assert(io.popen(env .. " " .. os.getenv("LOOM") .. " " .. name .. " 2>&1"))
        local out = p:read("a")
        p:close()
        os.remove(name)
        return out, loom.now() - t0
    end

    it("honours HTTP_PROXY and NO_PROXY from the environment", function()
        local out = loom_run("HTTP_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1", ([[
            local res, err = loom.fetch("%s/hello")
            print(res and res:text() or err)
            res, err = loom.fetch("http://localhost:%d/hello")
            print(res and res:text() or err)
        ]]):format(base, port))
        assert.equal("hello from python\nconnect: connection refused (127.0.0.1:9)\n", out)
    end)

    it("exits while idle pooled connections are open", function()
        local out, secs = loom_run("", ([[
            local s = loom.session{ idle_timeout = 60 }
            print(assert(s:get("%s/hello")):text(), assert(loom.fetch("%s/hello")):text())
        ]]):format(base, base))
        assert.equal("hello from python\thello from python\n", out)
        -- a host that waited for its idle connections would take idle_timeout (60 s)
        assert.is_true(secs < 20, "took " .. secs .. "s")
    end)
end)
