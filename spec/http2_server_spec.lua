-- The HTTP/2 server (src/http1/h2_server.c over src/http2/h2_session.c): app:listen{ http2 =
-- true } serves h2c by prior knowledge beside HTTP/1.1 on one port, a TLS listener offers h2
-- through ALPN unless http2 = false, and the request API works on h2 streams. The peers are
-- real: curl (--http2-prior-knowledge, --http2 over TLS), nghttp, h2load and Node's http2
-- client, run beside the loop; limits and GOAWAY are checked with raw frames written here.
local loom = require "loom"
local core = require "loom.core"
local json = require "loom.json"
local run = require "support.run"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

local CERTS = os.tmpname()
os.remove(CERTS)
assert(os.execute("bash " .. here .. "/support/make_certs.sh " .. CERTS .. " >/dev/null 2>&1"),
    "make_certs.sh failed")
local TLS = { cert = CERTS .. "/a.pem", key = CERTS .. "/a.key" }
local CA = CERTS .. "/ca.pem"

-- Runs a shell command beside the loop: exit code, what it printed (stdout and stderr).
local function sh(cmd)
    local out = os.tmpname()
    local p = assert(core.process_spawn("/bin/sh", { "-c", "(" .. cmd .. ") >" .. out .. " 2>&1" }))
    local code = p:wait()
    local f = assert(io.open(out, "rb"))
    local s = f:read("a")
    f:close()
    os.remove(out)
    return code, s
end

-- The peer programs: a spec that cannot run one fails and says which.
local function need(tool)
    assert(os.execute("command -v " .. tool .. " >/dev/null 2>&1"), tool .. " not found: install it "
        .. "(scripts/deps.sh: curl, nghttp2-client, nodejs)")
end

local function h2c(port, path) return ("http://127.0.0.1:%d%s"):format(port, path or "/") end

local function app_under_test(opts)
    local app = loom.app(opts or { max_body = 4 << 20 })
    app:get("/", function(req)
        local pseudo = false
        for k in pairs(req.headers) do
            if k:sub(1, 1) == ":" then pseudo = true end
        end
        return { json = { version = req.version, host = req.headers.host, pseudo = pseudo,
            method = req.method, path = req.path, q = req.query.q, target = req.target,
            ua = req.headers["user-agent"] } }
    end)
    app:post("/echo", function(req) return assert(req:text()) end)
    app:post("/json", function(req) return { json = { got = assert(req:json()) } } end)
    app:post("/form", function(req)
        local f = assert(req:form())
        return { json = f }
    end)
    app:post("/chunks", function(req)
        local n, k = 0, 0
        for c in req:chunks() do n, k = n + #c, k + 1 end
        return { json = { n = n, k = k } }
    end)
    app:get("/answer", function()
        return { status = 201, headers = { ["x-a"] = "1", ["x-list"] = { "p", "q" } }, text = "made",
            cookies = { c1 = "v1" } }
    end)
    app:get("/cookie", function(req) return req.headers.cookie end)
    app:get("/stream", function(req)
        local out = assert(req:stream{ headers = { ["content-type"] = "text/plain" } })
        for i = 1, 5 do assert(out:write("part" .. i .. ";")) end
    end)
    app:get("/sse", function(req)
        local out = assert(req:stream{ headers = { ["content-type"] = "text/event-stream" } })
        for i = 1, 3 do
            assert(out:write("data: " .. i .. "\n\n"))
            loom.sleep(0.01)
        end
    end)
    app:get("/n/{i}", function(req) return "n" .. req.params.i end)
    return app
end

