-- Client against loom's own server and raw TCP servers on 127.0.0.1: requests and bodies,
-- responses, keep-alive and the pool, stale connections, redirects, cookies, decoding,
-- limits, streaming, errors and misuse.
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"
local timing = require "support.timing"

local function popen_read(cmd)
    local p = assert(io.popen(cmd))
    local s = p:read("a")
    p:close()
    return s
end

-- An app with the endpoints most specs use; returns srv, base URL.
local function echo_app()
    local app = loom.app()
    app:any("/echo", function(req)
        return { json = { method = req.method, path = req.path, query = req.query,
            headers = req.headers, body = req:text() } }
    end)
    app:get("/hello", function() return "hello" end)
    app:get("/cookies", function()
        return { headers = { ["set-cookie"] = { "a=1; Path=/", "b=2; Path=/" } }, body = "x" }
    end)
    app:get("/empty", function() return { status = 204 } end)
    app:get("/big", function() return { body = string.rep("x", 1024 * 1024) } end)
    local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
    return srv, "http://127.0.0.1:" .. srv.port
end

setup(function() util.warm_default() end)

describe("loom.fetch", function()
    it("gets a body, with status, reason, ok, version, url and headers", function()
        run(function()
            local srv <close>, base = echo_app()
            local res, err = loom.fetch(base .. "/hello")
            assert.is_nil(err)
            assert.equal(200, res.status)
            assert.equal("OK", res.reason)
            assert.is_true(res.ok)
            assert.equal("1.1", res.version)
            assert.equal(base .. "/hello", res.url)
            assert.equal("hello", res:text())
            assert.equal("5", res.headers["content-length"])
            assert.equal("5", res.headers["Content-Length"])
            assert.equal("text/plain; charset=utf-8", res.headers["CONTENT-TYPE"])
        end)
    end)

    it("joins repeated headers and keeps each in raw_headers", function()
        run(function()
            local srv <close>, base = echo_app()
            local res = assert(loom.fetch(base .. "/cookies"))
            assert.equal("a=1; Path=/, b=2; Path=/", res.headers["set-cookie"])
            local seen = {}
            for _, h in ipairs(res.raw_headers) do
                if h[1] == "set-cookie" then seen[#seen + 1] = h[2] end
            end
            assert.same({ "a=1; Path=/", "b=2; Path=/" }, seen)
        end)
    end)

    it("sends methods, headers, query tables, json, form and string bodies", function()
        run(function()
            local srv <close>, base = echo_app()
            local r = assert(loom.fetch(base .. "/echo?x=1", { method = "put",
                headers = { ["X-One"] = "1" }, query = { y = "a b", z = { "1", "2" } } })):json()
            assert.equal("PUT", r.method)
            assert.equal("1", r.headers["x-one"])
            assert.same({ x = "1", y = "a b", z = "2" }, r.query)
            r = assert(loom.fetch(base .. "/echo", { method = "POST", json = { k = { 1, 2 } } })):json()
            assert.equal("application/json", r.headers["content-type"])
            assert.same({ k = { 1, 2 } }, loom.json.decode(r.body))
            r = assert(loom.fetch(base .. "/echo", { method = "POST", form = { a = "1 2", b = "&" } })):json()
            assert.equal("application/x-www-form-urlencoded", r.headers["content-type"])
            assert.equal("a=1%202&b=%26", r.body)
            r = assert(loom.fetch(base .. "/echo", { method = "POST", body = "plain" })):json()
            assert.equal("text/plain; charset=utf-8", r.headers["content-type"])
            assert.equal("plain", r.body)
            assert.equal("5", r.headers["content-length"])
        end)
    end)

    it("streams a request body from a function, chunked", function()
        run(function()
            local srv <close>, base = echo_app()
            local parts = { "one,", "two,", "three" }
            local i = 0
            local r = assert(loom.fetch(base .. "/echo", { method = "POST", body = function()
                i = i + 1
                return parts[i]
            end })):json()
            assert.equal("chunked", r.headers["transfer-encoding"])
            assert.equal("one,two,three", r.body)
        end)
    end)

    it("takes an early answer to an upload, and does not reuse its connection", function()
        run(function()
            local app = loom.app{ max_body = 1000 }
            app:post("/up", function(req) return "got " .. #assert(req:text()) end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local s <close> = loom.session()
            local n = 0
            local res = assert(s:post("http://127.0.0.1:" .. srv.port .. "/up", { body = function()
                n = n + 1
                if n <= 20 then return string.rep("x", 100000) end
            end }))
            assert.equal(413, res.status)
            assert.equal("got 5", assert(s:post("http://127.0.0.1:" .. srv.port .. "/up", { body = "small" })):text())
            assert.equal(2, s:stats().opened)
        end)
    end)

    it("sends user:password from the URL as Basic auth", function()
        run(function()
            local srv <close>, base = echo_app()
            local u = base:gsub("^http://", "http://al%%40ice:s%%3Acret@")
            local r = assert(loom.fetch(u .. "/echo")):json()
            assert.equal("Basic " .. require("loom.dial").base64("al@ice:s:cret"), r.headers.authorization)
        end)
    end)

    it("answers HEAD and 204 without a body", function()
        run(function()
            local srv <close>, base = echo_app()
            local s <close> = loom.session()
            local res = assert(s:head(base .. "/hello"))
            assert.equal(200, res.status)
            assert.equal("5", res.headers["content-length"])
            assert.equal("", res:text())
            res = assert(s:get(base .. "/empty"))
            assert.equal(204, res.status)
            assert.equal("", res:text())
            assert.equal("hello", assert(s:get(base .. "/hello")):text())
            assert.equal(1, s:stats().opened)
        end)
    end)
end)

describe("response framing", function()
    it("reads chunked, read-until-close and 304 bodies, and skips 1xx", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st, req)
                if req.target == "/chunked" then
                    st:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                elseif req.target == "/until-close" then
                    st:write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
                    return "close"
                elseif req.target == "/304" then
                    st:write("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
                elseif req.target == "/1xx" then
                    st:write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
                    util.respond(st, 200, "final")
                end
            end)
            local s <close> = loom.session()
            assert.equal("hello world", assert(s:get(base .. "/chunked")):text())
            assert.equal("all of it", assert(s:get(base .. "/until-close")):text())
            local res = assert(s:get(base .. "/304"))
            assert.equal(304, res.status)
            assert.equal("", res:text())
            res = assert(s:get(base .. "/1xx"))
            assert.equal(200, res.status)
            assert.equal("final", res:text())
            assert.is_nil(res.headers.link)
        end)
    end)

    it("fails with limit: on a response head over 64 KiB", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st)
                st:write("HTTP/1.1 200 OK\r\nX-Big: " .. string.rep("x", 70000) .. "\r\nContent-Length: 0\r\n\r\n")
                return "close"
            end)
            local res, err = loom.fetch(base .. "/")
            assert.is_nil(res)
            assert.equal("limit: response head over 65536 bytes", err)
        end)
    end)

    it("fails with http: on a malformed response", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st)
                st:write("HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n")
                return "close"
            end)
            local res, err = loom.fetch(base .. "/")
            assert.is_nil(res)
            assert.matches("^http: ", err)
        end)
    end)
