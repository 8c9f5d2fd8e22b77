-- multipart/form-data over real sockets: req:parts() and req:form() on the server, the
-- client's `multipart` option, with loom, curl -F and Python requests as the clients, and
-- malformed bodies written raw (see docs/web.md, "multipart/form-data").
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local core = require "loom.core"

local TMP = os.getenv("TMPDIR") or "/tmp"

local function tmpfile(tag)
    return ("%s/loom-mp-%d-%s-%s"):format(TMP, core.process_pid and core.process_pid() or 0, tag,
        loom.crypto.hex(loom.crypto.random(4)))
end

local function write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
end

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- Bytes of every value 0-255, repeated up to n bytes, with CRLF-- runs that look like a
-- delimiter's start.
local function binary(n)
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    local unit = table.concat(t) .. "\r\n--\r\n-" .. "\r\n--loom"
    return unit:rep(n // #unit + 1):sub(1, n)
end

-- Runs body(srv, base) with app listening on 127.0.0.1, port 0.
local function serve(app, body)
    run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        return body(srv, ("http://127.0.0.1:%d"):format(srv.port))
    end)
end

-- Runs a shell command beside the loop; its exit code.
local function sh(cmd)
    local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
    return p:wait()
end

-- A raw connection and a reader over it.
local function open(srv)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    return st, testing.reader(st)
end

local function exchange(srv, wire)
    local st, r = open(srv)
    local _ <close> = st
    assert(st:write(wire))
    return assert(r:response()), r
end