-- Raw HTTP/2 over a plain stream: frames written and read by hand, for what a polite client
-- never does (streams past the limit) and what it only sees in frames (GOAWAY).
local PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
local function frame(typ, flags, id, payload)
    return string.pack(">I3BBI4", #payload, typ, flags, id) .. payload
end
-- HEADERS of a GET (HPACK: indexed :method GET and :scheme http, literal :path, :authority)
local function get_headers(id, path)
    local block = "\x82\x86\x04" .. string.char(#path) .. path .. "\x01\x09localhost"
    return frame(1, 0x5, id, block) -- END_STREAM | END_HEADERS
end
local function read_frame(st)
    local hd = st:read(9)
    if not hd or #hd < 9 then return nil end
    local len, typ, flags, id = string.unpack(">I3BBI4", hd)
    local payload = len > 0 and assert(st:read(len)) or ""
    return { type = typ, flags = flags, id = id & 0x7fffffff, payload = payload }
end
local function raw_connect(port, settings)
    local st = assert(loom.connect("127.0.0.1", port, { timeout = 5 }))
    assert(st:write(PREFACE .. frame(4, 0, 0, settings or "")))
    return st
end

describe("HTTP/2 by prior knowledge (h2c)", function()

    it("serves h2 and HTTP/1.1 on one port: req.version, :authority as host, no pseudo-header", function()
        need("curl")
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0, http2 = true })
            local code, out = sh(("curl -sS --http2-prior-knowledge -w '\\n%%{http_version}' '%s'")
                :format(h2c(srv.port, "/?q=1")))
            assert.equal(0, code, out)
            local body, version = out:match("^(.*)\n(.-)$")
            assert.equal("2", version)
            local got = json.decode(body)
            assert.equal("2", got.version)
            assert.equal("127.0.0.1:" .. srv.port, got.host)
            assert.is_false(got.pseudo)
            assert.same({ "GET", "/", "1", "/?q=1" }, { got.method, got.path, got.q, got.target })
            assert.matches("^curl/", got.ua)
            code, out = sh(("curl -sS --http1.1 -w '\\n%%{http_version}' '%s'"):format(h2c(srv.port)))
            assert.equal(0, code, out)
            body, version = out:match("^(.*)\n(.-)$")
            assert.equal("1.1", version)
            assert.equal("1.1", json.decode(body).version)
        end, { timeout = 30 })
    end)

    it("serves only HTTP/1.1 without http2 = true (the preface is a bad request)", function()
        need("curl")
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0 })
            local code = sh(("curl -sS --max-time 5 --http2-prior-knowledge '%s'"):format(h2c(srv.port)))
            assert.not_equal(0, code)
            local res = assert(loom.fetch(h2c(srv.port)))
            assert.equal("1.1", res:json().version)
        end, { timeout = 30 })
    end)

    it("takes a preface that arrives in pieces, and an HTTP/1 request that starts like one", function()
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0, http2 = true })
            local st <close> = assert(loom.connect("127.0.0.1", srv.port, { timeout = 5 }))
            for i = 1, #PREFACE, 5 do
                assert(st:write(PREFACE:sub(i, i + 4)))
                loom.sleep(0.005)
            end
            assert(st:write(frame(4, 0, 0, "") .. get_headers(1, "/n/7")))
            local seen = {}
            repeat
                local f = assert(read_frame(st))
                seen[f.type] = true
            until f.type == 0 and f.id == 1 and f.flags & 1 == 1
            assert.is_true(seen[4] and seen[1]) -- SETTINGS, HEADERS
            -- "P" alone could be POST: HTTP/1.1 once the next bytes say so
            local h1 <close> = assert(loom.connect("127.0.0.1", srv.port, { timeout = 5 }))
            assert(h1:write("P"))
            loom.sleep(0.01)
            assert(h1:write("OST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"))
            assert.equal("HTTP/1.1 200 OK", h1:read_line())
        end, { timeout = 30 })
    end)

    it("gives the request API on streams: text, json, form, multipart, chunks, answers", function()
        need("curl")
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0, http2 = true })
            local base = "curl -sS --http2-prior-knowledge "
            local code, out = sh(base .. "-d 'hello there' " .. h2c(srv.port, "/echo"))
            assert.same({ 0, "hello there" }, { code, out })
            code, out = sh(base .. "-H 'content-type: application/json' -d '{\"a\":[1,2]}' "
                .. h2c(srv.port, "/json"))
            assert.equal(0, code, out)
            assert.same({ got = { a = { 1, 2 } } }, json.decode(out))
            code, out = sh(base .. "-d 'x=1&y=two' " .. h2c(srv.port, "/form"))
            assert.same({ x = "1", y = "two" }, json.decode(out))
            local file = os.tmpname()
            local f = assert(io.open(file, "wb"))
            f:write(string.rep("F", 5000))
            f:close()
            code, out = sh(base .. "-F name=loom -F 'up=@" .. file .. ";type=text/plain' " .. h2c(srv.port, "/form"))
            os.remove(file)
            assert.equal(0, code, out)
            local form = json.decode(out)
            assert.equal("loom", form.name)
            assert.equal(5000, #form.up.body)
            assert.equal("text/plain", form.up.type)
            -- 3 MB: more than the stream's window (256 KiB), which opens as chunks are taken
            code, out = sh("head -c 3000000 /dev/zero | " .. base .. "--data-binary @- " .. h2c(srv.port, "/chunks"))
            assert.equal(0, code, out)
            local got = json.decode(out)
            assert.equal(3000000, got.n)
            assert.is_true(got.k > 1)
            code, out = sh(base .. "-i " .. h2c(srv.port, "/answer"))
            assert.equal(0, code, out)
            assert.matches("^HTTP/2 201", out)
            assert.matches("\nx%-a: 1\r?\n", out)
            assert.matches("\nx%-list: p\r?\n", out)
            assert.matches("\nx%-list: q\r?\n", out)
            assert.matches("\nset%-cookie: c1=v1", out)
            assert.matches("\ncontent%-length: 4\r?\n", out)
            assert.matches("made$", out)
        end, { timeout = 60 })
    end)

    it("streams answers (req:stream, SSE) and compresses them through the coder", function()
        need("curl")
        run(function()
            local app = app_under_test{ max_body = 1 << 20, compress = { min_size = 1 } }
            app:get("/big", function() return string.rep("abcdefgh", 50000) end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local code, out = sh("curl -sS -N --http2-prior-knowledge " .. h2c(srv.port, "/stream"))
            assert.same({ 0, "part1;part2;part3;part4;part5;" }, { code, out })
            code, out = sh("curl -sS -N --http2-prior-knowledge " .. h2c(srv.port, "/sse"))
            assert.same({ 0, "data: 1\n\ndata: 2\n\ndata: 3\n\n" }, { code, out })
            code, out = sh("curl -sS --http2-prior-knowledge -H 'accept-encoding: gzip' -D - -o /dev/null "
                .. h2c(srv.port, "/big"))
            assert.equal(0, code, out)
            assert.matches("content%-encoding: gzip", out)
            code, out = sh("curl -sS --http2-prior-knowledge --compressed " .. h2c(srv.port, "/big"))
            assert.equal(0, code)
            assert.equal(400000, #out)
        end, { timeout = 30 })
    end)

    it("serves app:static files with Range and ETag (small ones from memory, large from disk)", function()
        need("curl")
        run(function()
            local dir = os.tmpname()
            os.remove(dir)
            os.execute("mkdir -p " .. dir)
            local big = {}
            for i = 1, 300000 do big[i] = string.char(48 + i % 10) end
            big = table.concat(big) .. string.rep("x", 3 << 20)
            for name, data in pairs({ ["small.txt"] = "0123456789abcdefghij", ["big.bin"] = big }) do
                local f = assert(io.open(dir .. "/" .. name, "wb"))
                f:write(data)
                f:close()
            end
            local app = loom.app()
            app:static("/files", dir)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local curl = "curl -sS --http2-prior-knowledge "
            local code, out = sh(curl .. h2c(srv.port, "/files/big.bin") .. " | md5sum")
            local want = io.popen("md5sum < " .. dir .. "/big.bin"):read("a")
            assert.same({ 0, want }, { code, out })
            code, out = sh(curl .. "-r 100000-100009 -w ' %{http_code}' " .. h2c(srv.port, "/files/big.bin"))
            assert.same({ 0, big:sub(100001, 100010) .. " 206" }, { code, out })
            code, out = sh(curl .. "-r 5-9 -w ' %{http_code}' " .. h2c(srv.port, "/files/small.txt"))
            assert.same({ 0, "56789 206" }, { code, out })
            code, out = sh(curl .. "-D - -o /dev/null " .. h2c(srv.port, "/files/small.txt"))
            local etag = assert(out:match("\netag: ([^\r\n]+)"), out)
            code, out = sh(curl .. "-H 'if-none-match: " .. etag .. "' -o /dev/null -w '%{http_code}' "
                .. h2c(srv.port, "/files/small.txt"))
            assert.same({ 0, "304" }, { code, out })
            code, out = sh(curl .. "-I -w '%{http_code}' " .. h2c(srv.port, "/files/big.bin"))
            assert.equal(0, code)
            assert.matches("content%-length: " .. #big, out)
            os.execute("rm -rf " .. dir)
        end, { timeout = 60 })
    end)

    it("joins split cookie fields with '; ' and serves Node's http2 client", function()
        need("node")
        run(function()
            local app = app_under_test()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local node = "node " .. here .. "/support/h2_node_client.js " .. h2c(srv.port, "") .. " "
            local code, out = sh(node .. "cookies")
            assert.equal(0, code, out)
            assert.same({ body = "a=1; b=2" }, json.decode(out))
            code, out = sh(node .. "post")
            assert.equal(0, code, out)
            assert.same({ status = 200, len = 300000, ok = true }, json.decode(out))
            code, out = sh(node .. "stream")
            assert.equal(0, code, out)
            assert.same({ status = 200, body = "part1;part2;part3;part4;part5;" },
                { status = json.decode(out).status, body = json.decode(out).body })
            code, out = sh(node .. "many")
            assert.equal(0, code, out)
            assert.same({ statuses = { 200 }, bodies_ok = true, sessions = 1 }, json.decode(out))
        end, { timeout = 60 })
    end)

    it("logs each stream's answer (access_log) and counts it for app:metrics", function()
        need("curl")
        run(function()
            local entries, got = {}, loom.event()
            local app = app_under_test()
            app:metrics("/metrics")
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true,
                access_log = function(e)
                    entries[#entries + 1] = e
                    if #entries == 2 then got:set() end
                end })
            local code, out = sh("curl -sS --http2-prior-knowledge -A h2test -e http://ref/ "
                .. h2c(srv.port, "/n/3?x=1") .. " -o /dev/null; curl -sS --http2-prior-knowledge "
                .. h2c(srv.port, "/stream"))
            assert.same({ 0, "part1;part2;part3;part4;part5;" }, { code, out })
            got:wait()
            table.sort(entries, function(a, b) return a.path < b.path end)
            local e = entries[1]
            assert.same({ "GET", "/n/3?x=1", "HTTP/2.0", 200, 2, "h2test", "http://ref/", "127.0.0.1" },
                { e.method, e.path, e.protocol, e.status, e.bytes, e.ua, e.referer, e.remote })
            assert.same({ "/stream", 200, 30 }, { entries[2].path, entries[2].status, entries[2].bytes })
            local m = assert(loom.fetch(h2c(srv.port, "/metrics"))):text()
            assert.matches('method="GET",status="200"} 2', m, 1, true)
        end, { timeout = 30 })
    end)

    it("serves nghttp and a short h2load run, every answer 2xx", function()
        need("nghttp")
        need("h2load")
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0, http2 = true })
            local code, out = sh("nghttp " .. h2c(srv.port, "/n/42"))
            assert.same({ 0, "n42" }, { code, out })
            code, out = sh("h2load -n 400 -c 4 -m 10 " .. h2c(srv.port, "/n/1"))
            assert.equal(0, code, out)
            assert.matches("400 succeeded, 0 failed, 0 errored", out)
            assert.matches("status codes: 400 2xx, 0 3xx, 0 4xx, 0 5xx", out)
        end, { timeout = 60 })
    end)