end)

describe("the pool", function()
    it("reuses kept-alive connections", function()
        run(function()
            local srv <close>, base = echo_app()
            local s <close> = loom.session()
            for _ = 1, 20 do assert.equal("hello", assert(s:get(base .. "/hello")):text()) end
            local st = s:stats()
            assert.equal(1, st.opened)
            assert.equal(19, st.reused)
        end)
    end)

    it("caps connections at max_per_host; the rest wait their turn, in order", function()
        run(function()
            local open, most, order = 0, 0, {}
            local app = loom.app()
            app:get("/slow/{n}", function(req)
                order[#order + 1] = tonumber(req.params.n)
                loom.sleep(0.02)
                return "ok"
            end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local base = "http://127.0.0.1:" .. srv.port
            local s <close> = loom.session{ max_per_host = 2 }
            local fns = {}
            for i = 1, 8 do
                fns[i] = function()
                    open = open + 1
                    most = math.max(most, s:stats().active)
                    local res = assert(s:get(base .. "/slow/" .. i))
                    open = open - 1
                    return res:text()
                end
            end
            local r = loom.gather(table.unpack(fns))
            for i = 1, 8 do assert.equal("ok", r[i]) end
            assert.equal(2, s:stats().opened)
            assert.is_true(most <= 2)
            -- the waiting ones went in the order they asked
            for i = 3, 8 do assert.equal(i, order[i]) end
        end)
    end)

    it("closes idle connections after idle_timeout, or the server's Keep-Alive timeout", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st, req)
                util.respond(st, 200, "k", req.target == "/ka" and { ["Keep-Alive"] = "timeout=1" } or nil)
            end)
            -- the pool's timer starts as the connection is released, a moment before get
            -- returns: the lower bounds allow 50 ms for that; the upper ones are hang guards
            local s <close> = loom.session{ idle_timeout = 0.2 }
            assert(s:get(base .. "/"))
            assert.equal(1, s:stats().idle)
            timing.within(timing.poll(function() return s:stats().idle == 0 end, 0.2,
                "idle_timeout"), 0.15, 0.2, "closed by idle_timeout")
            local s2 <close> = loom.session{ idle_timeout = 30 }
            assert(s2:get(base .. "/ka"))
            assert.equal(1, s2:stats().idle)
            -- Keep-Alive: timeout=1 gives the connection half a second, far below 30 s
            timing.within(timing.poll(function() return s2:stats().idle == 0 end, 0.5,
                "Keep-Alive"), 0.45, 0.5, "closed by Keep-Alive: timeout=1")
        end, { timeout = 30 })
    end)

    it("keeps separate connections per host name", function()
        run(function()
            local srv <close>, base = echo_app()
            local s <close> = loom.session()
            assert(s:get(base .. "/hello"))
            assert(s:get((base:gsub("127.0.0.1", "localhost")) .. "/hello"))
            assert.equal(2, s:stats().opened)
        end)
    end)

    it("gets 1000 sequential fetches through a server that closes each kept-alive connection", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st)
                util.respond(st, 200, "one")
                return "close" -- no Connection: close, as a stale keep-alive looks
            end)
            local s <close> = loom.session()
            for i = 1, 1000 do
                local res, err = s:get(base .. "/")
                assert(res, "fetch " .. i .. ": " .. tostring(err))
                assert.equal("one", res:text())
            end
        end, { timeout = 30 })
    end)

    it("retries an idempotent request once on a stale connection, never a POST", function()
        run(function()
            local posts = 0
            local srv <close>, base = util.raw_server(function(st, req, n)
                if req.method == "POST" then posts = posts + 1 end
                if n == 2 then return "close" end -- the second request on a connection: hang up
                util.respond(st, 200, req.method .. (req.body or ""))
            end)
            local s <close> = loom.session()
            assert.equal("GET", assert(s:get(base .. "/")):text())
            local res = assert(s:put(base .. "/", { body = "x" }))  -- stale, retried
            assert.equal("PUTx", res:text())
            assert.equal(3, s:stats().opened + s:stats().reused)
            local res2, err = s:post(base .. "/", { body = "y" }) -- stale, not replayed
            assert.is_nil(res2)
            assert.matches("^closed: ", err)
            assert.equal(1, posts)
        end)
    end)

    it("sends the retry on a new connection even when it waits for a slot", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st, req, n)
                if n == 2 then return "close" end -- every connection's second request: hang up
                util.respond(st, 200, req.target)
            end)
            local s <close> = loom.session{ max_per_host = 1 }
            assert.equal("/first", assert(s:get(base .. "/first")):text())
            -- /b takes the idle connection and is hung up on; /a, waiting for the one slot,
            -- gets it and makes a new connection; /b's retry waits behind it and must not be
            -- handed that connection once /a is done with it (it is no longer new)
            local r = loom.gather(
                function() return assert(s:get(base .. "/b")):text() end,
                function() return assert(s:get(base .. "/a")):text() end)
            assert.same({ "/b", "/a" }, r)
            assert.equal(3, s:stats().opened)
        end)
    end)

    it("releases an unread body: drained if small, closed if large", function()
        run(function()
            local srv <close>, base = echo_app()
            local s <close> = loom.session()
            do
                local res <close> = assert(s:get(base .. "/hello", { stream = true }))
                assert.equal(200, res.status)
            end
            -- the rest of the small body is drained in the background, then pooled
            timing.poll(function() return s:stats().idle == 1 end, 0, "drained into the pool")
            assert.equal(0, s:stats().active)
            local res = assert(s:get(base .. "/big", { stream = true }))
            assert.equal(1, s:stats().reused)
            res:close()
            assert.equal(0, s:stats().idle)
            assert.equal(0, s:stats().active)
            -- collection releases too
            res = assert(s:get(base .. "/hello", { stream = true }))
            res = nil
            collectgarbage()
            collectgarbage()
            timing.poll(function() return s:stats().active == 0 end, 0, "released by collection")
            assert.equal("hello", assert(s:get(base .. "/hello")):text())
        end)
    end)
