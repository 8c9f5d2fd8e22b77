-- loom.app: routes and patterns, middleware, what a handler may return, the request
-- object, streaming responses, static files, and misuse. Each case starts the app with
-- loom.testing's client on 127.0.0.1, port 0.
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local core = require "loom.core"
local timing = require "support.timing"

-- Runs body(client, srv) with app listening; the client and server are closed at the end.
local function with_app(app, body, opts)
    run(function()
        local client <close>, srv = testing.client(app)
        return body(client, srv)
    end, opts)
end

local function get(client, path, opts)
    return assert(client:get(path, opts))
end

describe("app: routes", function()
    it("matches static paths, {name} segments and {name*} rests", function()
        local app = loom.app()
        app:get("/", function() return "root" end)
        app:get("/users", function() return "list" end)
        app:get("/users/{id}", function(req) return "user " .. req.params.id end)
        app:get("/users/{id}/posts/{post}", function(req)
            return req.params.id .. ":" .. req.params.post
        end)
        app:get("/files/{path*}", function(req) return "file " .. req.params.path end)
        with_app(app, function(client)
            assert.equal("root", get(client, "/").body)
            assert.equal("list", get(client, "/users").body)
            assert.equal("user 42", get(client, "/users/42").body)
            assert.equal("7:9", get(client, "/users/7/posts/9").body)
            assert.equal("file a/b/c.txt", get(client, "/files/a/b/c.txt").body)
            assert.equal("file ", get(client, "/files/").body)
            assert.equal(404, get(client, "/users/7/posts").status)
            assert.equal(404, get(client, "/nope").status)
        end)
    end)

    it("percent-decodes parameters after matching, so %2F does not split a segment", function()
        local app = loom.app()
        app:get("/users/{id}", function(req) return req.params.id end)
        app:get("/files/{path*}", function(req) return req.params.path end)
        with_app(app, function(client)
            assert.equal("a/b", get(client, "/users/a%2Fb").body)
            assert.equal("hello world", get(client, "/users/hello%20world").body)
            assert.equal("caf\xc3\xa9", get(client, "/users/caf%C3%A9").body)
            assert.equal("100%", get(client, "/users/100%25").body)
            assert.equal("dir one/x y", get(client, "/files/dir%20one/x%20y").body)
        end)
    end)

    it("keeps req.path as sent and gives the query apart", function()
        local app = loom.app()
        app:get("/p/{x}", function(req)
            return { json = { path = req.path, x = req.params.x, q = req.query, target = req.target } }
        end)
        with_app(app, function(client)
            local v = get(client, "/p/a%20b?k=v%20w&n=1"):json()
            assert.same({ path = "/p/a%20b", x = "a b", q = { k = "v w", n = "1" },
                target = "/p/a%20b?k=v%20w&n=1" }, v)
        end)
    end)

    it("gives a route with and without a trailing slash each its own handler", function()
        local app = loom.app()
        app:get("/about", function() return "no slash" end)
        app:get("/about/", function() return "slash" end)
        with_app(app, function(client)
            assert.equal("no slash", get(client, "/about").body)
            assert.equal("slash", get(client, "/about/").body)
        end)
    end)

    it("routes by method; any, route and the method helpers", function()
        local app = loom.app()
        for _, m in ipairs({ "get", "post", "put", "patch", "delete", "options" }) do
            app[m](app, "/m", function(req) return m .. ":" .. req.method end)
        end
        app:route("PROPFIND", "/m", function(req) return "route:" .. req.method end)
        app:any("/any", function(req) return "any:" .. req.method end)
        app:head("/h", function() return { status = 200, headers = { ["x-head"] = "own" } } end)
        with_app(app, function(client)
            for _, m in ipairs({ "get", "post", "put", "patch", "delete", "options" }) do
                assert.equal(m .. ":" .. m:upper(), assert(client:request(m, "/m")).body)
            end
            assert.equal("route:PROPFIND", assert(client:request("PROPFIND", "/m")).body)
            assert.equal("any:DELETE", assert(client:delete("/any")).body)
            assert.equal("any:GET", get(client, "/any").body)
            local h = assert(client:head("/h"))
            assert.equal("own", h.headers["x-head"])
        end)
    end)

    it("answers 405 with the allowed methods, HEAD included for GET routes", function()
        local app = loom.app()
        app:get("/r/{id}", function() return "g" end)
        app:put("/r/{id}", function() return "p" end)
        with_app(app, function(client)
            local res = assert(client:post("/r/1", { body = "x" }))
            assert.equal(405, res.status)
            assert.equal("GET, HEAD, PUT", res.headers.allow)
            assert.equal(404, assert(client:post("/q/1", { body = "x" })).status)
        end)
    end)

    it("answers HEAD for a GET route from the GET handler, with its Content-Length", function()
        local app = loom.app()
        local seen
        app:get("/g", function(req)
            seen = req.method
            return { json = { a = 1 } }
        end)
        with_app(app, function(client)
            local res = assert(client:head("/g"))
            assert.equal("HEAD", seen)
            assert.equal(200, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.equal(tostring(#'{"a":1}'), res.headers["content-length"])
            assert.equal("", res.body)
        end)
    end)

    it("rejects malformed patterns at registration", function()
        local app = loom.app()
        local f = function() end
        assert.error_matches(function() app:get("/a/{b*}/c", f) end, "must come last")
        assert.error_matches(function() app:get("/a/x{b}", f) end, "bad route pattern")
        assert.error_matches(function() app:get("/a}", f) end, "bad route pattern") -- fuzz_router
        assert.error_matches(function() app:get("users", f) end, "pattern must start with '/'")
    end)
end)

describe("app: middleware", function()
    it("runs outermost first and unwinds in reverse", function()
        local app = loom.app()
        local log = {}
        app:use(function(req, next)
            log[#log + 1] = "a>"
            local res = next(req)
            log[#log + 1] = "<a"
            return res
        end)
        app:use(function(req, next)
            log[#log + 1] = "b>"
            local res = next(req)
            log[#log + 1] = "<b"
            return res
        end)
        app:get("/", function()
            log[#log + 1] = "handler"
            return "ok"
        end)
        with_app(app, function(client)
            assert.equal("ok", get(client, "/").body)
            assert.same({ "a>", "b>", "handler", "<b", "<a" }, log)
        end)
    end)

    it("can answer without calling next", function()
        local app = loom.app()
        local reached = false
        app:use(function(req, next)
            if req.headers.authorization ~= "Bearer yes" then
                return { status = 401, headers = { ["www-authenticate"] = "Bearer" }, text = "who are you?" }
            end
            return next(req)
        end)
        app:get("/secret", function()
            reached = true
            return "the secret"
        end)
        with_app(app, function(client)
            local res = get(client, "/secret")
            assert.equal(401, res.status)
            assert.equal("who are you?", res.body)
            assert.equal("Bearer", res.headers["www-authenticate"])
            assert.is_false(reached)
            res = get(client, "/secret", { headers = { Authorization = "Bearer yes" } })
            assert.equal("the secret", res.body)
            assert.is_true(reached)
        end)
    end)

    it("sees every handler's answer as a table it can change", function()
        local app = loom.app()
        app:use(function(req, next)
            local res = next(req)
            res.headers = res.headers or {}
            res.headers["x-status-seen"] = tostring(res.status)
            if res.body then res.body = res.body:upper() end
            return res
        end)
        app:get("/s", function() return "plain" end)
        app:get("/t", function() return { status = 201, json = { k = "v" } } end)
        app:get("/n", function() end)
        with_app(app, function(client)
            local res = get(client, "/s")
            assert.equal("PLAIN", res.body)
            assert.equal("200", res.headers["x-status-seen"])
            assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
            res = get(client, "/t")
            assert.equal(201, res.status)
            assert.equal('{"K":"V"}', res.body)
            assert.equal("201", res.headers["x-status-seen"])
            res = get(client, "/n")
            assert.equal(204, res.status)
            assert.equal("204", res.headers["x-status-seen"])
            res = get(client, "/missing") -- 404s pass through middleware too
            assert.equal(404, res.status)
            assert.equal("404", res.headers["x-status-seen"])
        end)
    end)

    it("may hand a changed request on, and catch a handler's error", function()
        local app = loom.app()
        app:use(function(req, next)
            local ok, res = pcall(next, req)
            if not ok then return { status = 503, text = "caught: " .. tostring(res):match("[^:]+$") } end
            return res
        end)
        app:use(function(req, next)
            req.user = "ann"
            return next(req)
        end)
        app:get("/who", function(req) return req.user end)
        app:get("/boom", function() error("kaput", 0) end)
        with_app(app, function(client)
            assert.equal("ann", get(client, "/who").body)
            local res = get(client, "/boom")
            assert.equal(503, res.status)
            assert.equal("caught: kaput", res.body)
        end)
    end)

    it("a middleware that raises gives 500", function()
        local app = loom.app()
        app:use(function() error("middleware broke") end)
        app:get("/", function() return "never" end)
        with_app(app, function(client)
            local res = get(client, "/")
            assert.equal(500, res.status)
            assert.equal("Internal Server Error", res.body)
        end)
    end)
end)

describe("app: what a handler returns", function()
    it("a string: 200 text/plain; charset=utf-8", function()
        local app = loom.app()
        app:get("/", function() return "héllo" end)
        with_app(app, function(client)
            local res = get(client, "/")
            assert.equal(200, res.status)
            assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
            assert.equal("héllo", res.body)
            assert.equal(tostring(#"héllo"), res.headers["content-length"])
        end)
    end)

    it("nothing: 204 without a body", function()
        local app = loom.app()
        app:delete("/x", function() end)
        app:get("/nil", function() return nil end)
        with_app(app, function(client)
            for _, r in ipairs({ assert(client:delete("/x")), get(client, "/nil") }) do
                assert.equal(204, r.status)
                assert.equal("", r.body)
                assert.is_nil(r.headers["content-length"])
            end
        end)
    end)

    it("{status, headers, body}: the body as is; without a content type application/octet-stream", function()
        local app = loom.app()
        app:get("/raw", function() return { status = 202, headers = { ["X-One"] = "1" }, body = "\0\1\2" } end)
        app:get("/typed", function()
            return { headers = { ["Content-Type"] = "image/png" }, body = "PNG" }
        end)
        app:get("/multi", function()
            return { status = 200, headers = { ["set-cookie"] = { "a=1", "b=2" } }, body = "" }
        end)
        with_app(app, function(client)
            local res = get(client, "/raw")
            assert.equal(202, res.status)
            assert.equal("\0\1\2", res.body)
            assert.equal("application/octet-stream", res.headers["content-type"])
            assert.equal("1", res.headers["x-one"])
            res = get(client, "/typed")
            assert.equal(200, res.status)
            assert.equal("image/png", res.headers["content-type"])
            res = get(client, "/multi")
            local cookies = {}
            for _, h in ipairs(res.raw_headers) do
                if h[1]:lower() == "set-cookie" then cookies[#cookies + 1] = h[2] end
            end
            assert.same({ "a=1", "b=2" }, cookies)
        end)
    end)

    it("{text}, {html}, {json} set their content types; a given one wins", function()
        local app = loom.app()
        app:get("/text", function() return { text = "t" } end)
        app:get("/html", function() return { status = 201, html = "<b>h</b>" } end)
        app:get("/json", function() return { json = { list = { 1, 2 }, null = loom.json.null } } end)
        app:get("/problem", function()
            return { status = 422, headers = { ["content-type"] = "application/problem+json" }, json = { title = "bad" } }
        end)
        with_app(app, function(client)
            local res = get(client, "/text")
            assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
            assert.equal("t", res.body)
            res = get(client, "/html")
            assert.equal(201, res.status)
            assert.equal("text/html; charset=utf-8", res.headers["content-type"])
            assert.equal("<b>h</b>", res.body)
            res = get(client, "/json")
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ list = { 1, 2 }, null = loom.json.null }, res:json())
            res = get(client, "/problem")
            assert.equal(422, res.status)
            assert.equal("application/problem+json", res.headers["content-type"])
            assert.same({ title = "bad" }, res:json())
        end)
    end)

    it("{file}: the file, typed by its extension", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        local f = assert(io.open(dir .. "/report.csv", "wb"))
        f:write("a,b\n1,2\n")
        f:close()
        local app = loom.app()
        app:get("/report", function() return { file = dir .. "/report.csv" } end)
        app:get("/named", function()
            return { file = dir .. "/report.csv", headers = { ["content-disposition"] = "attachment" } }
        end)
        app:get("/missing", function() return { file = dir .. "/nope.csv" } end)
        with_app(app, function(client)
            local res = get(client, "/report")
            assert.equal(200, res.status)
            assert.equal("text/csv; charset=utf-8", res.headers["content-type"])
            assert.equal("a,b\n1,2\n", res.body)
            res = get(client, "/named")
            assert.equal("attachment", res.headers["content-disposition"])
            local missing = get(client, "/missing")
            assert.equal(404, missing.status)
            assert.equal("Not Found", missing.body)
            local etag = get(client, "/report").headers.etag
            assert.equal(304, get(client, "/report", { headers = { ["if-none-match"] = etag } }).status)
            res = get(client, "/report", { headers = { range = "bytes=99-" } })
            assert.equal(416, res.status)
            assert.equal("bytes */8", res.headers["content-range"])
        end)
        os.execute("rm -rf " .. dir)
    end)

    it("anything else is a 500", function()
        local app = loom.app()
        app:get("/n", function() return 12 end)
        app:get("/b", function() return { body = {} } end)
        app:get("/f", function() return function() end end)
        with_app(app, function(client)
            for _, p in ipairs({ "/n", "/b", "/f" }) do
                local res = get(client, p)
                assert.equal(500, res.status, p)
                assert.equal("Internal Server Error", res.body)
            end
        end)
    end)
end)

describe("app: streaming with req:stream", function()
    it("sends chunks as they are written, chunked, and ends when the handler returns", function()
        local app = loom.app()
        app:get("/count", function(req)
            local out = assert(req:stream{ status = 200, headers = { ["content-type"] = "text/plain" } })
            for i = 1, 5 do assert(out:write(i .. "\n")) end
        end)
        with_app(app, function(client)
            local res = get(client, "/count")
            assert.equal(200, res.status)
            assert.equal("chunked", res.headers["transfer-encoding"])
            assert.is_nil(res.headers["content-length"])
            assert.equal("1\n2\n3\n4\n5\n", res.body)
            assert.equal(200, get(client, "/count").status) -- the connection carries on
        end)
    end)

    it("takes a status, and a Content-Length instead of chunks", function()
        local app = loom.app()
        app:get("/len", function(req)
            local out = req:stream{ status = 203, headers = { ["content-length"] = "6" } }
            out:write("abc")
            out:write("def")
        end)
        with_app(app, function(client)
            local res = get(client, "/len")
            assert.equal(203, res.status)
            assert.equal("6", res.headers["content-length"])
            assert.is_nil(res.headers["transfer-encoding"])
            assert.equal("application/octet-stream", res.headers["content-type"])
            assert.equal("abcdef", res.body)
        end)
    end)

    it("lets each piece reach the client before the handler ends", function()
        local app = loom.app()
        local go = loom.event()
        app:get("/live", function(req)
            local out = req:stream{}
            out:write("first;")
            go:wait()
            out:write("second")
        end)
        with_app(app, function(_, srv)
            local st = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st
            assert(st:write("GET /live HTTP/1.1\r\nHost: t\r\n\r\n"))
            local r = testing.reader(st)
            local head = {}
            repeat head[#head + 1] = assert(r:line()) until head[#head] == ""
            assert.equal("6", assert(r:line())) -- the first chunk arrives while the handler waits
            assert.equal("first;", assert(r:line()))
            go:set()
            assert.equal("6", assert(r:line()))
            assert.equal("second", assert(r:line()))
            assert.equal("0", assert(r:line()))
        end)
    end)

    it("waits in out:write while the client does not read (backpressure)", function()
        local app = loom.app()
        local piece = ("x"):rep(256 * 1024)
        local pieces, written, finished = 128, 0, false -- 32 MiB, far more than socket buffers hold
        app:get("/big", function(req)
            local out = req:stream{ headers = { ["content-type"] = "application/octet-stream" } }
            for _ = 1, pieces do
                if not out:write(piece) then return end
                written = written + 1
            end
            finished = true
        end)
        with_app(app, function(_, srv)
            local st = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st
            assert(st:write("GET /big HTTP/1.1\r\nHost: t\r\n\r\n"))
            -- the client reads nothing. No event says the handler is parked in out:write:
            -- wait until `written` has not moved for 20 loop turns and 0.2 s (a handler
            -- still filling the socket buffers moves it at each turn, however slow the
            -- machine), or until it has finished
            local last, since, turns = -1, loom.now(), 0
            timing.poll(function()
                if written ~= last then last, since, turns = written, loom.now(), 0 end
                turns = turns + 1
                return finished or (turns >= 20 and loom.now() - since >= 0.2)
            end, 2, "the handler's writes to stop")
            assert.is_false(finished)
            -- it waits, it does not spin or buffer
            assert(written < pieces / 2, "the handler wrote " .. written .. " pieces unread")
            local res = assert(testing.reader(st):response())
            assert.equal(#piece * pieces, #res.body)
            assert.is_true(finished)
        end, { timeout = 30 })
    end)

    it("out:write returns nil, err once the client has gone", function()
        local app = loom.app()
        local result, done = nil, loom.event()
        app:get("/forever", function(req)
            local out = req:stream{}
            local ok, err
            repeat
                ok, err = out:write(("y"):rep(64 * 1024))
            until not ok
            result = err
            done:set()
        end)
        with_app(app, function(_, srv)
            local st = assert(loom.connect("127.0.0.1", srv.port))
            assert(st:write("GET /forever HTTP/1.1\r\nHost: t\r\n\r\n"))
            assert(st:read())
            st:close()
            done:wait()
            assert.matches("^closed", result)
        end)
    end)

    it("stream misuse raises", function()
        local app = loom.app()
        local errs = {}
        app:get("/twice", function(req)
            req:stream{}
            errs.twice = select(2, pcall(req.stream, req, {}))
        end)
        app:get("/arg", function(req)
            errs.arg = select(2, pcall(req.stream, req, "x"))
            errs.status = select(2, pcall(req.stream, req, { status = 42 }))
            return "ok"
        end)
        with_app(app, function(client)
            get(client, "/twice")
            get(client, "/arg")
            assert.matches("already started", errs.twice)
            assert.matches("bad argument #1 to 'stream'", errs.arg)
            assert.matches("invalid status", errs.status)
        end)
    end)
end)

describe("app: the request", function()
    it("has method, path, query, headers (any case), params, version, remote and remote_port", function()
        local app = loom.app()
        local seen = {}
        app:post("/r/{id}", function(req)
            seen[#seen + 1] = {
                method = req.method, path = req.path, query = req.query, id = req.params.id,
                query_all = req.query_all,
                version = req.version, remote = req.remote, remote_port = req.remote_port,
                ua = req.headers["user-agent"], UA = req.headers["User-Agent"], multi = req.headers["x-multi"],
                cookie = req.headers.cookie,
            }
            return "ok"
        end)
        with_app(app, function(client, srv)
            assert(client:post("/r/5?a=1&b=two+words&a=3&flag", {
                body = "", headers = { ["User-Agent"] = "spec/1", ["X-Multi"] = { "one", "two" },
                    Cookie = { "a=1", "b=2" } },
            }))
            local s = seen[1]
            assert.equal("POST", s.method)
            assert.equal("/r/5", s.path)
            assert.same({ a = "3", b = "two words", flag = "" }, s.query)
            assert.same({ a = { "1", "3" }, b = { "two words" }, flag = { "" } }, s.query_all)
            assert.equal("5", s.id)
            assert.equal("1.1", s.version)
            assert.equal("127.0.0.1", s.remote)
            assert.equal("spec/1", s.ua)
            assert.equal("spec/1", s.UA)
            assert.equal("one, two", s.multi)
            assert.equal("a=1; b=2", s.cookie)
            assert.equal("integer", math.type(s.remote_port))
            assert(s.remote_port > 0 and s.remote_port ~= srv.port)
            -- a second connection comes from another port
            local other <close> = testing.client(srv.port)
            assert(other:post("/r/6", { body = "" }))
            assert.are_not.equal(s.remote_port, seen[2].remote_port)
        end)
    end)

    it("gives req.query_all after the handler returned, when it read req.query", function()
        local app = loom.app()
        local saved
        app:get("/q", function(req)
            saved = req
            return { json = req.query }
        end)
        with_app(app, function(client)
            assert.same({ x = "1", y = "", ["a b"] = "c+d" }, get(client, "/q?x=2&x=%31&=z&&y&a+b=c%2Bd"):json())
            assert.same({ x = { "2", "1" }, y = { "" }, ["a b"] = { "c+d" } }, saved.query_all)
        end)
    end)

    it("keeps req.target past the handler when it read req.query, short target or long", function()
        -- a target of up to 47 bytes is kept in the request's box, a longer one in the table
        -- (src/http1/http_request.c); one whose query was not read is gone with the request
        local app = loom.app()
        local saved = {}
        app:get("/q/{n}", function(req)
            saved[req.params.n] = req
            if req.params.n ~= "none" then return { json = req.query } end
            return "none"
        end)
        local long = "/q/long?" .. string.rep("k", 40) .. "=v&x=1"
        with_app(app, function(client)
            assert.same({ a = "1" }, get(client, "/q/short?a=1"):json())
            assert.same({ [string.rep("k", 40)] = "v", x = "1" }, get(client, long):json())
            assert.equal("none", get(client, "/q/none?a=1").body)
            assert.equal("/q/short?a=1", saved.short.target)
            assert.same({ a = { "1" } }, saved.short.query_all)
            assert.equal(long, saved.long.target)
            assert.same({ x = { "1" }, [string.rep("k", 40)] = { "v" } }, saved.long.query_all)
            local ok, err = pcall(function() return saved.none.target end)
            assert.is_false(ok)
            assert.matches("the request is finished", err)
        end)
    end)

    it("has an empty params table and query table when there are none", function()
        local app = loom.app()
        app:get("/", function(req) return { json = { p = next(req.params) == nil, q = next(req.query) == nil } } end)
        with_app(app, function(client)
            assert.same({ p = true, q = true }, get(client, "/"):json())
        end)
    end)

    it("req:text() gives the body; twice gives it again", function()
        local app = loom.app()
        app:post("/t", function(req)
            local a = req:text()
            local b = req:text()
            return a .. "|" .. b
        end)
        with_app(app, function(client)
            assert.equal("abc|abc", assert(client:post("/t", { body = "abc" })).body)
            assert.equal("xyz|xyz", assert(client:post("/t", { body = { "x", "y", "z" } })).body) -- chunked
            assert.equal("|", assert(client:post("/t")).body)
        end)
    end)

    it("req:json() decodes the body, or gives nil, err", function()
        local app = loom.app()
        app:post("/j", function(req)
            local v, err = req:json()
            if not v then return { status = 400, text = err } end
            return { json = { got = v } }
        end)
        with_app(app, function(client)
            assert.same({ got = { a = { 1, 2 }, s = "x" } }, assert(client:post("/j", { json = { a = { 1, 2 }, s = "x" } })):json())
            local res = assert(client:post("/j", { body = "{not json", headers = { ["content-type"] = "application/json" } }))
            assert.equal(400, res.status)
            assert.matches("^http: invalid JSON body", res.body)
        end)
    end)

    it("req:form() decodes an urlencoded body", function()
        local app = loom.app()
        app:post("/f", function(req) return { json = req:form() } end)
        with_app(app, function(client)
            local res = assert(client:post("/f", { form = { name = "Ann Lee", note = "a&b=c", empty = "" } }))
            assert.same({ name = "Ann Lee", note = "a&b=c", empty = "" }, res:json())
            res = assert(client:post("/f", { body = "x=1+2&y=%41%42",
                headers = { ["content-type"] = "application/x-www-form-urlencoded" } }))
            assert.same({ x = "1 2", y = "AB" }, res:json())
        end)
    end)

    it("req:chunks() gives the body piece by piece as it arrives", function()
        local app = loom.app()
        local pieces, took_first = {}, loom.event()
        app:post("/c", function(req)
            local total = 0
            for chunk in req:chunks() do
                pieces[#pieces + 1] = chunk
                took_first:set()
                total = total + #chunk
            end
            return tostring(total)
        end)
        with_app(app, function(_, srv)
            local st = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st
            assert(st:write("POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"))
            -- taken before the rest was sent: a handler given the body only whole never
            -- sets `took_first`
            assert(loom.timeout(timing.guard(0), took_first.wait, took_first), "the first chunk was not given")
            assert.same({ "first" }, pieces)
            assert(st:write("6\r\nsecond\r\n0\r\n\r\n"))
            local res = assert(testing.reader(st):response())
            assert.equal("11", res.body)
            assert.equal("firstsecond", table.concat(pieces))
        end)
    end)

    it("req:text() fails with limit: over max_body; the answer is 413", function()
        local app = loom.app{ max_body = 8 }
        local err
        app:post("/t", function(req)
            local body
            body, err = req:text()
            return body or "no body"
        end)
        with_app(app, function(client)
            local res = assert(client:post("/t", { body = { "12345", "67890" } }))
            assert.equal(413, res.status)
            assert.matches("^limit: ", err)
        end)
    end)
end)

-- A directory of files for app:static, and a file beside it that must stay out of reach.
local function site()
    local root = os.tmpname()
    os.remove(root)
    local dir = root .. "/public"
    assert(os.execute(("mkdir -p %s/sub %s/empty %s/docs"):format(dir, dir, dir)))
    local function put(path, data)
        local f = assert(io.open(path, "wb"))
        f:write(data)
        f:close()
    end
    put(dir .. "/index.html", "<h1>home</h1>")
    put(dir .. "/style.css", "body { color: red }")
    put(dir .. "/app.js", "console.log(1)")
    put(dir .. "/logo.png", "\137PNG\r\n\26\n" .. ("\0"):rep(100))
    put(dir .. "/data.json", '{"k":1}')
    put(dir .. "/blob.bin", "0123456789")
    put(dir .. "/hello world.txt", "spaced")
    put(dir .. "/sub/index.html", "<p>sub</p>")
    put(dir .. "/docs/readme.txt", "read me")
    put(root .. "/secret.txt", "top secret")
    return dir, root
end

describe("app: static files", function()
    local dir, root
    setup(function() dir, root = site() end)
    teardown(function() os.execute("rm -rf " .. root) end)

    local function static_app()
        local app = loom.app()
        app:static("/s", dir)
        app:get("/s-other", function() return "a route beside the prefix" end)
        return app
    end

    it("serves files with their content types", function()
        with_app(static_app(), function(client)
            local types = {
                ["/s/index.html"] = "text/html; charset=utf-8",
                ["/s/style.css"] = "text/css; charset=utf-8",
                ["/s/app.js"] = "text/javascript; charset=utf-8",
                ["/s/logo.png"] = "image/png",
                ["/s/data.json"] = "application/json",
                ["/s/blob.bin"] = "application/octet-stream",
                ["/s/docs/readme.txt"] = "text/plain; charset=utf-8",
            }
            for path, ct in pairs(types) do
                local res = get(client, path)
                assert.equal(200, res.status, path)
                assert.equal(ct, res.headers["content-type"], path)
                assert.equal(tostring(#res.body), res.headers["content-length"])
            end
            assert.equal("body { color: red }", get(client, "/s/style.css").body)
            assert.equal("spaced", get(client, "/s/hello%20world.txt").body)
            assert.equal("a route beside the prefix", get(client, "/s-other").body)
        end)
    end)

    it("serves index.html for a directory and redirects a directory without its slash", function()
        with_app(static_app(), function(client)
            assert.equal("<h1>home</h1>", get(client, "/s/").body)
            assert.equal("<p>sub</p>", get(client, "/s/sub/").body)
            local res = get(client, "/s/sub")
            assert.equal(301, res.status)
            assert.equal("/s/sub/", res.headers.location)
            res = get(client, "/s")
            assert.equal(301, res.status)
            assert.equal("/s/", res.headers.location)
            assert.equal(404, get(client, "/s/empty/").status) -- no index.html
            assert.equal(404, get(client, "/s/nope.txt").status)
        end)
    end)

    it("never redirects off-site: a directory reached with a doubled slash", function()
        local app = loom.app()
        app:static("/", dir)
        with_app(app, function(client)
            local res = get(client, "//sub")
            assert.equal(301, res.status)
            assert.equal("/sub/", res.headers.location) -- not //sub/, a link to the host "sub"
        end)
    end)

    it("lets no path escape the directory", function()
        with_app(static_app(), function(client)
            local tries = {
                "/s/../secret.txt", "/s/%2e%2e/secret.txt", "/s/%2E%2E/secret.txt", "/s/..%2fsecret.txt",
                "/s/..%2Fsecret.txt", "/s/sub/..%2f..%2fsecret.txt", "/s/sub/../../secret.txt",
                "/s/.%2e/secret.txt", "/s/..%5csecret.txt", "/s/%00/../secret.txt", "/s/style.css%00.png",
                "/s/" .. root:gsub("^/", "") .. "/secret.txt",
            }
            for _, p in ipairs(tries) do
                local res = get(client, p)
                assert.equal(404, res.status, p)
                assert.is_nil(res.body:find("top secret"), p)
            end
        end)
    end)

    it("answers If-None-Match and If-Modified-Since with 304", function()
        with_app(static_app(), function(client)
            local res = get(client, "/s/style.css")
            local etag, lm = res.headers.etag, res.headers["last-modified"]
            assert.matches('^"[%w-]+"$', etag)
            assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", lm)
            local nm = get(client, "/s/style.css", { headers = { ["If-None-Match"] = etag } })
            assert.equal(304, nm.status)
            assert.equal("", nm.body)
            assert.equal(etag, nm.headers.etag)
            assert.equal(304, get(client, "/s/style.css", { headers = { ["If-None-Match"] = '"x", ' .. etag } }).status)
            assert.equal(200, get(client, "/s/style.css", { headers = { ["If-None-Match"] = '"other"' } }).status)
            assert.equal(304, get(client, "/s/style.css", { headers = { ["If-Modified-Since"] = lm } }).status)
            -- If-None-Match wins over If-Modified-Since
            assert.equal(200, get(client, "/s/style.css",
                { headers = { ["If-None-Match"] = '"other"', ["If-Modified-Since"] = lm } }).status)
        end)
    end)

    it("serves one byte range with 206, and 416 when it cannot be met", function()
        with_app(static_app(), function(client)
            local function range(r, extra)
                local h = { Range = r }
                for k, v in pairs(extra or {}) do h[k] = v end
                return get(client, "/s/blob.bin", { headers = h })
            end
            local res = range("bytes=2-5")
            assert.equal(206, res.status)
            assert.equal("2345", res.body)
            assert.equal("bytes 2-5/10", res.headers["content-range"])
            assert.equal("4", res.headers["content-length"])
            res = range("bytes=7-")
            assert.equal("789", res.body)
            assert.equal("bytes 7-9/10", res.headers["content-range"])
            res = range("bytes=-3")
            assert.equal("789", res.body)
            res = range("bytes=8-100")
            assert.equal("89", res.body)
            assert.equal("bytes 8-9/10", res.headers["content-range"])
            res = range("bytes=10-")
            assert.equal(416, res.status)
            assert.equal("bytes */10", res.headers["content-range"])
            assert.equal(416, range("bytes=-0").status)
            -- RFC 9110 14.2: an invalid range is answered 416 too
            assert.equal(416, range("bytes=5-2").status)
            assert.equal(416, range("bytes=x-y").status)
            -- several ranges or another unit: the whole file
            for _, r in ipairs({ "bytes=0-1,4-5", "lines=1-2" }) do
                res = range(r)
                assert.equal(200, res.status, r)
                assert.equal("0123456789", res.body, r)
            end
            -- blanks are parsed in linear time: a backtracking pattern spent minutes on these
            assert.equal(200, range("bytes=" .. string.rep(" ", 8000) .. ",0-1").status)
            assert.equal(206, range("bytes =" .. string.rep(" ", 8000) .. "2 - 5").status)
            -- If-Range: the range only while the file is the one the client has
            local full = get(client, "/s/blob.bin")
            local etag, lm = full.headers.etag, full.headers["last-modified"]
            assert.equal(206, range("bytes=0-1", { ["If-Range"] = etag }).status)
            assert.equal(206, range("bytes=0-1", { ["If-Range"] = lm }).status)
            for _, v in ipairs({ '"changed"', "W/" .. etag, "Thu, 01 Jan 1970 00:00:00 GMT" }) do
                res = range("bytes=0-1", { ["If-Range"] = v })
                assert.equal(200, res.status, v)
                assert.equal("0123456789", res.body)
            end
        end)
    end)

    it("answers HEAD with GET's headers and no body", function()
        with_app(static_app(), function(client)
            local res = assert(client:head("/s/logo.png"))
            assert.equal(200, res.status)
            assert.equal("image/png", res.headers["content-type"])
            assert.equal("108", res.headers["content-length"])
            assert.is_not_nil(res.headers.etag)
            assert.equal("", res.body)
            assert.equal(108, #get(client, "/s/logo.png").body)
        end)
    end)

    it("serves from the root prefix", function()
        local app = loom.app()
        app:static("/", dir)
        with_app(app, function(client)
            assert.equal("<h1>home</h1>", get(client, "/").body)
            assert.equal("console.log(1)", get(client, "/app.js").body)
            assert.equal(405, assert(client:post("/app.js", { body = "" })).status)
        end)
    end)

    it("streams a large file whole", function()
        local path = dir .. "/large.bin"
        local f = assert(io.open(path, "wb"))
        local block = {}
        for i = 0, 255 do block[#block + 1] = string.char(i) end
        block = table.concat(block):rep(4 * 1024) -- 1 MiB
        f:write(block, block, "tail")
        f:close()
        with_app(static_app(), function(client)
            local res = get(client, "/s/large.bin")
            assert.equal(2 * #block + 4, #res.body)
            assert(res.body == block .. block .. "tail", "the body differs from the file")
        end)
        os.remove(path)
    end)
end)

describe("app: middleware over every kind of answer", function()
    local dir, root
    setup(function() dir, root = site() end)
    teardown(function() os.execute("rm -rf " .. root) end)

    -- Adds one header before next (req.response_headers) and one after, and notes the
    -- answer next() gave for each path.
    local function header_app(seen)
        local app = loom.app()
        app:use(function(req, next)
            req.response_headers["x-early"] = "1"
            local res = next(req)
            seen[req.path] = { status = res.status, streamed = res.streamed,
                type = res.headers and res.headers["content-type"] }
            res.headers = res.headers or {}
            res.headers["x-served-by"] = "loom"
            return res
        end)
        app:static("/static", dir)
        app:get("/s", function() return "plain" end)
        app:get("/t", function() return { status = 201, json = { k = 1 } } end)
        app:get("/n", function() end)
        app:get("/f", function() return { file = dir .. "/style.css" } end)
        app:get("/gone", function() return { file = dir .. "/nope.css" } end)
        app:get("/stream", function(req)
            local out = assert(req:stream{ status = 202, headers = { ["content-type"] = "text/plain" } })
            out:write("a")
            out:write("b")
        end)
        return app
    end

    it("next() gives the real status of each, and headers set around next reach the wire", function()
        local seen = {}
        with_app(header_app(seen), function(client)
            local want = {
                ["/s"] = { 200, "plain" }, ["/t"] = { 201, '{"k":1}' }, ["/n"] = { 204, "" },
                ["/f"] = { 200, "body { color: red }" }, ["/gone"] = { 404, "Not Found" },
                ["/static/style.css"] = { 200, "body { color: red }" },
                ["/static/nope.css"] = { 404, "Not Found" },
            }
            for path, w in pairs(want) do
                local res = get(client, path)
                assert.equal(w[1], res.status, path)
                assert.equal(w[2], res.body, path)
                assert.equal("loom", res.headers["x-served-by"], path)
                assert.equal("1", res.headers["x-early"], path)
                assert.equal(w[1], seen[path].status, path)
                assert.is_nil(seen[path].streamed, path)
            end
            assert.equal("text/css; charset=utf-8", seen["/f"].type)
            assert.equal("text/css; charset=utf-8", seen["/static/style.css"].type)
            -- conditional and range answers of files show their own statuses
            local etag = get(client, "/static/style.css").headers.etag
            local res = get(client, "/static/style.css", { headers = { ["if-none-match"] = etag } })
            assert.equal(304, res.status)
            assert.equal("loom", res.headers["x-served-by"])
            assert.equal(304, seen["/static/style.css"].status)
            res = get(client, "/static/blob.bin", { headers = { range = "bytes=2-5" } })
            assert.equal(206, res.status)
            assert.equal("2345", res.body)
            assert.equal("loom", res.headers["x-served-by"])
            assert.equal(206, seen["/static/blob.bin"].status)
            -- a stream's head went out in the handler: the early header is in it, and
            -- next() says what was sent
            res = get(client, "/stream")
            assert.equal(202, res.status)
            assert.equal("ab", res.body)
            assert.equal("1", res.headers["x-early"])
            assert.is_nil(res.headers["x-served-by"])
            assert.same({ status = 202, streamed = true, type = "text/plain" }, seen["/stream"])
        end)
    end)

    it("a static file's headers reach curl too", function()
        local seen = {}
        local app = header_app(seen)
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local url = ("http://127.0.0.1:%d/static/index.html"):format(srv.port)
            -- curl runs beside the loop (core.process_spawn), its output to a file
            local out = os.tmpname()
            local sh = assert(core.process_spawn("/bin/sh",
                { "-c", "curl -sS --max-time 10 -D - -o /dev/null " .. url .. " >" .. out .. " 2>&1" }))
            assert.same({ 0, nil }, { sh:wait() })
            local f = assert(io.open(out, "rb"))
            local head = f:read("a")
            f:close()
            os.remove(out)
            assert.matches("^HTTP/1.1 200", head)
            assert.matches("\r\n[Xx]%-[Ss]erved%-[Bb]y: loom\r\n", head)
            assert.matches("\r\n[Xx]%-[Ee]arly: 1\r\n", head)
            assert.equal(200, seen["/static/index.html"].status)
        end)
    end)

    it("a handler's error is raised through next, and pcall(next, req) catches it", function()
        local app = loom.app()
        local caught
        app:use(function(req, next)
            local ok, res = pcall(next, req)
            if not ok then
                caught = res
                return { status = 500, json = { error = "internal" } }
            end
            return res
        end)
        app:get("/boom", function() error({ code = 42 }) end)
        with_app(app, function(client)
            local res = get(client, "/boom")
            assert.equal(500, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ code = 42 }, caught)
        end)
    end)

    it("the content type of a rewritten answer follows its new body", function()
        local app = loom.app()
        app:use(function(req, next)
            local res = next(req)
            if req.path == "/same" then
                res.json = { wrapped = res.body } -- on the very table next() gave
            elseif req.path == "/cleared" then
                res.body, res.html = nil, "<b>" .. res.body .. "</b>"
            elseif res.status >= 400 then
                return { status = res.status, headers = res.headers, json = { error = res.body } }
            end
            return res
        end)
        app:get("/same", function() return "plain" end)
        app:get("/cleared", function() return "plain" end)
        app:get("/own", function() return { headers = { ["content-type"] = "text/x-mine" }, text = "mine" } end)
        with_app(app, function(client)
            local res = get(client, "/missing")
            assert.equal(404, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ error = "Not Found" }, res:json())
            res = get(client, "/same")
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ wrapped = "plain" }, res:json())
            res = get(client, "/cleared")
            assert.equal("text/html; charset=utf-8", res.headers["content-type"])
            assert.equal("<b>plain</b>", res.body)
            res = get(client, "/own") -- a type the handler chose stays
            assert.equal("text/x-mine", res.headers["content-type"])
        end)
    end)
end)

describe("app: not_found and on_error", function()
    it("answer unknown paths and handler errors, middleware seeing both", function()
        local app = loom.app()
        local seen = {}
        app:use(function(req, next)
            local res = next(req)
            seen[#seen + 1] = res.status
            return res
        end)
        app:not_found(function(req) return { status = 404, json = { error = "no route", path = req.path } } end)
        app:on_error(function(req, err)
            return { status = 500, json = { error = "internal", path = req.path, what = type(err) } }
        end)
        app:get("/boom", function() error("kaput") end)
        app:get("/obj", function() error({ code = 1 }) end)
        app:post("/only-post", function() return "posted" end)
        with_app(app, function(client)
            local res = get(client, "/nope")
            assert.equal(404, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ error = "no route", path = "/nope" }, res:json())
            res = get(client, "/boom")
            assert.equal(500, res.status)
            assert.same({ error = "internal", path = "/boom", what = "string" }, res:json())
            res = get(client, "/obj")
            assert.same({ error = "internal", path = "/obj", what = "table" }, res:json())
            res = get(client, "/only-post") -- 405 keeps its plain answer and Allow
            assert.equal(405, res.status)
            assert.equal("POST", res.headers.allow)
            assert.same({ 404, 500, 500, 405 }, seen)
        end)
    end)

    it("work without middleware, and catch a middleware's error too", function()
        local app = loom.app()
        app:not_found(function() return "nothing here" end)
        app:on_error(function() return { status = 503, text = "sorry" } end)
        app:get("/boom", function() error("kaput") end)
        app:get("/fine", function() return "fine" end)
        with_app(app, function(client)
            assert.equal("nothing here", get(client, "/nope").body)
            local res = get(client, "/boom")
            assert.equal(503, res.status)
            assert.equal("sorry", res.body)
            assert.equal("fine", get(client, "/fine").body)
        end)
        local app2 = loom.app()
        app2:use(function(req, next)
            if req.path == "/mw" then error("middleware broke") end
            return next(req)
        end)
        app2:on_error(function(_, err) return { status = 500, text = "handled: " .. tostring(err):match("broke") } end)
        app2:get("/mw", function() return "never" end)
        with_app(app2, function(client)
            local res = get(client, "/mw")
            assert.equal(500, res.status)
            assert.equal("handled: broke", res.body)
        end)
    end)

    it("an error handler that raises gives the plain 500", function()
        local app = loom.app()
        app:on_error(function() error("the handler broke too") end)
        app:get("/boom", function() error("kaput") end)
        with_app(app, function(client)
            local res = get(client, "/boom")
            assert.equal(500, res.status)
            assert.equal("Internal Server Error", res.body)
        end)
    end)

    it("misuse raises", function()
        local app = loom.app()
        assert.error_matches(function() app:not_found("x") end, "bad argument #1 to 'not_found'")
        assert.error_matches(function() app:on_error() end, "bad argument #1 to 'on_error'")
    end)
end)

describe("app: static files that fall through", function()
    local dir, root
    setup(function() dir, root = site() end)
    teardown(function() os.execute("rm -rf " .. root) end)

    it("serve a file when there is one, and go on to the routes when not (an SPA)", function()
        local app = loom.app()
        app:static("/", dir, { fallthrough = true })
        app:get("/api/users/{id}", function(req) return { json = { id = req.params.id } } end)
        app:get("/style.css", function() return "a route the file shadows" end)
        app:post("/app.js", function() return "posted" end)
        app:not_found(function(req)
            if req.method == "GET" and not req.path:find("^/api/") then return { file = dir .. "/index.html" } end
            return { status = 404, json = { error = "not found" } }
        end)
        with_app(app, function(client)
            assert.equal("<h1>home</h1>", get(client, "/").body)
            assert.equal("body { color: red }", get(client, "/style.css").body)
            assert.equal("<p>sub</p>", get(client, "/sub/").body)
            assert.equal(301, get(client, "/sub").status)
            assert.same({ id = "7" }, get(client, "/api/users/7"):json())
            assert.equal("posted", assert(client:post("/app.js", { body = "" })).body)
            local res = get(client, "/app/deep/link") -- an SPA's client-side route
            assert.equal(200, res.status)
            assert.equal("text/html; charset=utf-8", res.headers["content-type"])
            assert.equal("<h1>home</h1>", res.body)
            res = get(client, "/api/nope")
            assert.equal(404, res.status)
            assert.same({ error = "not found" }, res:json())
            assert.equal("<h1>home</h1>", get(client, "/../secret.txt").body) -- never the file above
        end)
    end)

    it("under a prefix, only paths below it; without the option, a 404", function()
        local app = loom.app()
        app:static("/assets", dir, { fallthrough = true })
        app:static("/plain", dir)
        app:get("/assets/{name}", function(req) return "route " .. req.params.name end)
        app:get("/assetsX", function() return "beside" end)
        with_app(app, function(client)
            assert.equal("read me", get(client, "/assets/docs/readme.txt").body)
            assert.equal("route nope.txt", get(client, "/assets/nope.txt").body)
            assert.equal("beside", get(client, "/assetsX").body)
            assert.equal(404, get(client, "/plain/nope.txt").status)
        end)
        assert.error_matches(function() app:static("/x", dir, { fallthrough = 1 }) end, "option 'fallthrough'")
        assert.error_matches(function() app:static("/x", dir, { fall = true }) end, "fall")
    end)
end)

describe("app: an error object whose __tostring raises", function()
    it("still gets its 500, with handler_timeout off", function()
        local app = loom.app{ handler_timeout = false }
        app:get("/bad", function()
            error(setmetatable({}, { __tostring = function() error("x") end }))
        end)
        app:get("/yields", function()
            error(setmetatable({}, { __tostring = function() coroutine.yield() end }))
        end)
        with_app(app, function(client)
            for _, path in ipairs({ "/bad", "/yields" }) do
                local res = get(client, path, { timeout = 5 })
                assert.equal(500, res.status)
                assert.equal("Internal Server Error", res.body)
            end
        end, { timeout = 8 })
    end)
end)

describe("app: srv:wait and the run hooks", function()
    it("srv:wait returns once the requests in flight are answered", function()
        local app = loom.app()
        local began, finished = loom.event(), false
        app:get("/slow", function()
            began:set()
            loom.sleep(0.2)
            finished = true
            return "slow"
        end)
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local client <close> = assert(testing.client(srv.port))
            local req = loom.spawn(function() return get(client, "/slow").body end)
            began:wait()
            srv:close()
            assert.is_false(finished)
            srv:wait()
            assert.is_true(finished)
            assert.same({ true, "slow" }, { req:join() })
            srv:wait() -- at once now
        end)
    end)

    it("an on_startup error ends app:run before it listens; misuse raises", function()
        local app = loom.app()
        local order = {}
        app:on_startup(function(a) order[#order + 1] = a == app end)
        app:on_startup(function() error("no database", 0) end)
        assert.error_matches(function() app:run{ host = "127.0.0.1", port = 0, access_log = false } end,
            "no database")
        assert.same({ true }, order)
        assert.error_matches(function() app:on_startup(1) end, "bad argument #1 to 'on_startup'")
        assert.error_matches(function() app:on_shutdown() end, "bad argument #1 to 'on_shutdown'")
        assert.error_matches(function() app:run{ cancel_tasks = "no" } end, "option 'cancel_tasks'")
    end)
end)

describe("app: middleware around a websocket", function()
    it("sees the upgrade as a 101 that was sent", function()
        local app = loom.app()
        local seen, ended = nil, loom.event()
        app:use(function(req, next)
            local res = next(req)
            seen = { status = res.status, streamed = res.streamed, upgrade = res.headers and res.headers.upgrade }
            ended:set()
            return res
        end)
        app:ws("/echo", function(ws)
            for msg in ws:each() do ws:send(msg) end
        end)
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local ws <close> = assert(loom.websocket(("ws://127.0.0.1:%d/echo"):format(srv.port)))
            assert(ws:send("x"))
            assert.equal("x", ws:receive())
            ws:close()
            ended:wait() -- the handler ends after the close
            assert.same({ status = 101, streamed = true, upgrade = "websocket" }, seen)
        end)
    end)
end)

describe("app: a time limit on ws:receive with loom.timeout", function()
    it("gives nil, 'timeout' and leaves the websocket usable", function()
        local app = loom.app()
        app:ws("/echo", function(ws)
            for msg in ws:each() do ws:send(msg) end
        end)
        run(function()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local ws <close> = assert(loom.websocket(("ws://127.0.0.1:%d/echo"):format(srv.port)))
            assert.same({ nil, "timeout" }, { loom.timeout(0.05, ws.receive, ws) })
            assert(ws:send("after the timeout"))
            assert.same({ "after the timeout", "text" }, { ws:receive() })
            assert.same({ nil, "timeout" }, { loom.timeout(0.05, ws.receive, ws) })
            assert(ws:send("again"))
            assert.same({ "again", "text" }, { ws:receive() })
            ws:close()
        end)
    end)

    it("keeps the fragments a timed-out receive had taken in", function()
        run(function()
            local got = loom.queue()
            local rendezvous <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                got:put(tonumber(st:read_line()))
                st:close()
            end })
            local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
            local peer = assert(core.process_spawn("/usr/bin/python3",
                { here .. "/fixtures/ws_fragment_peer.py", tostring(rendezvous.port) }))
            local port = assert(loom.timeout(10, got.get, got))
            local ws <close> = assert(loom.websocket(("ws://127.0.0.1:%d/"):format(port)))
            for _ = 1, 2 do
                -- the first fragment arrives, the last only after our message
                assert.same({ nil, "timeout" }, { loom.timeout(0.2, ws.receive, ws) })
                assert(ws:send("more"))
                assert.same({ "first", "text" }, { ws:receive() })
            end
            ws:close()
            assert.same({ 0, nil }, { peer:wait() })
        end)
    end)
end)

describe("app: misuse raises, naming the argument", function()
    it("in route registration", function()
        local app = loom.app()
        local f = function() end
        assert.error_matches(function() app:get(1, f) end, "bad argument #1 to 'get' %(string expected, got number%)")
        assert.error_matches(function() app:post("/x", "f") end, "bad argument #2 to 'post' %(function expected, got string%)")
        assert.error_matches(function() app:route(nil, "/x", f) end, "bad argument #1 to 'route'")
        assert.error_matches(function() app:any("/x") end, "bad argument #2 to 'any'")
        assert.error_matches(function() app:use("mw") end, "bad argument #1 to 'use' %(function expected, got string%)")
        assert.error_matches(function() app:static(1, "dir") end, "bad argument #1 to 'static'")
        assert.error_matches(function() app:static("/s") end, "bad argument #2 to 'static'")
    end)

    it("in loom.app and app:listen options", function()
        assert.error_matches(function() loom.app{ max_body = "x" } end,
            "bad argument #1 to 'app' %(option 'max_body': number expected, got string%)")
        assert.error_matches(function() loom.app{ header_timeout = -1 } end, "option 'header_timeout': must not be negative")
        assert.error_matches(function() loom.app("big") end, "bad argument #1 to 'app' %(table expected, got string%)")
        local app = loom.app()
        assert.error_matches(function() app:listen{ port = "80" } end, "option 'port'")
        assert.error_matches(function() app:listen{ port = 70000 } end, "option 'port'")
        assert.error_matches(function() app:listen{ host = 1 } end, "option 'host'")
        assert.error_matches(function() app:listen(8080) end, "bad argument #1 to 'listen'")
        -- a misspelt option is an error, not a limit silently left at its default
        assert.error_matches(function() loom.app{ max_bdy = 10 } end,
            "bad argument #1 to 'app' %(unknown option 'max_bdy'%)")
        assert.error_matches(function() app:listen{ prot = 80 } end,
            "bad argument #1 to 'listen' %(unknown option 'prot'%)")
        assert.error_matches(function() app:run{ worker = 2 } end,
            "bad argument #1 to 'run' %(unknown option 'worker'%)")
    end)

    it("listen failures return nil, err", function()
        run(function()
            local a = loom.app()
            local srv = assert(a:listen{ host = "127.0.0.1", port = 0 })
            local dup, err = loom.app():listen{ host = "127.0.0.1", port = srv.port }
            assert.is_nil(dup)
            assert.matches("^listen: ", err)
            srv:close()
        end)
    end)
end)

describe("loom.testing's reader", function()
    it("trims header values in linear time, however long their runs of blanks", function()
        -- ":[ \t]*(.-)[ \t]*$" retried the tail from each blank: a 60 KB run took 6 s, this
        -- 40 KB one 3 s (each line within the reader's 64 KiB)
        local blanks, pad = (" \t"):rep(20000), (" \t"):rep(5000)
        run(function()
            local srv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                st:write("HTTP/1.1 200 OK\r\nX-Run: a" .. blanks .. "b\r\nX-Pad: " .. pad .. "v w" .. pad
                    .. "\r\nX-Blank:" .. pad .. "\r\nX-None:\r\nContent-Length: 2\r\n\r\nok")
                st:close()
            end })
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            local t0 = os.clock()
            local res = assert(testing.reader(st):response())
            assert.is_true(os.clock() - t0 < 1, tostring(os.clock() - t0))
            assert.equal("a" .. blanks .. "b", res.headers["x-run"])
            assert.equal("v w", res.headers["x-pad"])
            assert.equal("", res.headers["x-blank"])
            assert.equal("", res.headers["x-none"])
            assert.equal("ok", res.body)
        end)
    end)
end)
