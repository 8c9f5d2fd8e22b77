-- loom.router: patterns match the path exactly as sent (empty segments are segments, as
-- for exact routes), a target that is not a path matches no route, and what a pattern
-- may be. The router's own calls first, then the same over raw loopback requests, where
-- a middleware checking req.path must see what the route matched. fuzz/fuzz_router checks
-- the same grammar against a reference of its own.
local loom = require "loom"
local router = require "loom.router"
local run = require "support.run"
local testing = require "loom.testing"

local function handler(name) return function() return name end end

-- The name of the route method+path takes and its params, or nil and the allowed list.
local function route(r, method, path)
    local h, params = r:match(method, path)
    if h then return h(), params or {} end
    return nil, params
end

describe("router: the path as sent", function()
    it("does not let a pattern take a trailing or doubled slash an exact route would not", function()
        local r = router.new()
        r:add("GET", "/about", handler("about"))
        r:add("GET", "/{code}", handler("code"))
        assert.same({ "about", {} }, { route(r, "GET", "/about") })
        assert.same({ "code", { code = "abc" } }, { route(r, "GET", "/abc") })
        for _, path in ipairs { "/about/", "//abc", "/abc/", "/abc//", "//", "/", "/abc/def" } do
            assert.same({ nil, {} }, { route(r, "GET", path) }, path)
        end
    end)

    it("counts empty segments: //admin/users/7 is not /admin/users/{id}", function()
        local r = router.new()
        r:add("GET", "/admin/users/{id}", handler("admin"))
        assert.same({ "admin", { id = "7" } }, { route(r, "GET", "/admin/users/7") })
        for _, path in ipairs { "//admin/users/7", "/admin//users/7", "/admin/users//7", "/admin/users/7/" } do
            assert.is_nil((route(r, "GET", path)), path)
        end
    end)

    it("matches a pattern's own empty segments and trailing slash literally", function()
        local r = router.new()
        r:add("GET", "/{x}/", handler("slash"))
        r:add("GET", "/a//{y}", handler("double"))
        assert.same({ "slash", { x = "abc" } }, { route(r, "GET", "/abc/") })
        assert.is_nil((route(r, "GET", "/abc")))
        assert.same({ "double", { y = "1" } }, { route(r, "GET", "/a//1") })
        assert.is_nil((route(r, "GET", "/a/1")))
    end)

    it("binds {name*} to the rest after its slash, as sent and possibly empty", function()
        local r = router.new()
        r:add("GET", "/files/{p*}", handler("files"))
        assert.same({ "files", { p = "" } }, { route(r, "GET", "/files/") })
        assert.same({ "files", { p = "a/b/" } }, { route(r, "GET", "/files/a/b/") })
        assert.same({ "files", { p = "/etc//x" } }, { route(r, "GET", "/files//etc//x") })
        assert.same({ "files", { p = "a b/c/d" } }, { route(r, "GET", "/files/a%20b/c%2Fd") })
        assert.is_nil((route(r, "GET", "/files")))
        assert.is_nil((route(r, "GET", "/filesx/a")))
    end)

    it("decodes parameters after matching, one %XX at a time", function()
        local r = router.new()
        r:add("GET", "/u/{id}/{tab}", handler("u"))
        assert.same({ "u", { id = "a/b", tab = "100%" } }, { route(r, "GET", "/u/a%2Fb/100%25") })
        assert.same({ "u", { id = "%zz", tab = "x" } }, { route(r, "GET", "/u/%zz/x") })
        assert.same({ "u", { id = "%252F", tab = "x" } }, { route(r, "GET", "/u/%25252F/x") })
    end)

    it("takes literal segments literally, Lua pattern characters included", function()
        local r = router.new()
        r:add("GET", "/a.b/%d+/(x)/{v}", handler("lit"))
        assert.same({ "lit", { v = "1" } }, { route(r, "GET", "/a.b/%d+/(x)/1") })
        assert.is_nil((route(r, "GET", "/aXb/%d+/(x)/1")))
        assert.is_nil((route(r, "GET", "/a.b/7/(x)/1")))
    end)

    it("routes no target that is not a path: '*' (OPTIONS *), 'host:443' (CONNECT)", function()
        local r = router.new()
        r:add("*", "/{p*}", handler("any"))
        r:add("OPTIONS", "/{p}", handler("options"))
        r:add("CONNECT", "/{p*}", handler("connect"))
        for _, t in ipairs { { "OPTIONS", "*" }, { "CONNECT", "host:443" }, { "GET", "" },
            { "GET", "a/b" }, { "CONNECT", "[::1]:443" } } do
            assert.same({ nil, {} }, { route(r, t[1], t[2]) }, t[1] .. " " .. t[2])
        end
        assert.same({ "connect", { p = "x" } }, { route(r, "CONNECT", "/x") })
    end)

    it("tries patterns in the order added whatever their first segment", function()
        local r = router.new()
        r:add("GET", "/{a}/x", handler("wild first"))
        r:add("GET", "/users/{id}", handler("users"))
        r:add("GET", "/users/x", handler("exact"))
        r:add("GET", "/{a}/{b}", handler("wild last"))
        assert.equal("exact", (route(r, "GET", "/users/x"))) -- exact routes come first
        assert.same({ "wild first", { a = "other" } }, { route(r, "GET", "/other/x") })
        assert.same({ "users", { id = "7" } }, { route(r, "GET", "/users/7") })
        assert.same({ "wild last", { a = "other", b = "7" } }, { route(r, "GET", "/other/7") })
        r:add("GET", "/late/{z}/q", handler("late")) -- added after a match was made
        assert.same({ "late", { z = "7" } }, { route(r, "GET", "/late/7/q") })
        assert.same({ nil, { "GET", "HEAD" } }, { route(r, "POST", "/late/7/q") })
    end)

    it("keeps the order added across buckets when a method has many patterns", function()
        -- past 16 patterns a method's are bucketed by first segment (lua/loom/router.lua),
        -- each bucket matched in C (src/lib/route.c) with the wildcards in their place
        local r = router.new()
        r:add("GET", "/{a}/x", handler("wild first"))
        for i = 1, 20 do r:add("GET", "/r" .. i .. "/{id}", handler("r" .. i)) end
        r:add("GET", "/{a}/{b}/{c}", handler("wild three"))
        r:add("GET", "/r3/{id}/{more*}", handler("r3 rest"))
        assert.same({ "wild first", { a = "r5" } }, { route(r, "GET", "/r5/x") })
        assert.same({ "r5", { id = "y" } }, { route(r, "GET", "/r5/y") })
        assert.same({ "r20", { id = "a b" } }, { route(r, "GET", "/r20/a%20b") })
        assert.same({ "wild three", { a = "r3", b = "1", c = "2" } }, { route(r, "GET", "/r3/1/2") })
        assert.same({ "r3 rest", { id = "1", more = "2/3" } }, { route(r, "GET", "/r3/1/2/3") })
        assert.same({ "wild three", { a = "zz", b = "1", c = "2" } }, { route(r, "GET", "/zz/1/2") })
        assert.same({ nil, {} }, { route(r, "GET", "/zz/1") })
        assert.same({ nil, {} }, { route(r, "GET", "*") })
        r:add("GET", "/zz/{n}", handler("late")) -- added after matches were made
        assert.same({ "late", { n = "1" } }, { route(r, "GET", "/zz/1") })
        assert.same({ "r7", { id = "q" } }, { route(r, "GET", "/r7/q") })
    end)

    it("raises on a pattern that does not start with '/' or has over 32 parameters", function()
        local r = router.new()
        assert.error_matches(function() r:add("GET", "users/{id}", handler()) end,
            "bad route pattern 'users/{id}': it must start with '/'", nil, true)
        assert.error_matches(function() r:add("GET", "*", handler()) end, "must start with '/'")
        local segs = {}
        for i = 1, 33 do segs[i] = "{p" .. i .. "}" end
        assert.error_matches(function() r:add("GET", "/" .. table.concat(segs, "/"), handler()) end,
            "more than 32 parameters")
        segs[33] = nil
        r:add("GET", "/" .. table.concat(segs, "/"), handler("many"))
        local path = {}
        for i = 1, 32 do path[i] = "v" .. i end
        local name, params = route(r, "GET", "/" .. table.concat(path, "/"))
        assert.equal("many", name)
        assert.equal("v1", params.p1)
        assert.equal("v32", params.p32)
    end)
end)