end)

describe("redirects", function()
    local function redirect_app()
        local app = loom.app()
        for _, code in ipairs({ 301, 302, 303, 307, 308 }) do
            app:any("/r" .. code, function() return { status = code, headers = { location = "/echo" } } end)
        end
        app:any("/echo", function(req)
            return { json = { method = req.method, body = req:text(), auth = req.headers.authorization or false,
                cookie = req.headers.cookie or false, proxy_auth = req.headers["proxy-authorization"] or false } }
        end)
        app:get("/loop/a", function() return { status = 302, headers = { location = "/loop/b" } } end)
        app:get("/loop/b", function() return { status = 302, headers = { location = "a" } } end)
        app:get("/hop/{n}", function(req)
            local n = tonumber(req.params.n)
            if n == 0 then return "landed" end
            return { status = 302, headers = { location = "/hop/" .. (n - 1) } }
        end)
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        return srv, "http://127.0.0.1:" .. srv.port
    end

    it("turns 301/302/303 POSTs into GETs and keeps method and body for 307/308", function()
        run(function()
            local srv <close>, base = redirect_app()
            for _, code in ipairs({ 301, 302, 303 }) do
                local res = assert(loom.fetch(base .. "/r" .. code, { method = "POST", body = "data" }))
                local r = res:json()
                assert.equal("GET", r.method)
                assert.equal("", r.body)
                assert.equal(base .. "/echo", res.url)
            end
            for _, code in ipairs({ 307, 308 }) do
                local r = assert(loom.fetch(base .. "/r" .. code, { method = "POST", body = "data" })):json()
                assert.equal("POST", r.method)
                assert.equal("data", r.body)
            end
        end)
    end)

    it("keeps Authorization and Cookie on the same origin and drops them across origins", function()
        run(function()
            local srv <close>, base = redirect_app()
            local app = loom.app()
            app:get("/away", function() return { status = 302, headers = { location = base .. "/echo" } } end)
            local other <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local h = { headers = { Authorization = "Bearer t", Cookie = "sid=1", ["Proxy-Authorization"] = "Basic x" } }
            local same = assert(loom.fetch(base .. "/r302", h)):json()
            assert.same({ "Bearer t", "sid=1", "Basic x" }, { same.auth, same.cookie, same.proxy_auth })
            local away = assert(loom.fetch("http://127.0.0.1:" .. other.port .. "/away", h)):json()
            assert.same({ false, false, false }, { away.auth, away.cookie, away.proxy_auth })
        end)
    end)

    it("gives http: bad redirect for a Location with another scheme, and follows one with its own", function()
        run(function()
            local srv <close>, base = redirect_app()
            local app = loom.app()
            app:get("/to", function(req)
                return { status = 302, headers = { location = req.query.l } }
            end)
            local other <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local to = "http://127.0.0.1:" .. other.port .. "/to?l="
            -- RFC 3986 5.2.2: "g:h" is absolute (it was the path /g:h of the same server)
            assert.same({ nil, "http: bad redirect to g:h (not an absolute URL)" }, { loom.fetch(to .. "g:h") })
            assert.same({ nil, "http: bad redirect to mailto:a@b.c (not an absolute URL)" },
                { loom.fetch(to .. loom.url.encode("mailto:a@b.c")) })
            assert.same({ nil, "http: bad redirect to ftp://x/f (unsupported scheme 'ftp')" },
                { loom.fetch(to .. loom.url.encode("FTP://x/f")) })
            assert.same({ nil, "http: bad redirect to http:echo (not an absolute URL)" },
                { loom.fetch(to .. "http:echo") })
            -- an absolute Location is normalized: scheme lowercased, dot segments removed
            local res = assert(loom.fetch(to .. loom.url.encode("HTTP:" .. base:sub(6) .. "/x/../echo")))
            assert.equal(base .. "/echo", res.url)
            assert.equal("GET", res:json().method)
        end)
    end)

    it("gives http: too many redirects for a loop or too many hops", function()
        run(function()
            local srv <close>, base = redirect_app()
            assert.same({ nil, "http: too many redirects" }, { loom.fetch(base .. "/loop/a") })
            assert.same({ nil, "http: too many redirects" }, { loom.fetch(base .. "/hop/3", { redirects = 2 }) })
            assert.equal("landed", assert(loom.fetch(base .. "/hop/3", { redirects = 3 })):text())
            local res = assert(loom.fetch(base .. "/hop/3", { redirects = false }))
            assert.equal(302, res.status)
            assert.equal("/hop/2", res.headers.location)
        end)
    end)
end)