-- A multipart request written by hand: parts is a list of {head lines..., body = s}.
local function raw_request(path, boundary, body, extra)
    return ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=%s\r\n%sContent-Length: %d\r\n\r\n%s")
        :format(path, boundary, extra or "", #body, body)
end

-- An app whose /parts route describes each part and reads it whole.
local function parts_app(opts)
    local app = loom.app(opts)
    app:post("/parts", function(req)
        local out = {}
        for part in req:parts() do
            out[#out + 1] = { name = part.name, filename = part.filename or false, type = part.type or false,
                size = #part:text(), disposition = part.headers["Content-Disposition"] }
        end
        return { json = out }
    end)
    return app
end

describe("multipart: req:parts()", function()
    it("reads parts sent by the loom client: fields, a 5 MiB file from disk, a blob, odd filenames", function()
        local path = tmpfile("big")
        local data = binary(5 * 1024 * 1024 + 17)
        write_file(path, data)
        local app = loom.app{ max_body = 8 * 1024 * 1024 }
        local saved = tmpfile("saved")
        app:post("/up", function(req)
            local out = {}
            for part in req:parts() do
                local e = { name = part.name, filename = part.filename or false, type = part.type or false }
                if part.name == "file" then
                    e.n = part:save(saved)
                else
                    e.text = part:text()
                end
                out[#out + 1] = e
            end
            return { json = out }
        end)
        serve(app, function(_, base)
            local res = assert(loom.fetch(base .. "/up", { method = "POST", multipart = {
                field = "v", n = 42,
                file = { path = path, type = "application/x-test" },
                blob = { body = "bytes", filename = 'a "quoted"\r\nname ü.txt' },
            } }))
            assert.equal(200, res.status)
            local got = res:json()
            os.remove(path)
            assert.same({
                { name = "blob", filename = 'a %22quoted%22%0D%0Aname ü.txt', type = false, text = "bytes" },
                { name = "field", filename = false, type = false, text = "v" },
                { name = "file", filename = path:match("[^/]+$"), type = "application/x-test", n = #data },
                { name = "n", filename = false, type = false, text = "42" },
            }, got)
            assert.is_true(read_file(saved) == data, "the saved file differs")
            os.remove(saved)
        end)
    end)

    it("reads curl -F uploads: fields and files, the saved file byte-equal", function()
        local path, saved = tmpfile("curl"), tmpfile("curl-saved")
        local data = binary(300 * 1024 + 3)
        write_file(path, data)
        local app = loom.app{}
        app:post("/up", function(req)
            local out = {}
            for part in req:parts() do
                if part.filename then
                    assert(part.headers["Content-Type"] == part.type and part.headers["content-disposition"])
                    out[#out + 1] = ("%s:%s:%s:%d"):format(part.name, part.filename, part.type, part:save(saved))
                else
                    out[#out + 1] = part.name .. "=" .. part:text()
                end
            end
            return table.concat(out, ",")
        end)
        serve(app, function(_, base)
            local out = tmpfile("curl-out")
            local cmd = ("curl -sS --max-time 20 -F a=1 -F 'b=two words' -F 'f=@%s;type=image/png;filename=pic.png' %s/up >%s 2>&1")
                :format(path, base, out)
            assert.equal(0, sh(cmd))
            assert.equal(("a=1,b=two words,f:pic.png:image/png:%d"):format(#data), read_file(out))
            assert.is_true(read_file(saved) == data, "the saved file differs")
            os.remove(out)
        end)
        os.remove(path)
        os.remove(saved)
    end)

    it("reads Python requests multipart uploads", function()
        local app = loom.app{}
        app:post("/up", function(req)
            local fields, all = req:form()
            return { json = { fields = fields, all = all } }
        end)
        serve(app, function(_, base)
            local out = tmpfile("py-out")
            local script = ([[
import requests
r = requests.post("%s/up", data={"a": ["1", "2"], "b": "x"},
                  files={"f": ("résumé.txt", b"\x00\r\n--data", "text/plain")}, timeout=20)
open("%s", "w").write(str(r.status_code) + "\n" + r.text)
]]):format(base, out)
            local py = tmpfile("py")
            write_file(py, script)
            assert.equal(0, sh("python3 " .. py))
            local text = read_file(out)
            os.remove(out)
            os.remove(py)
            local status, body = text:match("^(%d+)\n(.*)$")
            assert.equal("200", status)
            local got = loom.json.decode(body)
            assert.same({ a = "2", b = "x", f = { filename = "résumé.txt", type = "text/plain", body = "\0\r\n--data" } },
                got.fields)
            assert.same({ "1", "2" }, got.all.a)
        end)
    end)

    it("skips a part the loop leaves unread, and reads part:chunks() in pieces", function()
        local app = loom.app{}
        app:post("/up", function(req)
            local out = {}
            for part in req:parts() do
                if part.name == "keep" then
                    local n, pieces = 0, 0
                    for s in part:chunks() do
                        n, pieces = n + #s, pieces + 1
                        assert(#s > 0)
                    end
                    out[#out + 1] = ("keep:%d"):format(n)
                else
                    out[#out + 1] = part.name -- not read: skipped by the next turn of the loop
                end
            end
            return table.concat(out, ",")
        end)
        serve(app, function(_, base)
            local res = assert(loom.fetch(base .. "/up", { method = "POST", multipart = {
                a_skip = { body = binary(200000), filename = "s.bin" }, keep = { body = binary(150000) }, z = "last",
            } }))
            assert.equal("a_skip,keep:150000,z", res:text())
        end)
    end)

    it("gives nil, \"fs: ...\" from part:save when the file cannot be opened, and goes on", function()
        local app = loom.app{}
        app:post("/up", function(req)
            local out = {}
            for part in req:parts() do
                if part.name == "f" then
                    local n, err = part:save("/nonexistent-loom-dir/x")
                    out[#out + 1] = tostring(n) .. " " .. err:match("^fs: ") .. ""
                else
                    out[#out + 1] = part.name .. "=" .. part:text()
                end
            end
            return table.concat(out, ",")
        end)
        serve(app, function(_, base)
            local res = assert(loom.fetch(base .. "/up", { method = "POST", multipart = {
                f = { body = binary(100000), filename = "f.bin" }, g = "after" } }))
            assert.equal("nil fs: ,g=after", res:text())
        end)
    end)

    it("drains the rest when the loop breaks early: the connection stays usable", function()
        local app = loom.app{}
        app:post("/first", function(req)
            for part in req:parts() do return part.name .. "=" .. part:text() end
        end)
        app:get("/", function() return "root" end)
        serve(app, function(srv)
            local b = "XyZ"
            local body = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
                .. "--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n" .. ("2"):rep(10000) .. "\r\n--XyZ--\r\n"
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(raw_request("/first", b, body) .. "GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
            local res = assert(r:response())
            assert.equal(200, res.status)
            assert.equal("a=1", res.body)
            local res2 = assert(r:response())
            assert.equal(200, res2.status)
            assert.equal("root", res2.body)
        end)
    end)

    it("closes the connection cleanly when the loop breaks early with much of the body unsent", function()
        local app = loom.app{ max_body = 64 * 1024 * 1024 }
        app:post("/first", function(req)
            for part in req:parts() do return part.name .. "=" .. part:text() end
        end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local head = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
                .. "--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n"
            local total = #head + 8 * 1024 * 1024
            assert(st:write(("POST /first HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
                .. "Content-Length: %d\r\n\r\n%s"):format(total, head)))
            local res = assert(r:response())
            assert.equal(200, res.status)
            assert.equal("a=1", res.body)
            -- far too much left to drain (over 64 KiB): the engine closes after the answer
            local rest = loom.timeout(5, function() return r:rest() end)
            assert.equal("", rest)
        end)
    end)

    it("answers 500 for a handler's own error, with the handler's line in the log", function()
        local app = loom.app{}
        app:post("/boom", function(req)
            for part in req:parts() do error("boom in " .. part.name) end
        end)
        local log = tmpfile("log")
        local script = tmpfile("script")
        write_file(script, ([[
local loom = require "loom"
local app = loom.app{}
app:post("/boom", function(req)
    for part in req:parts() do error("boom in " .. part.name) end
end)
local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
local res = assert(loom.fetch("http://127.0.0.1:" .. srv.port .. "/boom", { method = "POST", multipart = { a = "1" } }))
print(res.status)
srv:close()
]]))
        run(function()
            assert.equal(0, sh(("%s %s >%s 2>&1"):format(os.getenv("LOOM_BIN") or "loom", script, log)))
        end)
        local out = read_file(log)
        os.remove(log)
        os.remove(script)
        assert.matches("\n500\n", "\n" .. out, 1, true)
        assert.matches("boom in a", out, 1, true)
        assert.matches(script:match("[^/]+$") .. ":4:", out, 1, true)
    end)
end)

describe("multipart: misuse on the server", function()
    it("raises when the body is read twice, or a part's body after the loop moved on", function()
        local app = loom.app{}
        local errs = {}
        app:post("/twice", function(req)
            local it = req:parts()
            local first = it()
            errs[1] = select(2, pcall(req.parts, req))
            errs[2] = select(2, pcall(req.form, req))
            local second = it()
            errs[3] = select(2, pcall(first.text, first))
            errs[4] = second:text()
            errs[5] = select(2, pcall(second.text, second))
            assert.is_nil(it())
            return "ok"
        end)
        serve(app, function(_, base)
            local res = assert(loom.fetch(base .. "/twice", { method = "POST", multipart = { a = "1", b = "2" } }))
            assert.equal("ok", res:text())
        end)
        assert.matches("parts: the body is already being read", errs[1], 1, true)
        assert.matches("form: the body is already being read", errs[2], 1, true)
        assert.matches("text: the part's body was already read or skipped", errs[3], 1, true)
        assert.equal("2", errs[4])
        assert.matches("text: the part's body was already read or skipped", errs[5], 1, true)
    end)
end)

describe("multipart: bad bodies", function()
    local function refused(app, wire, status, msg)
        serve(app, function(srv)
            local res, r = exchange(srv, wire)
            assert.equal(status, res.status)
            if msg then assert.matches(msg, res.body, 1, true) end
            assert.equal("close", res.headers.connection)
            local rest = loom.timeout(5, function() return r:rest() end)
            assert.equal("", rest)
        end)
    end
    local CD = "Content-Disposition: form-data; name=\"a\"\r\n"

    it("400 when the body ends before its closing boundary", function()
        refused(parts_app(), raw_request("/parts", "B", "--B\r\n" .. CD .. "\r\nvalue"), 400,
            "http: multipart body ends before its closing boundary")
    end)

    it("400 for a part without a name", function()
        refused(parts_app(), raw_request("/parts", "B",
            "--B\r\nContent-Disposition: form-data; filename=\"x\"\r\n\r\nv\r\n--B--\r\n"), 400,
            "http: multipart part without a name")
    end)

    it("400 for a boundary inside a part head, and for a bad boundary parameter", function()
        refused(parts_app(), raw_request("/parts", "B", "--B\r\n" .. CD .. "--B\r\n\r\nv\r\n--B--\r\n"), 400)
        refused(parts_app(), raw_request("/parts", ("b"):rep(71), "--x--\r\n"), 400,
            "http: multipart boundary empty, over 70 characters")
    end)

    it("415 for a body that is not multipart/form-data", function()
        refused(parts_app(), "POST /parts HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
            415)
    end)

    it("413 past max_parts", function()
        local body = {}
        for i = 1, 4 do body[#body + 1] = ("--B\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\nv\r\n"):format(i) end
        body[#body + 1] = "--B--\r\n"
        body = table.concat(body)
        refused(parts_app{ max_parts = 3 }, raw_request("/parts", "B", body), 413,
            "limit: multipart body with more parts than max_parts")
        -- and 4 parts are fine with max_parts = 4
        serve(parts_app{ max_parts = 4 }, function(srv)
            local res = exchange(srv, raw_request("/parts", "B", body))
            assert.equal(200, res.status)
            assert.equal(4, #loom.json.decode(res.body))
        end)
    end)

    it("431 for a part head over max_part_header", function()
        local head = "--B\r\n" .. CD .. "X-Pad: " .. ("p"):rep(100) .. "\r\n\r\nv\r\n--B--\r\n"
        refused(parts_app{ max_part_header = 64 }, raw_request("/parts", "B", head), 431,
            "limit: multipart part head over max_part_header bytes")
        serve(parts_app{ max_part_header = 200 }, function(srv)
            local res = exchange(srv, raw_request("/parts", "B", head))
            assert.equal(200, res.status)
            local got = loom.json.decode(res.body)
            assert.equal(1, #got)
            assert.equal("a", got[1].name)
        end)
    end)

    it("413 past max_body, raised by the iterator as req:chunks() raises it", function()
        local seen
        local app = loom.app{ max_body = 1000 }
        app:post("/up", function(req)
            local ok, err = pcall(function()
                for part in req:parts() do part:text() end
            end)
            seen = err
            assert(ok, err)
        end)
        local body = "--B\r\n" .. CD .. "\r\n" .. ("v"):rep(5000) .. "\r\n--B--\r\n"
        serve(app, function(srv)
            -- chunked: the engine cannot refuse it before the handler runs, as it does a
            -- Content-Length over max_body
            local res = exchange(srv, ("POST /up HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                .. "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"):format(#body, body))
            assert.equal(413, res.status)
        end)
        assert.matches("^limit: ", seen)
    end)

    it("gives the handler the error as a string it can catch and answer itself", function()
        local app = loom.app{}
        app:post("/up", function(req)
            local ok, err = pcall(function() for _ in req:parts() do end end)
            assert.is_false(ok)
            return { status = 422, text = "caught: " .. err }
        end)
        serve(app, function(srv)
            local res = exchange(srv, raw_request("/up", "B", "--B\r\nContent-Disposition: form-data\r\n\r\nv\r\n--B--\r\n"))
            assert.equal(422, res.status)
            assert.equal("caught: http: multipart part without a name", res.body)
        end)
    end)

    it("400, not 500, when a handler asserts req:form() on a malformed body", function()
        local app = loom.app{}
        app:post("/up", function(req) return { json = assert(req:form()) } end)
        serve(app, function(srv)
            local res = exchange(srv, raw_request("/up", "B", "--B\r\n" .. CD .. "\r\nv"))
            assert.equal(400, res.status)
            assert.equal("http: multipart body ends before its closing boundary", res.body)
        end)
    end)
end)

describe("multipart: bad bodies and app:on_error", function()
    it("leaves a body fault to its status: on_error is not called for it", function()
        local called = 0
        local app = loom.app{}
        app:on_error(function() called = called + 1; return { status = 503, text = "on_error" } end)
        app:post("/up", function(req) for _ in req:parts() do end end)
        app:post("/bug", function() error("a bug") end)
        serve(app, function(srv)
            local res = exchange(srv, raw_request("/up", "B", "--B\r\nContent-Disposition: form-data\r\n\r\nv\r\n--B--\r\n"))
            assert.equal(400, res.status)
            assert.equal("http: multipart part without a name", res.body)
            assert.equal(0, called)
            res = exchange(srv, "POST /bug HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
            assert.equal(503, res.status)
            assert.equal(1, called)
        end)
    end)
end)

describe("multipart: req:form()", function()
    local function form_app()
        local app = loom.app{}
        app:post("/f", function(req)
            local fields, all = req:form()
            if not fields then return { status = 299, text = all } end
            return { json = { fields = fields, all = all } }
        end)
        return app
    end

    it("reads urlencoded and multipart bodies alike, repeated names in the second result", function()
        serve(form_app(), function(_, base)
            local res = assert(loom.fetch(base .. "/f", { method = "POST", body = "a=1&a=2&b=x%20y",
                headers = { ["content-type"] = "application/x-www-form-urlencoded" } }))
            assert.same({ fields = { a = "2", b = "x y" }, all = { a = { "1", "2" }, b = { "x y" } } }, res:json())
            res = assert(loom.fetch(base .. "/f", { method = "POST", form = { a = { "1", "2" } } }))
            assert.same({ fields = { a = "2" }, all = { a = { "1", "2" } } }, res:json())
            res = assert(loom.fetch(base .. "/f", { method = "POST", multipart = {
                a = { "1", "2" }, doc = { body = "<p>", filename = "d.html", type = "text/html" } } }))
            local doc = { filename = "d.html", type = "text/html", body = "<p>" }
            assert.same({ fields = { a = "2", doc = doc }, all = { a = { "1", "2" }, doc = { doc } } }, res:json())
        end)
    end)

    it("gives nil, err for another content type", function()
        serve(form_app(), function(_, base)
            local res = assert(loom.fetch(base .. "/f", { method = "POST", json = { a = 1 } }))
            assert.equal(299, res.status)
            assert.equal("http: unsupported form content type 'application/json'", res:text())
        end)
    end)
end)

describe("multipart: the client", function()
    it("sends a Content-Length equal to the bytes sent, never chunked", function()
        local path = tmpfile("cl")
        write_file(path, binary(200001))
        local app = loom.app{}
        app:post("/count", function(req)
            local n = 0
            local last = ""
            for s in req:chunks() do
                n = n + #s
                last = (last .. s):sub(-64)
            end
            return { json = { n = n, cl = req.headers["content-length"] or false, te = req.headers["transfer-encoding"] or false,
                ct = req.headers["content-type"], last = last } }
        end)
        serve(app, function(_, base)
            local res = assert(loom.fetch(base .. "/count", { method = "POST",
                multipart = { f = { path = path }, g = "x", e = { body = "" } } }))
            local got = res:json()
            assert.equal(tostring(got.n), got.cl)
            assert.is_false(got.te)
            assert.matches("^multipart/form%-data; boundary=loom%-%x+$", got.ct)
            assert.is_true(got.n > 200001)
            -- the body ends with its close delimiter, right at the Content-Length: not one byte
            -- short (the delimiter would be cut) nor long (the server would wait for more)
            local boundary = got.ct:match("boundary=(.*)$")
            assert.equal("--" .. boundary .. "--\r\n", got.last:sub(-#boundary - 6))
        end)
        os.remove(path)
    end)

    it("raises for misuse naming the option, and gives nil, err for a file it cannot open", function()
        run(function()
            local url = "http://127.0.0.1:9/x"
            local cases = {
                { { multipart = { a = true } }, "option 'multipart': value of 'a' must be a string or a table" },
                { { multipart = { a = { path = "/x", body = "y" } } }, "has both a path and a body" },
                { { multipart = { a = { path = "/x", mode = "r" } } }, "unknown field 'mode'" },
                { { multipart = { a = { body = "x", type = "a\r\nb: c" } } }, "control character" },
                { { multipart = { a = "x" }, body = "y" }, "not with option 'body'" },
                { { multipart = { a = "x" }, headers = { ["Content-Type"] = "x" } }, "the client sets Content-Type" },
                { { multipart = "x" }, "option 'multipart'" },
            }
            for _, c in ipairs(cases) do
                c[1].method = "POST"
                local ok, err = pcall(loom.fetch, url, c[1])
                assert.is_false(ok)
                assert.matches(c[2], err, 1, true)
            end
            local res, err = loom.fetch(url, { method = "POST", multipart = { f = { path = "/nonexistent/loom-mp" } } })
            assert.is_nil(res)
            assert.matches("^fs: ", err)
        end)
    end)
end)
