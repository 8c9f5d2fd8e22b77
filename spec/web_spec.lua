-- Browser-facing server pieces: req.cookies and an answer's `cookies` field
-- (loom.server_cookies), loom.cookie_session (signed, sealed, with a store), loom.csrf (Go
-- 1.25's CrossOriginProtection), loom.cors and loom.secure_headers. Every case runs the app
-- on 127.0.0.1, port 0, and talks to it with loom.testing's client (raw Set-Cookie lines)
-- or a loom.session (which keeps cookies as a browser would).
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local core = require "loom.core"
local json = require "loom.json"

local crypto = loom.crypto

local function with_app(app, body, opts)
    run(function()
        local client <close>, srv = testing.client(app, opts)
        return body(client, srv)
    end)
end

-- The Set-Cookie lines of a testing-client answer, in order.
local function set_cookies(res)
    local out = {}
    for _, h in ipairs(res.raw_headers) do
        if h[1]:lower() == "set-cookie" then out[#out + 1] = h[2] end
    end
    return out
end

-- The value a Set-Cookie line gives cookie `name`, or nil.
local function cookie_value(res, name)
    for _, line in ipairs(set_cookies(res)) do
        local n, v = line:match("^([^=]+)=([^;]*)")
        if n == name then return v end
    end
    return nil
end

local function get(client, path, opts)
    return assert(client:get(path, opts))
end

describe("req.cookies", function()
    it("reads the Cookie header: quoted values unquoted, %XX decoded, the first of a name kept", function()
        local app = loom.app()
        app:get("/", function(req) return { json = req.cookies } end)
        with_app(app, function(client)
            local res = get(client, "/", { headers = {
                cookie = 'a=1; b="q v" ;  c = %E2%9C%93x%3B ; a=2; novalue; d=; =e; f=100%' } })
            assert.same({ a = "1", b = "q v", c = "\u{2713}x;", d = "", f = "100%" }, res:json())
            assert.same({}, get(client, "/"):json())
        end)
    end)

    it("reads a long Cookie header in linear time", function()
        local app = loom.app{ max_header = 1 << 20 }
        app:get("/", function(req) return req.cookies.z or "none" end)
        with_app(app, function(client)
            local blanks = string.rep(" ", 200000)
            local t0 = os.clock()
            local res = get(client, "/", { headers = { cookie = "a" .. blanks .. "b=1;" .. string.rep(";x", 100000)
                .. "; z=" .. blanks .. "v" .. blanks } })
            assert.equal("v", res.body)
            assert.is_true(os.clock() - t0 < 5, tostring(os.clock() - t0))
        end)
    end)
end)

describe("an answer's cookies", function()
    it("writes one Set-Cookie per cookie with safe defaults and the given attributes", function()
        local app = loom.app()
        app:get("/", function()
            return { text = "ok", headers = { ["Set-Cookie"] = "own=1" }, cookies = {
                sid = "v",
                theme = { value = "dark", max_age = 3600, domain = "example.com", path = "/app", secure = true,
                    same_site = "strict", http_only = false },
                gone = { max_age = 0 },
                old = false,
                raw = { value = 'a b;"c"\\%\u{e9}', same_site = false },
                when = { value = "1", expires = 1700000000 },
                cross = { value = "x", same_site = "None", secure = true },
            } }
        end)
        with_app(app, function(client)
            local res = get(client, "/")
            assert.equal(200, res.status)
            assert.same({
                "own=1",
                "cross=x; Path=/; Secure; HttpOnly; SameSite=None",
                "gone=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
                "old=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
                "raw=a%20b%3B%22c%22%5C%25%C3%A9; Path=/; HttpOnly",
                "sid=v; Path=/; HttpOnly; SameSite=Lax",
                "theme=dark; Path=/app; Domain=example.com; Max-Age=3600; Secure; SameSite=Strict",
                "when=1; Path=/; Expires=Tue, 14 Nov 2023 22:13:20 GMT; HttpOnly; SameSite=Lax",
            }, set_cookies(res))
        end)
    end)

    it("round-trips any value through a cookie jar (encoded on the way out, decoded on the way in)", function()
        local value = 'a b;"c",\\%41%\0\255\u{2713}='
        local app = loom.app()
        app:get("/set", function() return { text = "set", cookies = { v = value } } end)
        app:get("/get", function(req) return req.cookies.v end)
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local s <close> = loom.session()
            local base = "http://127.0.0.1:" .. srv.port
            assert.equal("set", assert(s:get(base .. "/set")):text())
            assert.equal(value, assert(s:get(base .. "/get")):text())
        end)
    end)

    it("reaches every answer kind: json, body, a file, nothing, and what a middleware adds", function()
        local file = os.tmpname()
        local f = assert(io.open(file, "w")); f:write("file body"); f:close()
        local app = loom.app()
        app:use(function(req, next)
            local res = next(req)
            if req.path == "/mw" then res.cookies = { mw = "1" } end
            return res
        end)
        app:get("/json", function() return { json = { a = 1 }, cookies = { j = "1" } } end)
        app:get("/body", function() return { body = "b", cookies = { b = "1" } } end)
        app:get("/file", function() return { file = file, cookies = { f = "1" } } end)
        app:get("/none", function() return { status = 204, cookies = { n = "1" } } end)
        app:get("/mw", function() return "plain" end)
        with_app(app, function(client)
            for path, name in pairs({ json = "j", body = "b", file = "f", none = "n", mw = "mw" }) do
                local res = get(client, "/" .. path)
                assert.same({ name .. "=1; Path=/; HttpOnly; SameSite=Lax" }, set_cookies(res), path)
            end
            assert.equal("file body", get(client, "/file").body)
        end)
        os.remove(file)
    end)

    it("is misuse for a name that is not a token, a bad option, or SameSite=None without Secure", function()
        local sc = require "loom.server_cookies"
        assert.error_matches(function() sc.serialize("a b", "v") end, "bad cookie name")
        assert.error_matches(function() sc.serialize("a;b", "v") end, "bad cookie name")
        assert.error_matches(function() sc.serialize("n", { value = "v", same_site = "None" }) end,
            "same_site \"None\" needs secure")
        assert.error_matches(function() sc.serialize("n", { value = "v", same_site = "Loose" }) end,
            "option 'same_site'")
        assert.error_matches(function() sc.serialize("n", { value = "v", path = "/a;b" }) end, "option 'path'")
        assert.error_matches(function() sc.serialize("n", { value = "v", max_age = 1.5 }) end, "option 'max_age'")
        assert.error_matches(function() sc.serialize("n", { value = {} }) end, "string expected")
        assert.error_matches(function() sc.serialize("n", { valeu = "v" }) end, "unknown option 'valeu'")
        -- over the wire: the handler's mistake is a 500, like any error of a handler
        local app = loom.app()
        app:get("/", function() return { text = "x", cookies = { ["a b"] = "v" } } end)
        with_app(app, function(client)
            local res = get(client, "/")
            assert.equal(500, res.status)
            assert.same({}, set_cookies(res))
        end)
    end)
end)

describe("cookies over TLS", function()
    local CERTS = os.tmpname()
    os.remove(CERTS)
    setup(function() assert(os.execute("bash spec/support/make_certs.sh " .. CERTS .. " >/dev/null")) end)
    teardown(function() os.execute("rm -rf '" .. CERTS .. "'") end)

    -- The head of one GET over TLS as lines.
    local function head(port, path)
        local st <close> = assert(loom.connect("127.0.0.1", port,
            { tls = { ca_file = CERTS .. "/ca.pem", server_name = "a.test" }, timeout = 5 }))
        assert(st:write("GET " .. path .. " HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"))
        local lines = {}
        while true do
            local line = assert(st:read_line())
            if line == "" then break end
            lines[#lines + 1] = line
        end
        return lines
    end

    it("marks cookies Secure by default over TLS (req.tls), not over plain HTTP", function()
        local app = loom.app()
        app:use(loom.secure_headers{ hsts = true })
        app:get("/", function(req)
            return { text = tostring(req.tls), cookies = { sid = "v", plain = { value = "p", secure = false } } }
        end)
        run(function()
            local tls = assert(app:listen{ host = "127.0.0.1", port = 0,
                tls = { cert = CERTS .. "/a.pem", key = CERTS .. "/a.key" } })
            local lines = head(tls.port, "/")
            tls:close()
            local cookies, hsts = {}, nil
            for _, l in ipairs(lines) do
                local v = l:match("^[Ss]et%-[Cc]ookie: (.*)$")
                if v then cookies[#cookies + 1] = v end
                hsts = hsts or l:match("^[Ss]trict%-[Tt]ransport%-[Ss]ecurity: (.*)$")
            end
            assert.same({ "plain=p; Path=/; HttpOnly; SameSite=Lax", "sid=v; Path=/; Secure; HttpOnly; SameSite=Lax" },
                cookies)
            assert.equal("max-age=31536000; includeSubDomains", hsts)
        end)
        with_app(app, function(client)
            local res = get(client, "/")
            assert.equal("false", res.body)
            assert.equal("sid=v; Path=/; HttpOnly; SameSite=Lax", set_cookies(res)[2])
            assert.is_nil(res.headers["strict-transport-security"])
        end)
    end)
end)

-- An app with a session counter: /inc adds one to req.session.n, /get tells it, /put
-- stores the request's JSON body in the session, /clear empties it.
local function session_app(opts)
    local app = loom.app()
    app:use(loom.cookie_session(opts))
    app:get("/inc", function(req)
        req.session.n = (req.session.n or 0) + 1
        return tostring(req.session.n)
    end)
    app:get("/get", function(req) return { json = req.session } end)
    app:get("/nested", function(req)
        req.session.cart.items[#req.session.cart.items + 1] = "pear"
        return "ok"
    end)
    app:post("/put", function(req)
        for k, v in pairs(assert(req:json())) do req.session[k] = v end
        return "ok"
    end)
    app:get("/clear", function(req)
        for k in pairs(req.session) do req.session[k] = nil end
        return "cleared"
    end)
    return app
end

-- The signed cookie value the middleware would make for `data` expiring at `e`.
local function signed(secret, data, e, name)
    name = name or "loom_session"
    local body = crypto.base64url(json.encode({ d = data, e = e }))
    local key = crypto.hmac("sha256", secret, "loom.cookie_session.sign")
    return body .. "." .. crypto.base64url(crypto.hmac("sha256", key, name .. "=" .. body))
end

-- A value with the byte at i changed.
local function flip(s, i)
    local c = s:sub(i, i)
    return s:sub(1, i - 1) .. (c == "A" and "B" or "A") .. s:sub(i + 1)
end

describe("loom.cookie_session", function()
    it("keeps a session across requests in a signed cookie; unchanged sessions send no cookie", function()
        local app = session_app{ secret = "s3cret", max_age = 600 }
        with_app(app, function(client)
            local r1 = get(client, "/inc")
            assert.equal("1", r1.body)
            local lines = set_cookies(r1)
            assert.equal(1, #lines)
            assert.matches("^loom_session=[%w_-]+%.[%w_-]+; Path=/; Max%-Age=600; HttpOnly; SameSite=Lax$", lines[1])
            local v = cookie_value(r1, "loom_session")
            local body = v:match("^([^.]+)")
            local payload = json.decode(crypto.unbase64url(body))
            assert.same({ n = 1 }, payload.d)
            assert.is_true(payload.e >= os.time() + 590 and payload.e <= os.time() + 610)
            local cookie = { cookie = "loom_session=" .. v }
            local r2 = get(client, "/inc", { headers = cookie })
            assert.equal("2", r2.body)
            local r3 = get(client, "/get", { headers = { cookie = "loom_session=" .. cookie_value(r2, "loom_session") } })
            assert.same({ n = 2 }, r3:json())
            assert.same({}, set_cookies(r3)) -- read, not changed: nothing to send
        end)
    end)

    it("round-trips through a client session's cookie jar, nested changes included", function()
        local app = session_app{ secret = "s" }
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local s <close> = loom.session()
            local base = "http://127.0.0.1:" .. srv.port
            for i = 1, 3 do assert.equal(tostring(i), assert(s:get(base .. "/inc")):text()) end
            assert(s:post(base .. "/put", { json = { cart = { items = { "apple" } }, user = "ann" } }))
            assert.equal("ok", assert(s:get(base .. "/nested")):text())
            assert.same({ n = 3, user = "ann", cart = { items = { "apple", "pear" } } },
                assert(s:get(base .. "/get")):json())
            assert.equal("cleared", assert(s:get(base .. "/clear")):text())
            assert.is_nil(s:cookie_jar():get("loom_session"))
            assert.same({}, assert(s:get(base .. "/get")):json())
        end)
    end)

    it("works with curl's cookie engine as the client (-b/-c), encoded cookie values included", function()
        local app = session_app{ secret = "s" }
        app:get("/odd", function() return { text = "odd", cookies = { odd = "a b;\"c\"%" } } end)
        app:get("/odd/read", function(req) return req.cookies.odd end)
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local base = ("http://127.0.0.1:%d"):format(srv.port)
            local jar, out = os.tmpname(), os.tmpname()
            -- one curl, five requests sharing its cookie engine; curl runs beside the loop
            local cmd = ("curl -sS --max-time 10 -b %s -c %s %s/inc %s/inc %s/inc %s/odd %s/odd/read >%s 2>&1")
                :format(jar, jar, base, base, base, base, base, out)
            local sh = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
            assert.same({ 0, nil }, { sh:wait() })
            local f = assert(io.open(out, "rb"))
            local body = f:read("a")
            f:close()
            os.remove(jar)
            os.remove(out)
            assert.equal('123odda b;"c"%', body)
        end)
    end)

    it("deletes the cookie when the session is emptied", function()
        local app = session_app{ secret = "s" }
        with_app(app, function(client)
            local res = get(client, "/clear", { headers = { cookie = "loom_session=" .. signed("s", { n = 1 }, os.time() + 60) } })
            assert.same({ "loom_session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax" },
                set_cookies(res))
            -- no cookie and nothing in the session: nothing to delete
            assert.same({}, set_cookies(get(client, "/clear")))
        end)
    end)

    it("gives an empty session, never an error, for a tampered, truncated, expired or foreign cookie", function()
        local app = session_app{ secret = "s" }
        local good = signed("s", { n = 41 }, os.time() + 60)
        local dot = good:find(".", 1, true)
        local bad = {
            flip(good, 3),                                   -- a byte of the payload
            flip(good, dot + 3),                             -- a byte of the signature
            good:sub(1, -2),                                 -- truncated signature
            good:sub(1, dot),                                -- no signature
            good:sub(1, dot - 1),                            -- no dot
            good:sub(2),                                     -- payload cut at the front
            signed("s", { n = 41 }, os.time() - 1),          -- expired (the server's own check)
            signed("other", { n = 41 }, os.time() + 60),     -- another app's key
            signed("s", { n = 41 }, os.time() + 60, "other"),-- signed for another cookie name
            signed("s", "not a table", os.time() + 60),
            "garbage", "", "..", "%00%ff.%00",
        }
        with_app(app, function(client)
            assert.same({ n = 41 }, get(client, "/get", { headers = { cookie = "loom_session=" .. good } }):json())
            for i, v in ipairs(bad) do
                local res = get(client, "/inc", { headers = { cookie = "loom_session=" .. v } })
                assert.equal(200, res.status, "case " .. i)
                assert.equal("1", res.body, "case " .. i)
            end
            -- a bad cookie on a request that leaves the session empty is deleted
            local res = get(client, "/get", { headers = { cookie = "loom_session=garbage" } })
            assert.same({}, res:json())
            assert.matches("^loom_session=; Path=/; Max%-Age=0", set_cookies(res)[1])
        end)
    end)

    it("rotates keys: an old secret in the list still verifies, and the answer signs again with the first", function()
        local old = signed("old", { n = 5 }, os.time() + 100)
        with_app(session_app{ secret = "new" }, function(client)
            assert.same({}, get(client, "/get", { headers = { cookie = "loom_session=" .. old } }):json())
        end)
        local renewed
        with_app(session_app{ secret = { "new", "old" } }, function(client)
            local res = get(client, "/get", { headers = { cookie = "loom_session=" .. old } })
            assert.same({ n = 5 }, res:json())
            renewed = cookie_value(res, "loom_session")
            assert.truthy(renewed)
            assert.matches("Max%-Age=%d+", set_cookies(res)[1])
            -- signed with the first secret already: nothing to send
            assert.same({}, set_cookies(get(client, "/get", { headers = { cookie = "loom_session=" .. renewed } })))
        end)
        with_app(session_app{ secret = "new" }, function(client)
            assert.same({ n = 5 }, get(client, "/get", { headers = { cookie = "loom_session=" .. renewed } }):json())
        end)
    end)

    it("answers 500 without a cookie for a session over 4 KB", function()
        local app = session_app{ secret = "s" }
        with_app(app, function(client)
            local res = assert(client:post("/put", { json = { big = string.rep("x", 2500) } }))
            assert.equal(200, res.status)
            assert.equal(1, #set_cookies(res))
            res = assert(client:post("/put", { json = { big = string.rep("x", 4000) } }))
            assert.equal(500, res.status)
            assert.same({}, set_cookies(res))
        end)
    end)

    it("seals the session with AES-GCM when encrypt = true: unreadable by the client, tamper-proof", function()
        local app = session_app{ secret = "s", encrypt = true }
        with_app(app, function(client)
            local res = assert(client:post("/put", { json = { secret_word = "swordfish" } }))
            local v = cookie_value(res, "loom_session")
            local raw = assert(crypto.unbase64url(v))
            assert.is_nil(raw:find("swordfish", 1, true))
            assert.is_nil(raw:find("secret_word", 1, true))
            local cookie = { cookie = "loom_session=" .. v }
            assert.same({ secret_word = "swordfish" }, get(client, "/get", { headers = cookie }):json())
            -- two seals of one session differ (a fresh nonce each)
            local again = cookie_value(assert(client:post("/put", { json = { secret_word = "swordfish" } })),
                "loom_session")
            assert.are_not.equal(v, again)
            for _, bad in ipairs({ flip(v, 5), flip(v, #v - 2), v:sub(1, -3), v:sub(1, 20) }) do
                assert.same({}, get(client, "/get", { headers = { cookie = "loom_session=" .. bad } }):json())
            end
        end)
        -- a signed-mode app cannot read it, nor a sealing app with another secret
        local v
        with_app(app, function(client)
            v = cookie_value(assert(client:post("/put", { json = { a = 1 } })), "loom_session")
        end)
        for _, other in ipairs({ session_app{ secret = "s" }, session_app{ secret = "t", encrypt = true } }) do
            with_app(other, function(client)
                assert.same({}, get(client, "/get", { headers = { cookie = "loom_session=" .. v } }):json())
            end)
        end
        with_app(session_app{ secret = { "t", "s" }, encrypt = true }, function(client)
            local res = get(client, "/get", { headers = { cookie = "loom_session=" .. v } })
            assert.same({ a = 1 }, res:json())
            assert.truthy(cookie_value(res, "loom_session")) -- sealed again under "t"
        end)
    end)

    it("with a store, keeps the session server-side under a signed random id", function()
        local data, calls = {}, {}
        local store = {
            get = function(_, id) calls[#calls + 1] = "get"; return data[id] end,
            set = function(_, id, v, ttl)
                calls[#calls + 1] = "set"
                assert.is_true(ttl > 0 and ttl <= 3600)
                data[id] = v
            end,
            delete = function(_, id) calls[#calls + 1] = "delete"; data[id] = nil end,
        }
        local app = session_app{ secret = "s", store = store, max_age = 3600 }
        with_app(app, function(client)
            local r1 = assert(client:post("/put", { json = { user = "ann", note = string.rep("n", 6000) } }))
            assert.equal(200, r1.status)
            local v1 = cookie_value(r1, "loom_session")
            local id1 = v1:match("^([^.]+)%.")
            assert.truthy(data[id1])
            assert.is_nil(v1:find("ann", 1, true))
            local cookie = { cookie = "loom_session=" .. v1 }
            assert.equal("ann", get(client, "/get", { headers = cookie }):json().user)
            -- a change: a new id, the old record gone
            local r2 = get(client, "/inc", { headers = cookie })
            local v2 = cookie_value(r2, "loom_session")
            local id2 = v2:match("^([^.]+)%.")
            assert.are_not.equal(id1, id2)
            assert.is_nil(data[id1])
            assert.truthy(data[id2])
            -- a forged id (its MAC made up) is not even looked up
            local n = #calls
            assert.same({}, get(client, "/get", { headers = { cookie = "loom_session=" .. id2 .. ".AAAA" } }):json())
            assert.equal(n, #calls)
            -- emptied: the record and the cookie deleted
            local r3 = get(client, "/clear", { headers = { cookie = "loom_session=" .. v2 } })
            assert.matches("^loom_session=; Path=/; Max%-Age=0", set_cookies(r3)[1])
            assert.is_nil(next(data))
        end)
    end)

    it("is misuse without a secret, or with a bad option", function()
        assert.error_matches(function() loom.cookie_session() end, "option 'secret'")
        assert.error_matches(function() loom.cookie_session{ secret = {} } end, "option 'secret'")
        assert.error_matches(function() loom.cookie_session{ secret = { "a", 1 } } end, "option 'secret': entry 2")
        assert.error_matches(function() loom.cookie_session{ secret = "s", max_age = -1 } end, "option 'max_age'")
        assert.error_matches(function() loom.cookie_session{ secret = "s", name = "a b" } end, "option 'name'")
        assert.error_matches(function() loom.cookie_session{ secret = "s", store = {} } end, "option 'store'")
        assert.error_matches(function() loom.cookie_session{ secret = "s", same_site = "x" } end, "same_site")
        assert.error_matches(function() loom.cookie_session{ secret = "s", secrte = "s" } end,
            "unknown option 'secrte'")
    end)
end)

describe("loom.csrf", function()
    -- Go 1.25's CrossOriginProtection cases (net/http/csrf_test.go's shapes): method,
    -- Sec-Fetch-Site, Origin, Host (the client's own when nil), path, expected status
    local H = "app.example:8080"
    local cases = {
        { "GET", "cross-site", "https://evil.example", H, "/", 200 },
        { "HEAD", "cross-site", "https://evil.example", H, "/", 200 },
        { "OPTIONS", "cross-site", "https://evil.example", H, "/", 200 },
        { "POST", "same-origin", nil, H, "/", 200 },
        { "POST", "none", nil, H, "/", 200 },
        { "POST", "cross-site", nil, H, "/", 403 },
        { "POST", "same-site", nil, H, "/", 403 },
        { "POST", "cross-site", "https://evil.example", H, "/", 403 },
        { "PUT", "cross-site", "https://evil.example", H, "/", 403 },
        { "DELETE", "same-site", "https://sub.app.example", H, "/", 403 },
        { "POST", "cross-site", "https://trusted.example", H, "/", 200 },
        { "POST", "same-origin", "https://evil.example", H, "/", 200 }, -- Sec-Fetch-Site decides
        { "POST", nil, nil, H, "/", 200 },
        { "POST", "", "https://evil.example", H, "/", 403 }, -- an empty Sec-Fetch-Site is none
        { "POST", "", nil, H, "/", 200 },
        { "POST", nil, "http://app.example:8080", H, "/", 200 },
        { "POST", nil, "https://app.example:8080", H, "/", 200 }, -- host:port alone is compared
        { "POST", nil, "http://app.example", H, "/", 403 },
        { "POST", nil, "http://app.example:8081", H, "/", 403 },
        { "POST", nil, "null", H, "/", 403 },
        { "POST", nil, "https://evil.example", H, "/", 403 },
        { "POST", nil, "https://trusted.example", H, "/", 200 },
        { "POST", nil, "https://trusted.example:443", H, "/", 403 }, -- trusted: exact match only
        { "POST", "cross-site", "https://evil.example", H, "/hooks/github", 200 },
        { "PUT", "cross-site", "https://evil.example", H, "/hooks/github", 200 },
        { "POST", "cross-site", "https://evil.example", H, "/only-post", 200 },
        { "PUT", "cross-site", "https://evil.example", H, "/only-post", 403 },
        { "POST", nil, "https://evil.example", H, "/hooks/x/y", 200 },
    }

    it("follows Go's CrossOriginProtection: Sec-Fetch-Site, else Origin against Host, trusted origins, bypass", function()
        local app = loom.app()
        local ran = 0
        app:use(loom.csrf{ trusted_origins = { "https://trusted.example" },
            bypass = { "/hooks/{rest*}", "POST /only-post" } })
        app:any("/{p*}", function() ran = ran + 1; return "ran" end)
        with_app(app, function(client)
            local want_ran = 0
            for i, c in ipairs(cases) do
                local method, site, origin, host, path, want = table.unpack(c, 1, 6)
                local headers = { host = host, ["sec-fetch-site"] = site, origin = origin }
                local res = assert(client:request(method, path, { headers = headers, body = method ~= "GET" and
                    method ~= "HEAD" and method ~= "OPTIONS" and "x" or nil }))
                assert.equal(want, res.status, ("case %d: %s %s site=%s origin=%s"):format(i, method, path,
                    tostring(site), tostring(origin)))
                if want == 200 then want_ran = want_ran + 1 end
                if want == 403 then assert.matches("cross%-origin request detected", res.body) end
            end
            assert.equal(want_ran, ran) -- a refused request never reaches the handler
        end)
    end)

    it("lets a deny handler answer instead, and checks trusted origins' shape", function()
        local app = loom.app()
        app:use(loom.csrf{ deny = function(_, why) return { status = 400, json = { why = why } } end })
        app:post("/", function() return "ran" end)
        with_app(app, function(client)
            local res = assert(client:post("/", { body = "x", headers = { ["sec-fetch-site"] = "cross-site" } }))
            assert.equal(400, res.status)
            assert.equal("cross-origin request detected from Sec-Fetch-Site header", res:json().why)
        end)
        for _, o in ipairs({ "https://a.example/", "https://a.example/p", "a.example", "https://", "https://a?x" }) do
            assert.error_matches(function() loom.csrf{ trusted_origins = { o } } end, "option 'trusted_origins'")
        end
        assert.error_matches(function() loom.csrf{ bypass = { "nope" } } end, "option 'bypass'")
        assert.error_matches(function() loom.csrf{ trusted = {} } end, "unknown option 'trusted'")
    end)
end)

describe("loom.cors", function()
    local function preflight(client, origin, method, headers)
        return assert(client:options("/api", { headers = { origin = origin, ["access-control-request-method"] = method,
            ["access-control-request-headers"] = headers } }))
    end

    local function cors_app(opts)
        local app = loom.app()
        app:use(loom.cors(opts))
        app:get("/api", function() return { json = { ok = true } } end)
        app:post("/api", function() return "posted" end)
        app:get("/vary", function() return { text = "v", headers = { Vary = "Accept-Encoding" } } end)
        app:get("/stream", function(req)
            local out = req:stream{ headers = { ["content-type"] = "text/plain" } }
            out:write("s")
        end)
        return app
    end

    it("answers a preflight from an allowed origin with 204 and the Access-Control-* headers", function()
        local app = cors_app{ origins = { "https://a.example" }, methods = { "GET", "POST" }, max_age = 600 }
        local ran = false
        app:options("/api", function() ran = true; return "handler" end)
        with_app(app, function(client)
            local res = preflight(client, "https://a.example", "POST", "content-type, x-token")
            assert.equal(204, res.status)
            assert.equal("https://a.example", res.headers["access-control-allow-origin"])
            assert.equal("GET, POST", res.headers["access-control-allow-methods"])
            assert.equal("content-type, x-token", res.headers["access-control-allow-headers"])
            assert.equal("600", res.headers["access-control-max-age"])
            assert.is_nil(res.headers["access-control-allow-credentials"])
            assert.matches("Origin", res.headers.vary)
            -- an origin not in the list: no CORS header at all
            res = preflight(client, "https://evil.example", "POST")
            assert.equal(204, res.status)
            assert.is_nil(res.headers["access-control-allow-origin"])
            assert.is_nil(res.headers["access-control-allow-methods"])
            assert.matches("Origin", res.headers.vary)
            -- an OPTIONS that is not a preflight goes to the route
            res = assert(client:options("/api", { headers = { origin = "https://a.example" } }))
            assert.equal("handler", res.body)
            assert.is_true(ran)
        end)
    end)

    it("adds Allow-Origin to real answers of allowed origins, with Vary: Origin; others run without", function()
        local app = cors_app{ origins = { "https://a.example" }, expose = { "x-total" } }
        with_app(app, function(client)
            local res = get(client, "/api", { headers = { origin = "https://a.example" } })
            assert.equal(200, res.status)
            assert.equal("https://a.example", res.headers["access-control-allow-origin"])
            assert.equal("x-total", res.headers["access-control-expose-headers"])
            assert.equal("Origin", res.headers.vary)
            res = assert(client:post("/api", { body = "x", headers = { origin = "https://evil.example" } }))
            assert.equal("posted", res.body) -- the request ran: browsers enforce CORS
            assert.is_nil(res.headers["access-control-allow-origin"])
            assert.equal("Origin", res.headers.vary)
            res = get(client, "/vary", { headers = { origin = "https://a.example" } })
            assert.equal("Accept-Encoding, Origin", res.headers.vary)
            res = get(client, "/stream", { headers = { origin = "https://a.example" } })
            assert.equal("s", res.body)
            assert.equal("https://a.example", res.headers["access-control-allow-origin"])
            assert.equal("Origin", res.headers.vary)
            res = get(client, "/api") -- no Origin: not a CORS request
            assert.is_nil(res.headers["access-control-allow-origin"])
        end)
    end)

    it("gives \"*\" to any origin without credentials, and echoes the origin (never \"*\") with them", function()
        with_app(cors_app{ origins = "*" }, function(client)
            local res = get(client, "/api", { headers = { origin = "https://any.example" } })
            assert.equal("*", res.headers["access-control-allow-origin"])
            assert.is_nil(res.headers.vary)
            res = preflight(client, "https://any.example", "PUT")
            assert.equal("*", res.headers["access-control-allow-origin"])
            assert.equal("GET, HEAD, PUT, PATCH, POST, DELETE", res.headers["access-control-allow-methods"])
        end)
        with_app(cors_app{ origins = "*", credentials = true, headers = { "content-type" } }, function(client)
            local res = get(client, "/api", { headers = { origin = "https://any.example" } })
            assert.equal("https://any.example", res.headers["access-control-allow-origin"])
            assert.equal("true", res.headers["access-control-allow-credentials"])
            assert.equal("Origin", res.headers.vary)
            res = preflight(client, "https://any.example", "POST", "x-other")
            assert.equal("https://any.example", res.headers["access-control-allow-origin"])
            assert.equal("true", res.headers["access-control-allow-credentials"])
            assert.equal("content-type", res.headers["access-control-allow-headers"])
        end)
        assert.error_matches(function() loom.cors{ origins = 5 } end, "option 'origins'")
        assert.error_matches(function() loom.cors{ methods = { "GET, POST" } } end, "option 'methods'")
        assert.error_matches(function() loom.cors{ max_age = -1 } end, "option 'max_age'")
    end)
end)

describe("loom.secure_headers", function()
    it("puts the hardening headers on every answer, streams included; an answer's own header wins", function()
        local app = loom.app()
        app:use(loom.secure_headers{ csp = "default-src 'self'" })
        app:get("/", function() return "x" end)
        app:get("/own", function() return { text = "x", headers = { ["X-Frame-Options"] = "SAMEORIGIN" } } end)
        app:get("/stream", function(req) req:stream{}:write("s") end)
        with_app(app, function(client)
            for _, path in ipairs({ "/", "/stream", "/nope" }) do
                local res = get(client, path)
                assert.equal("nosniff", res.headers["x-content-type-options"], path)
                assert.equal("strict-origin-when-cross-origin", res.headers["referrer-policy"], path)
                assert.equal("DENY", res.headers["x-frame-options"], path)
                assert.equal("same-origin", res.headers["cross-origin-opener-policy"], path)
                assert.equal("default-src 'self'; frame-ancestors 'none'", res.headers["content-security-policy"], path)
                assert.is_nil(res.headers["strict-transport-security"], path) -- plain HTTP
            end
            assert.equal("SAMEORIGIN", get(client, "/own").headers["x-frame-options"])
        end)
        local off = loom.app()
        off:use(loom.secure_headers{ frame_options = false, referrer_policy = "no-referrer" })
        off:get("/", function() return "x" end)
        with_app(off, function(client)
            local res = get(client, "/")
            assert.is_nil(res.headers["x-frame-options"])
            assert.is_nil(res.headers["content-security-policy"])
            assert.equal("no-referrer", res.headers["referrer-policy"])
        end)
        assert.error_matches(function() loom.secure_headers{ frame_options = "ALLOW" } end, "option 'frame_options'")
        assert.error_matches(function() loom.secure_headers{ hsts = "yes" } end, "option 'hsts'")
    end)
end)