describe("cookies", function()
    it("are kept per session, by path, domain and expiry, and not by loom.fetch", function()
        run(function()
            local app = loom.app()
            app:get("/set", function()
                return { headers = { ["set-cookie"] = { "sid=abc; Path=/", "scoped=1; Path=/app",
                    "gone=1; Max-Age=0", "sec=1; Secure", "other=1; Domain=example.com" } }, body = "" }
            end)
            app:get("/forget", function() return { headers = { ["set-cookie"] = "sid=; Max-Age=0; Path=/" }, body = "" } end)
            app:get("/{p*}", function(req) return req.headers.cookie or "none" end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local base = "http://127.0.0.1:" .. srv.port
            local s <close> = loom.session()
            assert(s:get(base .. "/set"))
            assert.equal("sid=abc", assert(s:get(base .. "/x")):text())
            assert.equal("scoped=1; sid=abc", assert(s:get(base .. "/app/page")):text())
            assert.equal("sid=abc", assert(s:get(base .. "/application")):text())
            assert.equal("abc", s:cookie_jar():get("sid"))
            assert(s:get(base .. "/forget"))
            assert.equal("none", assert(s:get(base .. "/x")):text())
            -- the default session keeps none
            assert(loom.fetch(base .. "/set"))
            assert.equal("none", assert(loom.fetch(base .. "/x")):text())
            local s2 <close> = loom.session{ cookies = false }
            assert(s2:get(base .. "/set"))
            assert.equal("none", assert(s2:get(base .. "/x")):text())
        end)
    end)

    it("match domains, paths, expiry and Secure as RFC 6265 says", function()
        local cookies = require "loom.cookies"
        local jar = cookies.new()
        local u = { scheme = "http", host = "a.example.com", path = "/page" }
        local raw = {}
        for _, v in ipairs({ "tld=1; Domain=com", "other=1; Domain=example.org",
            "wide=1; Domain=.Example.com", "here=1", "deep=1; Path=/dir/sub",
            "old=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT", "sec=1; Secure",
            "later=1; Expires=Fri, 01 Jan 2100 00:00:00 GMT" }) do
            raw[#raw + 1], raw[#raw + 2] = "set-cookie", v
        end
        jar:store(raw, u)
        assert.equal(4, jar.count) -- sec=1: Secure over plain http is ignored (RFC 6265bis)
        jar:store({ "set-cookie", "sec=1; Secure" }, { scheme = "https", host = "a.example.com", path = "/page" })
        assert.equal(5, jar.count)
        assert.equal("here=1; later=1; wide=1", jar:header(u))
        assert.equal("wide=1", jar:header({ scheme = "http", host = "b.example.com", path = "/" }))
        assert.equal("deep=1; here=1; later=1; wide=1", jar:header({ scheme = "http", host = "a.example.com", path = "/dir/sub/x" }))
        assert.equal("here=1; later=1; sec=1; wide=1", jar:header({ scheme = "https", host = "a.example.com", path = "/" }))
        assert.is_nil(jar:header({ scheme = "http", host = "example.org", path = "/" }))
        assert.equal(4102444800, cookies.parse_date("Fri, 01 Jan 2100 00:00:00 GMT"))
        assert.equal(1445412480, cookies.parse_date("Wednesday, 21-Oct-15 07:28:00 GMT"))
        assert.equal(1445412480, cookies.parse_date("Wed Oct 21 07:28:00 2015"))
    end)

    it("follow redirects that set them", function()
        run(function()
            local app = loom.app()
            app:get("/login", function()
                return { status = 302, headers = { location = "/me", ["set-cookie"] = "user=ann; Path=/" } }
            end)
            app:get("/me", function(req) return req.headers.cookie or "none" end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local s <close> = loom.session()
            assert.equal("user=ann", assert(s:get("http://127.0.0.1:" .. srv.port .. "/login")):text())
        end)
    end)
end)

describe("bodies", function()
    local gz = popen_read("printf 'hello, gzip' | gzip -c")
    local zl = popen_read([[python3 -c 'import sys, zlib; sys.stdout.buffer.write(zlib.compress(b"hello, deflate"))']])
    local raw = popen_read([[python3 -c 'import sys, zlib; c = zlib.compressobj(wbits=-15); sys.stdout.buffer.write(c.compress(b"hello, raw") + c.flush())']])

    it("decodes gzip and deflate (zlib-wrapped and raw)", function()
        run(function()
            local asked = {}
            local srv <close>, base = util.raw_server(function(st, req)
                asked[#asked + 1] = req.headers["accept-encoding"] or "none"
                local body, coding = ({ ["/gz"] = { gz, "gzip" }, ["/zl"] = { zl, "deflate" },
                    ["/raw"] = { raw, "deflate" }, ["/bad"] = { "not gzip", "gzip" } })[req.target][1],
                    ({ ["/gz"] = "gzip", ["/zl"] = "deflate", ["/raw"] = "deflate", ["/bad"] = "gzip" })[req.target]
                util.respond(st, 200, body, { ["Content-Encoding"] = coding })
            end)
            local s <close> = loom.session()
            assert.equal("hello, gzip", assert(s:get(base .. "/gz")):text())
            assert.equal("hello, deflate", assert(s:get(base .. "/zl")):text())
            assert.equal("hello, raw", assert(s:get(base .. "/raw")):text())
            local res, err = s:get(base .. "/bad")
            assert.is_nil(res)
            assert.matches("^http: ", err)
            assert.equal(gz, assert(s:get(base .. "/gz", { decode = false })):text())
            -- br too when loom is built with libbrotli
            local ae = require("loom.core").compress_codings.br and "gzip, deflate, br" or "gzip, deflate"
            assert.same({ ae, ae, ae, ae, "none" }, asked)
        end)
    end)

    -- 200 000 bytes that compress to about half: a cut body has given out most of its text
    local text = popen_read([[python3 -c 'import random, sys; random.seed(1); sys.stdout.write("".join(random.choice("abcdefghijklmnop") for _ in range(200000)))']])
    local big = popen_read([[python3 -c 'import gzip, random, sys; random.seed(1); sys.stdout.buffer.write(gzip.compress("".join(random.choice("abcdefghijklmnop") for _ in range(200000)).encode()))']])
    local gz2 = popen_read("printf 'hello, ' | gzip -c; printf 'second member' | gzip -c")

    -- A raw server answering each target with {body, coding, framing}: framing "length"
    -- (Content-Length), "chunked" (two chunks, split in the middle) or "close" (read until
    -- the close); the last two send the second half 50 ms after the head and first half.
    local function coded_server(routes)
        return util.raw_server(function(st, req)
            local r = routes[req.target]
            local body, coding, framing = r[1], r[2], r[3] or "length"
            local half = #body // 2
            if framing == "length" then
                util.respond(st, 200, body, { ["Content-Encoding"] = coding })
            elseif framing == "chunked" then
                st:write(("HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n")
                    :format(coding, half, body:sub(1, half)))
                loom.sleep(0.05)
                st:write(("%x\r\n%s\r\n0\r\n\r\n"):format(#body - half, body:sub(half + 1)))
            else
                st:write("HTTP/1.1 200 OK\r\nContent-Encoding: " .. coding .. "\r\nConnection: close\r\n\r\n" .. body:sub(1, half))
                loom.sleep(0.05)
                st:write(body:sub(half + 1))
                return "close"
            end
        end)
    end

    it("fails with http: truncated when a compressed body ends before its stream does", function()
        run(function()
            local srv <close>, base = coded_server{
                ["/len"] = { gz:sub(1, -5), "gzip" },           -- the trailer's length cut off
                ["/chunked"] = { big:sub(1, -1000), "gzip", "chunked" },
                ["/close"] = { big:sub(1, #big // 2), "gzip", "close" },
                ["/deflate"] = { zl:sub(1, -3), "deflate" },
                ["/raw"] = { raw:sub(1, -3), "deflate", "close" },
                ["/one"] = { zl:sub(1, 1), "deflate" },          -- too short to say which deflate
                ["/whole"] = { gz, "gzip" },
            }
            local s <close> = loom.session()
            local origin = "(" .. base .. ")"
            assert.same({ nil, "http: truncated gzip body " .. origin }, { s:get(base .. "/len") })
            assert.same({ nil, "http: truncated gzip body " .. origin }, { s:get(base .. "/chunked") })
            assert.same({ nil, "http: truncated gzip body " .. origin }, { s:get(base .. "/close") })
            assert.same({ nil, "http: truncated deflate body " .. origin }, { s:get(base .. "/deflate") })
            assert.same({ nil, "http: truncated deflate body " .. origin }, { s:get(base .. "/raw") })
            assert.same({ nil, "http: truncated deflate body " .. origin }, { s:get(base .. "/one") })
            assert.equal("hello, gzip", assert(s:get(base .. "/whole")):text())
            -- streamed: what came is given out, then the read fails; never a clean end
            local res = assert(s:get(base .. "/chunked", { stream = true }))
            assert.same({ nil, "http: truncated gzip body " .. origin }, { res:text() })
            res = assert(s:get(base .. "/close", { stream = true }))
            local got = {}
            local ok, err = pcall(function() for piece in res:chunks() do got[#got + 1] = piece end end)
            assert.is_false(ok)
            assert.equal("http: truncated gzip body " .. origin, err)
            got = table.concat(got)
            assert.is_true(#got > 0 and #got < #text)
            assert.equal(text:sub(1, #got), got)
            local dir = util.tmpdir()
            res = assert(s:get(base .. "/chunked", { stream = true }))
            assert.same({ nil, "http: truncated gzip body " .. origin }, { res:save(dir .. "/cut") })
            os.execute("rm -rf " .. dir)
        end)
    end)

    it("takes an empty compressed body (a 304, Content-Length: 0) as empty", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st, req)
                if req.target == "/304" then
                    st:write("HTTP/1.1 304 Not Modified\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n")
                else
                    util.respond(st, 200, "", { ["Content-Encoding"] = req.target == "/gz" and "gzip" or "deflate" })
                end
            end)
            local s <close> = loom.session()
            local res = assert(s:get(base .. "/304"))
            assert.equal(304, res.status)
            assert.equal("", res:text())
            assert.equal("", assert(s:get(base .. "/gz")):text())
            assert.equal("", assert(s:get(base .. "/deflate")):text())
            assert.equal(1, s:stats().opened)
        end)
    end)

    it("decodes every member of a multi-member gzip body", function()
        run(function()
            local srv <close>, base = coded_server{
                ["/two"] = { gz2, "gzip" },
                ["/split"] = { gz2, "gzip", "chunked" },
                ["/close"] = { gz2, "gzip", "close" },
                ["/many"] = { string.rep(gz, 3) .. big, "gzip", "chunked" },
                ["/cut"] = { gz2:sub(1, -3), "gzip" },       -- the second member truncated
            }
            local s <close> = loom.session()
            assert.equal("hello, second member", assert(s:get(base .. "/two")):text())
            assert.equal("hello, second member", assert(s:get(base .. "/split")):text())
            assert.equal("hello, second member", assert(s:get(base .. "/close")):text())
            assert.equal(string.rep("hello, gzip", 3) .. text, assert(s:get(base .. "/many")):text())
            assert.same({ nil, "http: truncated gzip body (" .. base .. ")" }, { s:get(base .. "/cut") })
        end)
    end)

    it("fails with http: on bytes after the end of the compressed stream", function()
        run(function()
            local srv <close>, base = coded_server{
                ["/gz"] = { gz .. "garbage", "gzip" },
                ["/gz-zeros"] = { gz .. "\0\0\0\0", "gzip" },
                ["/gz-magic"] = { gz .. "\x1f\x8bxxxxxxxxxx", "gzip" },  -- not a gzip header after all
                ["/zl"] = { zl .. "\n", "deflate" },
                ["/raw"] = { raw .. "x", "deflate", "close" },
                ["/zl-as-gzip"] = { zl .. gz, "gzip" },       -- zlib under gzip's name: one stream only
            }
            local s <close> = loom.session()
            for _, path in ipairs{ "/gz", "/gz-zeros", "/gz-magic", "/zl", "/raw", "/zl-as-gzip" } do
                local res, err = s:get(base .. path)
                assert.is_nil(res, path)
                assert.matches("^http: undecodable compressed body: ", err)
            end
            assert.matches("bytes after the end of the gzip stream", select(2, s:get(base .. "/gz")))
            assert.matches("bytes after the end of the compressed stream", select(2, s:get(base .. "/zl")))
        end)
    end)

    it("stops at max_body with limit:", function()
        run(function()
            local srv <close>, base = echo_app()
            local res, err = loom.fetch(base .. "/big", { max_body = 1000 })
            assert.is_nil(res)
            assert.equal("limit: response body over 1000 bytes (max_body)", err)
            assert.equal(1024 * 1024, #assert(loom.fetch(base .. "/big")):text())
            -- streamed, pieces are not limited; what res:text() gathers is
            local n = 0
            for piece in assert(loom.fetch(base .. "/big", { max_body = 1000, stream = true })):chunks() do
                n = n + #piece
            end
            assert.equal(1024 * 1024, n)
            res = assert(loom.fetch(base .. "/big", { max_body = 1000, stream = true }))
            assert.same({ nil, "limit: response body over 1000 bytes (max_body)" }, { res:text() })
        end)
    end)

    it("streams with stream = true and res:chunks()", function()
        run(function()
            local srv <close>, base = echo_app()
            local res = assert(loom.fetch(base .. "/big", { stream = true }))
            local n, pieces = 0, 0
            for piece in res:chunks() do
                n, pieces = n + #piece, pieces + 1
            end
            assert.equal(1024 * 1024, n)
            assert.is_true(pieces > 1)
        end)
    end)

    it("saves to a file with res:save(path)", function()
        local dir = util.tmpdir()
        run(function()
            local srv <close>, base = echo_app()
            local res = assert(loom.fetch(base .. "/big", { stream = true }))
            assert.equal(1024 * 1024, res:save(dir .. "/big.bin"))
            res = assert(loom.fetch(base .. "/hello"))
            assert.equal(5, res:save(dir .. "/hello.txt"))
            local bad, err = assert(loom.fetch(base .. "/hello")):save(dir .. "/no/such/dir")
            assert.is_nil(bad)
            assert.matches("^closed: ", err)
        end)
        local f = assert(io.open(dir .. "/big.bin", "rb"))
        assert.equal(string.rep("x", 1024 * 1024), f:read("a"))
        f:close()
        os.execute("rm -rf " .. dir)
    end)

    it("parses json, and says so when it is not", function()
        run(function()
            local srv <close>, base = echo_app()
            assert.equal("GET", assert(loom.fetch(base .. "/echo")):json().method)
            local v, err = assert(loom.fetch(base .. "/hello")):json()
            assert.is_nil(v)
            assert.matches("^http: invalid JSON", err)
        end)
    end)
end)

describe("sessions", function()
    it("resolve against base_url and send their headers", function()
        run(function()
            local srv <close>, base = echo_app()
            local s <close> = loom.session{ base_url = base .. "/", headers = { ["X-S"] = "s" } }
            local r = assert(s:get("echo", { headers = { ["X-R"] = "r" } })):json()
            assert.equal("/echo", r.path)
            assert.equal("s", r.headers["x-s"])
            assert.equal("r", r.headers["x-r"])
            r = assert(s:post("/echo?q=1", { body = "b" })):json()
            assert.equal("POST", r.method)
            assert.equal("1", r.query.q)
        end)
    end)

    it("fail requests in flight with closed: when closed", function()
        run(function()
            local app = loom.app()
            local arrived, release = loom.event(), loom.event()
            app:get("/wait", function()
                arrived:set()
                release:wait() -- answers only once the spec is done: the request stays in flight
                return "late"
            end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local _ <close> = setmetatable({}, { __close = function() release:set() end })
            local s = loom.session()
            local t = loom.spawn(function() return s:get("http://127.0.0.1:" .. srv.port .. "/wait") end)
            arrived:wait()
            s:close()
            local _, res, err = t:join()
            assert.is_nil(res)
            assert.matches("^closed: ", err)
            assert.same({ nil, "closed: session closed" }, { s:get("http://127.0.0.1:" .. srv.port .. "/wait") })
        end)
    end)
end)

describe("errors", function()
    it("return connect: and dns: failures", function()
        run(function()
            local port = util.free_port()
            local res, err = loom.fetch("http://127.0.0.1:" .. port .. "/")
            assert.is_nil(res)
            assert.equal("connect: connection refused (127.0.0.1:" .. port .. ")", err)
            res, err = loom.fetch("http://no-such-host.invalid/")
            assert.is_nil(res)
            assert.matches("^dns: ", err)
        end)
    end)

    it("raise on misuse, naming the option", function()
        run(function()
            assert.error_matches(function() loom.fetch(1) end, "bad argument #1 to 'fetch' %(string expected")
            assert.error_matches(function() loom.fetch("http://x/", { timeout = "1" }) end,
                "bad argument #2 to 'fetch' %(option 'timeout': non%-negative number expected, got string%)")
            assert.error_matches(function() loom.fetch("http://x/", { bogus = 1 }) end, "unknown option 'bogus'")
            assert.error_matches(function() loom.fetch("http://x/", { tls = { verfy = false } }) end, "unknown option 'tls.verfy'")
            assert.error_matches(function() loom.fetch("ftp://x/") end, "unsupported scheme")
            assert.error_matches(function() loom.fetch("/relative") end, "not an absolute URL")
            assert.error_matches(function() loom.session{ max_per_host = 0 } end, "option 'max_per_host'")
            local s <close> = loom.session()
            assert.error_matches(function() s:get("http://x/", { headers = 1 }) end,
                "bad argument #2 to 'get' %(option 'headers': table expected, got number%)")
        end)
        assert.error_matches(function() loom.fetch("http://127.0.0.1:1/") end, "outside any task")
    end)
end)

-- Issue 18 #1: a caller's string (a header taken from user input, say) must not be able to
-- end a line on the wire, adding headers or a second request; nor may the caller's framing
-- headers disagree with the body the client writes.
describe("what a caller's strings put on the wire", function()
    -- A raw server that records each request it reads (an injected header or request shows
    -- up there) and answers 200, or 303 to /done for /redirect.
    local function recorder()
        local seen = {}
        local srv, base = util.raw_server(function(st, req)
            seen[#seen + 1] = req
            if req.target == "/redirect" then
                util.respond(st, 303, "", { Location = "/done" })
            else
                util.respond(st, 200, "ok")
            end
        end)
        return srv, base, seen
    end

    local function raises(fn, msg)
        assert.error_matches(fn, msg, 1, true)
    end

    it("refuses CR, LF and NUL in header values, naming the option", function()
        run(function()
            local srv <close>, base, seen = recorder()
            local s <close> = loom.session()
            for _, v in ipairs { "a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rX-Injected: 1", "a\0b",
                "a\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x" } do
                raises(function() loom.fetch(base .. "/", { headers = { ["x-a"] = v } }) end,
                    "bad argument #2 to 'fetch' (option 'headers': invalid value for header 'x-a' (CR, LF or NUL))")
                raises(function() s:get(base .. "/", { headers = { ["x-a"] = v } }) end,
                    "bad argument #2 to 'get' (option 'headers': invalid value for header 'x-a' (CR, LF or NUL))")
                raises(function() loom.session{ headers = { ["x-a"] = v } } end,
                    "bad argument #1 to 'session' (option 'headers': invalid value for header 'x-a' (CR, LF or NUL))")
            end
            raises(function() loom.fetch(base .. "/", { headers = { ["x-a"] = "a\1b" } }) end,
                "option 'headers': invalid value for header 'x-a' (control character)")
            raises(function() loom.fetch(base .. "/", { headers = { ["x-a"] = "a\127" } }) end,
                "option 'headers': invalid value for header 'x-a' (control character)")
            -- tab and bytes past 127 (obs-text) are field content; numbers are sent as text
            assert(s:get(base .. "/", { headers = { ["x-a"] = "a\tb", ["x-b"] = "caf\xc3\xa9", ["x-c"] = 5 } }))
            assert.equal(1, #seen)
            assert.equal("a\tb", seen[1].headers["x-a"])
            assert.equal("caf\xc3\xa9", seen[1].headers["x-b"])
            assert.equal("5", seen[1].headers["x-c"])
        end)
    end)

    it("refuses header names and methods that are not tokens", function()
        run(function()
            local srv <close>, base, seen = recorder()
            for _, name in ipairs { "x-a\r\nX-Injected", "x-a\n", "x a", "x:a", "", "x\0", "(x)", "\xc3\xa9" } do
                raises(function() loom.fetch(base .. "/", { headers = { [name] = "1" } }) end,
                    "bad argument #2 to 'fetch' (option 'headers': invalid header name '")
                raises(function() loom.session{ headers = { [name] = "1" } } end,
                    "bad argument #1 to 'session' (option 'headers': invalid header name '")
            end
            raises(function() loom.fetch(base .. "/", { headers = { ["x-a\r\nX-Injected"] = "1" } }) end,
                "invalid header name 'x-a\\x0D\\x0AX-Injected' (not a token)")
            raises(function() loom.fetch(base .. "/", { headers = { "X-A: 1" } }) end,
                "bad argument #2 to 'fetch' (option 'headers': header name expected, got number)")
            raises(function() loom.fetch(base .. "/", { headers = { ["x-a"] = {} } }) end,
                "option 'headers': value for header 'x-a': string or number expected, got table")
            raises(function() loom.fetch(base .. "/", { headers = { ["x-a"] = true } }) end,
                "option 'headers': value for header 'x-a': string or number expected, got boolean")
            for _, m in ipairs { "GET / HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET", "GET /x", "GE\0T", "", "G\tET" } do
                raises(function() loom.fetch(base .. "/", { method = m }) end,
                    "bad argument #2 to 'fetch' (option 'method': invalid method '")
            end
            -- every tchar is allowed in a name; a method is any token, sent uppercase
            local s <close> = loom.session()
            assert.equal(200, assert(s:fetch(base .. "/", { method = "purge",
                headers = { ["X-!#$%&'*+-.^_`|~09az"] = "1" } })).status)
            assert.equal(1, #seen)
            assert.equal("PURGE", seen[1].method)
            assert.equal("1", seen[1].headers["x-!#$%&'*+-.^_`|~09az"])
        end)
    end)

    it("keeps Content-Length and Transfer-Encoding the client's, on every hop", function()
        run(function()
            local srv <close>, base, seen = recorder()
            local s <close> = loom.session()
            local function framing(opts, msg, fname)
                raises(function() s:fetch(base .. "/", opts) end,
                    "bad argument #2 to 'fetch' (option 'headers': header '" .. msg .. "' is set by the client from the body)")
            end
            framing({ headers = { ["Content-Length"] = "10" } }, "Content-Length")
            framing({ headers = { ["content-length"] = 0 }, body = "x" }, "content-length")
            framing({ method = "POST", body = "hello", headers = { ["Content-Length"] = "4" } }, "Content-Length")
            framing({ method = "POST", body = "hello", headers = { ["Content-Length"] = "5, 5" } }, "Content-Length")
            framing({ method = "POST", body = function() end, headers = { ["Content-Length"] = "0" } }, "Content-Length")
            framing({ headers = { ["Transfer-Encoding"] = "chunked" } }, "Transfer-Encoding")
            framing({ method = "POST", body = function() end, headers = { ["transfer-encoding"] = "chunked" } },
                "transfer-encoding")
            raises(function() loom.session{ headers = { ["Content-Length"] = "0" } } end,
                "bad argument #1 to 'session' (option 'headers': header 'Content-Length' is set by the client from the body)")
            raises(function() loom.session{ headers = { ["Transfer-Encoding"] = "gzip" } } end,
                "bad argument #1 to 'session' (option 'headers': header 'Transfer-Encoding' is set by the client from the body)")
            assert.equal(0, #seen)
            -- the body's own length is accepted; a 303 turns the POST into a GET without a
            -- body, and the Content-Length given for the first hop must not go with it (the
            -- server would take the next request on the connection as the GET's body)
            local res = assert(s:post(base .. "/redirect", { body = "hello", headers = { ["Content-Length"] = "5" } }))
            assert.equal(200, res.status)
            assert.equal(2, #seen)
            assert.equal("5", seen[1].headers["content-length"])
            assert.equal("hello", seen[1].body)
            assert.equal("GET", seen[2].method)
            assert.is_nil(seen[2].headers["content-length"])
            assert.is_nil(seen[2].body)
            assert(s:get(base .. "/after"))
            assert.equal("/after", seen[3].target)
            assert.equal(1, s:stats().opened)
        end)
    end)

    it("percent-encodes query tables and refuses controls in URLs and base_url", function()
        run(function()
            local srv <close>, base, seen = recorder()
            local s0 <close> = loom.session()
            assert(s0:fetch(base .. "/q", { query = { ["k\r\nX-Injected: 1"] = "v\r\n\0 &=#" } }))
            assert.equal("/q?k%0D%0AX-Injected%3A%201=v%0D%0A%00%20%26%3D%23", seen[1].target)
            raises(function() loom.session{ base_url = base .. "/\r\nX-Injected: 1" } end,
                "bad argument #1 to 'session' (option 'base_url'")
            local s <close> = loom.session{ base_url = base .. "/" }
            raises(function() s:get("a\r\nX-Injected: 1") end, "invalid character in URL")
            raises(function() s:get("a b") end, "invalid character in URL")
            raises(function() loom.fetch("http://127.0.0.1\r\nX-Injected: 1/") end, "invalid character in URL")
            assert.equal(1, #seen)
        end)
    end)

    it("never sends a jar's cookie holding CR, LF or NUL", function()
        run(function()
            local srv <close>, base = util.raw_server(function(st, req)
                util.respond(st, 200, req.headers.cookie or "none", { ["Set-Cookie"] = "sid=1; Path=/" })
            end)
            local s <close> = loom.session()
            assert.equal("none", assert(s:get(base .. "/")):text())
            assert.equal("sid=1", assert(s:get(base .. "/")):text())
            -- a jar whose record was changed behind its back (parsing refuses such values)
            for _, c in pairs(s:cookie_jar().list) do c.value = "1\r\nX-Injected: 1" end
            assert.equal("none", assert(s:get(base .. "/")):text())
        end)
    end)

    it("refuses proxy URLs that do not parse instead of going around the proxy", function()
        raises(function() loom.session{ proxy = "http://127.0.0.1:1\r\nX-Injected: 1" } end,
            "bad argument #1 to 'session' (option 'proxy': invalid character in URL: http://127.0.0.1:1\\x0D\\x0AX-Injected: 1)")
        raises(function() loom.session{ proxy = { http = "http://a b" } } end,
            "bad argument #1 to 'session' (option 'proxy.http': invalid character in URL")
        raises(function() loom.session{ proxy = { https = "http://:3128" } } end,
            "bad argument #1 to 'session' (option 'proxy.https': no host in URL")
        raises(function() loom.session{ proxy = { htps = "http://a" } } end, "unknown option 'proxy.htps'")
        -- from the environment: the request fails (as curl's does) rather than go direct
        local script = [[local app = loom.app(); app:get("/", function() return "direct" end);]]
            .. [[local srv = assert(app:listen{ host = "127.0.0.1", port = 0 });]]
            .. [[local res, err = loom.session():get("http://127.0.0.1:" .. srv.port .. "/");]]
            .. [[print(res and res:text() or err); srv:close()]]
        local out = popen_read("http_proxy='http://127.0.0.1:1 x' no_proxy= " .. os.getenv("LOOM")
            .. " -e '" .. script .. "' 2>&1")
        assert.equal("connect: http_proxy is not a proxy URL (invalid character in URL)\n", out)
    end)

    it("refuses a NUL in TLS names and paths (C would cut the string there)", function()
        run(function()
            raises(function() loom.fetch("https://127.0.0.1:1/", { tls = { server_name = "a.example\0.evil" } }) end,
                "bad argument #2 to 'fetch' (option 'tls.server_name': invalid character in 'a.example\\x00.evil')")
            raises(function() loom.fetch("https://127.0.0.1:1/", { tls = { server_name = "a b" } }) end,
                "option 'tls.server_name': invalid character")
            raises(function() loom.session{ tls = { ca_file = "/etc/ssl/certs/ca-certificates.crt\0x" } } end,
                "bad argument #1 to 'session' (option 'tls.ca_file': invalid character")
        end)
    end)
end)