-- Serves app on 127.0.0.1 and returns the response to one raw request (then closes).
local function exchange(app, wire)
    return run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        local st <close> = assert(loom.connect("127.0.0.1", srv.port))
        assert(st:write(wire))
        return assert(testing.reader(st):response())
    end)
end

describe("router: over the wire", function()
    -- A middleware guarding what req.path says is under /admin/, as a newcomer writes it.
    local function guarded_app()
        local app = loom.app()
        app:use(function(req, next)
            if req.path:find("^/admin/") then return { status = 403, body = "forbidden" } end
            return next(req)
        end)
        app:get("/admin/users/{id}", function(req) return "user " .. req.params.id end)
        return app
    end

    it("does not take //admin/... to an /admin/ route past a middleware checking req.path", function()
        local app = guarded_app()
        assert.equal(403, exchange(app, "GET /admin/users/7 HTTP/1.1\r\nHost: t\r\n\r\n").status)
        assert.equal(404, exchange(app, "GET //admin/users/7 HTTP/1.1\r\nHost: t\r\n\r\n").status)
        assert.equal(404, exchange(app, "GET http://t//admin/users/7 HTTP/1.1\r\nHost: t\r\n\r\n").status)
    end)

    it("answers /about/ from neither /about nor /{code}", function()
        local app = loom.app()
        app:get("/about", function() return "about" end)
        app:get("/{code}", function(req) return "code " .. req.params.code end)
        assert.equal("about", exchange(app, "GET /about HTTP/1.1\r\nHost: t\r\n\r\n").body)
        assert.equal("code abc", exchange(app, "GET /abc HTTP/1.1\r\nHost: t\r\n\r\n").body)
        for _, path in ipairs { "/about/", "//abc", "/abc/", "/abc//" } do
            assert.equal(404, exchange(app, "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n\r\n").status, path)
        end
    end)

    it("finds a pattern route in the entry as the dispatcher does: HEAD, 405, routes added later", function()
        -- an app without middleware matches its patterns in the entry (app.lua), and leaves
        -- what they do not take to the dispatcher
        local app = loom.app()
        app:get("/users/{id}", function(req) return "user " .. req.params.id end)
        app:post("/users/{id}/{what*}", function(req) return req.params.what end)
        app:any("/any/{x}", function(req) return "any " .. req.params.x end)
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local _ <close> = run.defer(function() srv:close(0) end)
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            local reader = testing.reader(st)
            local function ask(wire)
                assert(st:write(wire))
                return assert(reader:response(wire:match("^%u+")))
            end
            assert.equal("user 7", ask("GET /users/7 HTTP/1.1\r\nHost: t\r\n\r\n").body)
            local res = ask("HEAD /users/7 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert.equal(200, res.status)
            assert.equal("6", res.headers["content-length"])
            res = ask("DELETE /users/7 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert.equal(405, res.status)
            assert.equal("GET, HEAD", res.headers.allow)
            assert.equal("a/b", ask("POST /users/7/a/b HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").body)
            assert.equal("any 1", ask("PUT /any/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").body)
            assert.equal(404, ask("GET /users/ HTTP/1.1\r\nHost: t\r\n\r\n").status)
            app:get("/users/{id}/posts/{post}", function(req) return req.params.id .. ":" .. req.params.post end)
            assert.equal("7:9", ask("GET /users/7/posts/9 HTTP/1.1\r\nHost: t\r\n\r\n").body)
            assert.equal("user a b", ask("GET /users/a%20b HTTP/1.1\r\nHost: t\r\n\r\n").body)
        end)
    end)

    it("answers OPTIONS * and CONNECT host:port with 404, not from a /{p*} route", function()
        local app = loom.app()
        local hits = 0
        app:any("/{p*}", function() hits = hits + 1; return "caught" end)
        local res = exchange(app, "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        assert.equal(404, res.status)
        res = exchange(app, "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n")
        assert.equal(404, res.status)
        assert.equal("Not Found", res.body)
        assert.equal(0, hits)
        assert.equal("caught", exchange(app, "OPTIONS /x HTTP/1.1\r\nHost: t\r\n\r\n").body)
        assert.equal(1, hits)
    end)
end)