end)

describe("HTTP/2 limits", function()
    it("answers 413 before reading a body over max_body, and 431 to a head over max_header", function()
        need("curl")
        run(function()
            local ran = 0
            local app = loom.app{ max_body = 1000, max_header = 4096 }
            app:post("/up", function(req)
                ran = ran + 1
                return tostring(#assert(req:text()))
            end)
            app:get("/", function() return "ok" end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local base = "curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code}' "
            -- (nghttp: curl 7.88 takes the RST_STREAM NO_ERROR that follows a whole answer to a
            -- request still sending, RFC 9113 8.1, for an error)
            need("nghttp")
            local file = os.tmpname()
            local f = assert(io.open(file, "wb"))
            f:write(string.rep("x", 200000))
            f:close()
            local code, out = sh("nghttp -v -d " .. file .. " " .. h2c(srv.port, "/up"))
            os.remove(file)
            assert.equal(0, code, out)
            assert.matches(":status: 413", out, 1, true)
            assert.matches("Content Too Large", out, 1, true)
            assert.equal(0, ran)
            -- no content-length (Node's client): the body grows past max_body as it comes
            need("node")
            code, out = sh("node " .. here .. "/support/h2_node_client.js " .. h2c(srv.port, "") .. " grow")
            assert.equal(0, code, out)
            assert.same({ status = 413, body = "Content Too Large" },
                json.decode(out))
            assert.same({ 0, "200" }, { sh(base .. "-d small " .. h2c(srv.port, "/up")) })
            assert.same({ 0, "431" }, { sh(base .. "-H 'x-big: " .. string.rep("b", 6000) .. "' "
                .. h2c(srv.port, "/")) })
        end, { timeout = 30 })
    end)

    it("refuses streams past max_streams (REFUSED_STREAM) and serves those it took", function()
        run(function()
            local app = loom.app{ max_streams = 2 }
            local started = 0
            app:get("/slow", function()
                started = started + 1
                loom.sleep(0.2)
                return "slow"
            end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local st <close> = raw_connect(srv.port)
            -- three streams before the server's SETTINGS could be heeded
            assert(st:write(get_headers(1, "/slow") .. get_headers(3, "/slow") .. get_headers(5, "/slow")))
            local refused, ended = {}, {}
            while not (ended[1] and ended[3] and refused[5]) do
                local f = assert(read_frame(st), "connection closed early")
                if f.type == 3 then refused[f.id] = string.unpack(">I4", f.payload) end
                if f.type == 0 and f.flags & 1 == 1 then ended[f.id] = true end
                if f.type == 4 and f.flags & 1 == 0 then assert(st:write(frame(4, 1, 0, ""))) end
            end
            assert.equal(7, refused[5]) -- REFUSED_STREAM
            assert.is_nil(refused[1])
            assert.equal(2, started)
        end, { timeout = 30 })
    end)

    it("srv:close sends GOAWAY (NO_ERROR) at once and lets the stream in flight finish", function()
        run(function()
            local app = loom.app()
            local go = loom.event()
            app:get("/slow", function()
                go:wait()
                return "finished"
            end)
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local st <close> = raw_connect(srv.port)
            assert(st:write(get_headers(1, "/slow")))
            -- the server's SETTINGS first: the stream is taken by then
            local f
            repeat f = assert(read_frame(st)) until f.type == 4 and f.flags & 1 == 0
            assert(st:write(frame(4, 1, 0, "")))
            loom.sleep(0.05)
            srv:close(5)
            local goaway, body
            while true do
                f = read_frame(st)
                if not f then break end
                if f.type == 7 then
                    local last, code = string.unpack(">I4I4", f.payload)
                    goaway = { last = last, code = code, answered = body ~= nil }
                    go:set() -- the GOAWAY came before the answer: now let it finish
                end
                if f.type == 0 and f.id == 1 then
                    body = (body or "") .. f.payload
                    if f.flags & 1 == 1 then break end
                end
            end
            assert.same({ last = 1, code = 0, answered = false }, goaway)
            assert.equal("finished", body)
            srv:wait()
            assert.equal(0, srv.connections)
        end, { timeout = 30 })
    end)

    it("says GOAWAY (NO_ERROR) to a connection left without a stream for keepalive_timeout", function()
        run(function()
            local app = app_under_test{ keepalive_timeout = 0.3 }
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local st <close> = raw_connect(srv.port)
            assert(st:write(get_headers(1, "/n/1")))
            local t0, goaway, answered = loom.now(), nil, false
            while true do
                local f = read_frame(st)
                if not f then break end -- the server closed after its GOAWAY
                if f.type == 0 and f.id == 1 and f.flags & 1 == 1 then answered = true end
                if f.type == 7 then goaway = { string.unpack(">I4I4", f.payload) } end
            end
            assert.is_true(answered)
            assert.same({ 1, 0 }, { goaway[1], goaway[2] }) -- last stream 1, NO_ERROR
            assert.is_true(loom.now() - t0 >= 0.3)
            assert.equal(0, srv.connections)
        end, { timeout = 30 })
    end)

    it("answers 503 on the stream at handler_timeout and serves the connection's other streams", function()
        need("nghttp")
        run(function()
            local app = loom.app{ handler_timeout = 0.2 }
            app:get("/stuck", function() loom.sleep(30) end)
            app:get("/ok", function() return "ok" end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            -- one nghttp, one connection, two streams
            local code, out = sh("nghttp -v " .. h2c(srv.port, "/stuck") .. " " .. h2c(srv.port, "/ok"))
            assert.equal(0, code, out)
            assert.matches(":status: 503", out, 1, true)
            assert.matches(":status: 200", out, 1, true)
            assert.matches("Service Unavailable", out, 1, true)
            assert.equal(1, select(2, out:gsub("recv SETTINGS frame <length=%d+, flags=0x00", "")))
        end, { timeout = 30 })
    end)

    it("answers Expect: 100-continue with a 100 HEADERS when the handler reads the body", function()
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0, http2 = true })
            local st <close> = raw_connect(srv.port)
            -- POST /echo with expect: 100-continue (HPACK: static name 35, literal value)
            local block = "\x83\x86\x04\x05/echo\x01\x09localhost\x0f\x14\x0c100-continue"
            assert(st:write(frame(1, 0x4, 1, block)))
            local f
            repeat f = assert(read_frame(st)) until f.type == 1 and f.id == 1
            assert.equal(0, f.flags & 1) -- an interim head: no END_STREAM
            assert(st:write(frame(0, 1, 1, "sent after the 100")))
            local body, heads = "", 1
            repeat
                f = assert(read_frame(st))
                if f.type == 1 and f.id == 1 then heads = heads + 1 end
                if f.type == 0 and f.id == 1 then body = body .. f.payload end
            until f.type == 0 and f.id == 1 and f.flags & 1 == 1
            assert.same({ 2, "sent after the 100" }, { heads, body })
        end, { timeout = 30 })
    end)

    it("answers 408 on the stream when the body stalls past body_timeout", function()
        run(function()
            local app = loom.app{ body_timeout = 0.2 }
            local err
            app:post("/echo", function(req)
                local body
                body, err = req:text()
                return body or { status = 408, text = err }
            end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local st <close> = raw_connect(srv.port)
            -- a POST whose body never comes: HEADERS without END_STREAM, 3 bytes of DATA
            local block = "\x83\x86\x04\x05/echo\x01\x09localhost"
            assert(st:write(frame(1, 0x4, 1, block) .. frame(0, 0, 1, "abc")))
            local body, reset = "", nil
            while not reset do
                local f = assert(read_frame(st), "connection closed early")
                if f.type == 0 and f.id == 1 then body = body .. f.payload end
                if f.type == 3 and f.id == 1 then reset = string.unpack(">I4", f.payload) end
            end
            assert.matches("^timeout: request body %(no bytes for 0%.2 s%)", err)
            assert.equal("Request Timeout", body) -- as on HTTP/1.1: the failed body decides
            assert.equal(0, reset) -- NO_ERROR: the answer is whole, the rest is not wanted
        end, { timeout = 30 })
    end)

    it("bounds what a reader that takes nothing costs: writes park, then send_timeout", function()
        run(function()
            local app = loom.app{ send_timeout = 0.3 }
            local written, result = 0, nil
            local done = loom.event()
            app:get("/flood", function(req)
                local out = assert(req:stream{})
                local piece = string.rep("z", 16384)
                while true do
                    local ok, err = out:write(piece)
                    if not ok then result = err; break end
                    written = written + #piece
                end
                done:set()
            end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, http2 = true })
            local st <close> = raw_connect(srv.port)
            assert(st:write(get_headers(1, "/flood")))
            done:wait()
            assert.matches("^timeout: ", result)
            -- the stream's window (64 KiB) and the queue's high-water mark, not more
            assert.is_true(written < 512 * 1024, "wrote " .. written)
        end, { timeout = 30 })
    end)
end)

describe("HTTP/2 over TLS", function()
    teardown(function() os.execute("rm -rf '" .. CERTS .. "'") end)
    it("offers h2 through ALPN by default; http2 = false offers HTTP/1.1 only", function()
        need("curl")
        run(function()
            local app = app_under_test()
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0, tls = TLS })
            local off <close> = assert(app:listen{ host = "127.0.0.1", port = 0, tls = TLS, http2 = false })
            local curl = "curl -sS --http2 --cacert " .. CA .. " --resolve a.test:%d:127.0.0.1 "
                .. "-w '\\n%%{http_version}' https://a.test:%d/"
            local code, out = sh(curl:format(srv.port, srv.port))
            assert.equal(0, code, out)
            local body, version = out:match("^(.*)\n(.-)$")
            assert.equal("2", version)
            assert.equal("2", json.decode(body).version)
            assert.equal("a.test:" .. srv.port, json.decode(body).host)
            code, out = sh(curl:format(off.port, off.port))
            assert.equal(0, code, out)
            assert.equal("1.1", out:match("\n(.-)$"))
            -- loom's own client (http2 by default for https) meets it over h2
            local s <close> = loom.session{ tls = { ca_file = CA, server_name = "a.test" } }
            local res = assert(s:get(("https://127.0.0.1:%d/"):format(srv.port)))
            assert.equal("2", res.version)
            assert.equal("2", res:json().version)
            res = assert(s:post(("https://127.0.0.1:%d/echo"):format(srv.port), { body = string.rep("e", 500000) }))
            assert.equal(500000, #res:text())
        end, { timeout = 30 })
    end)

    it("serves nghttp, h2load and Node over TLS", function()
        need("nghttp")
        need("h2load")
        need("node")
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0, tls = TLS })
            local code, out = sh(("nghttp https://127.0.0.1:%d/n/5 2>/dev/null"):format(srv.port))
            assert.same({ 0, "n5" }, { code, out })
            code, out = sh(("h2load -n 400 -c 4 -m 10 https://127.0.0.1:%d/n/2"):format(srv.port))
            assert.equal(0, code, out)
            assert.matches("400 succeeded, 0 failed, 0 errored", out, 1, true)
            assert.matches("status codes: 400 2xx, 0 3xx, 0 4xx, 0 5xx", out, 1, true)
            assert.matches("Application protocol: h2", out, 1, true)
            code, out = sh(("node %s/support/h2_node_client.js https://127.0.0.1:%d many"):format(here, srv.port))
            assert.equal(0, code, out)
            assert.same({ statuses = { 200 }, bodies_ok = true, sessions = 1 }, json.decode(out))
        end, { timeout = 60 })
    end)
end)
