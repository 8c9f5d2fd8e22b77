-- app:static off the loop (issue 13, items 4 and 6): precompressed .br/.gz siblings chosen by
-- Accept-Encoding (met by raw requests, curl --compressed and Python), max_open_files (a
-- request past it waits, it does not fail), a client that stops reading a large file while
-- others are served, HTTPS bodies through the socket layer, and the stat cache (a file
-- changed under it is sent as it is now), and connections closed in the middle of a sendfile
-- while others arrive (the socket's descriptor stays the closed connection's until the job is
-- done: loom_sock_hold). spec/app_spec.lua and spec/server_hardening_spec.lua
-- hold the rest (types, ETag/304, ranges, a file that shrinks as it is sent).
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local testing = require "loom.testing"
local static = require "loom.static"

local GUARD = 10
local PY = "/usr/bin/python3" -- Debian's, with python3-brotli (scripts/deps.sh)

local function put(path, data)
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

-- Runs a shell command beside the loop (core.process_spawn); its exit status must be 0.
local function sh(cmd)
    local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
    local code = p:wait()
    assert.equal(0, code, "command failed: " .. cmd)
end

-- A directory with app.js (text that compresses), its app.js.br and app.js.gz made by real
-- coders (Python's brotli, gzip), style.css without siblings, and big.bin.
local function site()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local js = {}
    for i = 1, 400 do js[i] = ("console.log('line %d of the app');\n"):format(i) end
    put(dir .. "/app.js", table.concat(js))
    put(dir .. "/style.css", "body { color: red }")
    assert(os.execute(("gzip -k -9 %s/app.js"):format(dir)))
    assert(os.execute(("%s -c \"import brotli,sys; d=open(sys.argv[1],'rb').read(); "
        .. "open(sys.argv[1]+'.br','wb').write(brotli.compress(d))\" %s/app.js"):format(PY, dir)),
        "python3-brotli is needed (scripts/deps.sh installs it)")
    return dir
end

local function open(srv)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    return st, testing.reader(st)
end

-- One request on a raw connection, answered within GUARD seconds.
local function request(st, r, method, path, headers)
    local lines = { method .. " " .. path .. " HTTP/1.1", "Host: t" }
    for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
    assert(st:write(table.concat(lines, "\r\n") .. "\r\n\r\n"))
    local res, err = loom.timeout(GUARD, function() return r:response(method) end)
    assert(res, "no response: " .. tostring(err))
    return res
end

-- Waits (polling, within GUARD seconds) until cond() holds.
local function wait_until(cond, what)
    local deadline = loom.now() + GUARD
    while not cond() do
        if loom.now() > deadline then error("timed out waiting for " .. what, 2) end
        loom.sleep(0.005)
    end
end

local function serve(app, body, opts)
    run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        return body(srv)
    end, opts)
end

describe("app:static: precompressed siblings", function()
    local dir, js, br, gz
    setup(function()
        dir = site()
        js, br, gz = read_file(dir .. "/app.js"), read_file(dir .. "/app.js.br"), read_file(dir .. "/app.js.gz")
    end)
    teardown(function() os.execute("rm -rf " .. dir) end)

    local function app(opts)
        local a = loom.app()
        a:static("/s", dir, opts or { precompressed = true })
        return a
    end

    it("sends the .br or .gz sibling the client accepts, br first, by q-value", function()
        serve(app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local res = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "gzip, deflate, br" })
            assert.equal(200, res.status)
            assert.equal("br", res.headers["content-encoding"])
            assert.equal("Accept-Encoding", res.headers["vary"])
            assert.equal("text/javascript; charset=utf-8", res.headers["content-type"])
            assert.equal(tostring(#br), res.headers["content-length"])
            assert.equal(br, res.body)
            local br_tag = res.headers.etag
            assert.matches('%-br"$', br_tag)

            res = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "br;q=0.5, gzip" })
            assert.equal("gzip", res.headers["content-encoding"])
            assert.equal(gz, res.body)
            local gz_tag = res.headers.etag
            assert.matches('%-gzip"$', gz_tag)

            res = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "*" })
            assert.equal("br", res.headers["content-encoding"])

            -- not accepted (q=0), or not asked: the file itself, still with Vary
            for _, ae in ipairs({ "gzip;q=0, br;q=0", "identity", false }) do
                res = request(st, r, "GET", "/s/app.js", ae and { ["Accept-Encoding"] = ae } or nil)
                assert.is_nil(res.headers["content-encoding"])
                assert.equal("Accept-Encoding", res.headers["vary"])
                assert.equal(js, res.body)
                assert.is_not.equal(br_tag, res.headers.etag)
                assert.is_not.equal(gz_tag, res.headers.etag)
            end
        end)
    end)

    it("ETag, 304, HEAD and Range apply to the coded file", function()
        serve(app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local tag = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "br" }).headers.etag
            local res = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "br", ["If-None-Match"] = tag })
            assert.equal(304, res.status)
            assert.equal("Accept-Encoding", res.headers["vary"])
            -- the br tag does not match the gzip answer
            res = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "gzip", ["If-None-Match"] = tag })
            assert.equal(200, res.status)
            assert.equal(gz, res.body)
            res = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "br", Range = "bytes=0-9" })
            assert.equal(206, res.status)
            assert.equal("br", res.headers["content-encoding"])
            assert.equal(("bytes 0-9/%d"):format(#br), res.headers["content-range"])
            assert.equal(br:sub(1, 10), res.body)
            res = request(st, r, "HEAD", "/s/app.js", { ["Accept-Encoding"] = "gzip" })
            assert.equal(200, res.status)
            assert.equal(tostring(#gz), res.headers["content-length"])
            assert.equal("", res.body)
        end)
    end)

    it("never codes a sibling asked for by its own name, nor without the option", function()
        serve(app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local res = request(st, r, "GET", "/s/app.js.br", { ["Accept-Encoding"] = "br, gzip" })
            assert.equal(200, res.status)
            assert.is_nil(res.headers["content-encoding"])
            assert.equal(br, res.body)
            res = request(st, r, "GET", "/s/app.js.gz", { ["Accept-Encoding"] = "br, gzip" })
            assert.is_nil(res.headers["content-encoding"])
            assert.equal(gz, res.body)
            -- a file without siblings
            res = request(st, r, "GET", "/s/style.css", { ["Accept-Encoding"] = "br, gzip" })
            assert.is_nil(res.headers["content-encoding"])
            assert.equal("body { color: red }", res.body)
        end)
        serve(app({}), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local res = request(st, r, "GET", "/s/app.js", { ["Accept-Encoding"] = "br, gzip" })
            assert.is_nil(res.headers["content-encoding"])
            assert.is_nil(res.headers["vary"])
            assert.equal(js, res.body)
        end)
    end)

    it("curl --compressed and Python decode what they are sent", function()
        serve(app(), function(srv)
            local url = ("http://127.0.0.1:%d/s/app.js"):format(srv.port)
            local out = os.tmpname()
            local _ <close> = setmetatable({}, { __close = function()
                os.remove(out)
                os.remove(out .. ".h")
            end })
            sh(("curl -sS --max-time 10 --compressed -D %s.h -o %s %s"):format(out, out, url))
            assert.equal(js, read_file(out))
            assert.matches("\r\n[Cc]ontent%-[Ee]ncoding: br\r\n", read_file(out .. ".h"))
            -- Python: http.client asks for each coding in turn and decodes it itself
            local script = [[
import brotli, gzip, http.client, sys
port, want = int(sys.argv[1]), open(sys.argv[2], "rb").read()
for ae, dec in (("gzip", gzip.decompress), ("br;q=1, gzip;q=0.9", brotli.decompress)):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/s/app.js", headers={"Accept-Encoding": ae})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, r.status
    assert r.getheader("Vary") == "Accept-Encoding", r.getheader("Vary")
    assert dec(body) == want, ae
    print(r.getheader("Content-Encoding"))
]]
            put(out, script)
            sh(("%s %s %d %s/app.js > %s.h"):format(PY, out, srv.port, dir, out))
            assert.equal("gzip\nbr\n", read_file(out .. ".h"))
        end)
    end)

    it("misuse raises, naming the option", function()
        local a = loom.app()
        assert.error_matches(function() a:static("/x", dir, { precompressed = 1 }) end, "option 'precompressed'")
        assert.error_matches(function() a:static("/x", dir, { max_open_files = 0 }) end, "option 'max_open_files'")
        assert.error_matches(function() a:static("/x", dir, { max_open_files = "9" }) end, "option 'max_open_files'")
    end)
end)

describe("app:static: large files off the loop", function()
    local dir, big
    setup(function()
        dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        big = core.crypto_random and core.crypto_random(1 << 20) or nil
        local parts = {}
        for i = 1, 32 do parts[i] = big or (("%08d"):format(i)):rep(1 << 17) end
        big = table.concat(parts) -- 32 MiB: more than loopback's socket buffers hold
        put(dir .. "/big.bin", big)
        put(dir .. "/mid.bin", big:sub(1, 131072)) -- over NOWAIT: sent from an open file
        put(dir .. "/small.txt", "Hello, World!")
    end)
    teardown(function() os.execute("rm -rf " .. dir) end)

    it("a cached file of 64 KiB is answered without a Lua string of its size; with compress, coded", function()
        -- its body is read into a C buffer and written with the head (file:respond): 20
        -- answers used to leave 20 strings of 64 KiB (and their 64 KiB buffers) to collect
        local text = {}
        for i = 1, 3000 do text[i] = ("line %05d of a text file\n"):format(i) end
        text = table.concat(text):sub(1, 65536)
        assert.equal(65536, #text)
        put(dir .. "/k64.txt", text)
        local a = loom.app()
        a:static("/s", dir)
        local z = loom.app{ compress = true }
        z:static("/s", dir)
        local out = dir .. "/k64.out"
        serve(a, function(srv)
            local url = ("http://127.0.0.1:%d/s/k64.txt"):format(srv.port)
            sh(("curl -sf -o %s %s"):format(out, url)) -- the stat, the open, the pages cached
            assert.is_true(read_file(out) == text, "the file arrived altered")
            collectgarbage()
            collectgarbage("stop")
            local before = collectgarbage("count")
            sh(("curl -sf '%s?[1-20]' > /dev/null"):format(url))
            local grown = collectgarbage("count") - before
            collectgarbage("restart")
            assert.is_true(grown < 20 * 16, ("%.0f KiB of Lua memory for 20 answers"):format(grown))
            local st, r = open(srv)
            local _ <close> = st
            local res = request(st, r, "GET", "/s/k64.txt", { Range = "bytes=65000-" })
            assert.equal(206, res.status)
            assert.equal("bytes 65000-65535/65536", res.headers["content-range"])
            assert.is_true(res.body == text:sub(65001), "the range arrived altered")
            assert.equal(304, request(st, r, "GET", "/s/k64.txt", { ["If-None-Match"] = res.headers.etag }).status)
            res = request(st, r, "HEAD", "/s/k64.txt")
            assert.equal("65536", res.headers["content-length"])
            assert.equal("", res.body)
        end)
        serve(z, function(srv)
            local url = ("http://127.0.0.1:%d/s/k64.txt"):format(srv.port)
            for _ = 1, 2 do -- the first from a thread-pool job, the second from cached pages
                sh(("curl -sf --compressed -H 'Accept-Encoding: gzip' -D %s.h -o %s %s"):format(out, out, url))
                assert.is_true(read_file(out) == text, "the coded file decoded altered")
                assert.truthy(read_file(out .. ".h"):lower():find("content-encoding: gzip", 1, true))
            end
        end)
    end)

    it("a client that stops reading holds one file; past max_open_files requests wait, then are served", function()
        local a = loom.app()
        a:static("/s", dir, { max_open_files = 1 })
        serve(a, function(srv)
            local st1, r1 = open(srv)
            local _ <close> = st1
            assert(st1:write("GET /s/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"))
            assert.equal("HTTP/1.1 200 OK", assert(loom.timeout(GUARD, function() return r1:line() end)))
            -- the second large file waits for the first's to close ...
            local st2, r2 = open(srv)
            local _ <close> = st2
            assert(st2:write("GET /s/mid.bin HTTP/1.1\r\nHost: t\r\n\r\n"))
            -- ... while a small file (from memory) is answered at once on a third connection
            local st3, r3 = open(srv)
            local _ <close> = st3
            assert.equal("Hello, World!", request(st3, r3, "GET", "/s/small.txt").body)
            assert.same({ nil, "timeout" }, { loom.timeout(0.3, function() return r2:line() end) })
            -- the first client reads its file: every byte, in order
            local res = assert(loom.timeout(GUARD * 3, function()
                repeat until assert(r1:line()) == ""
                return r1:bytes(#big)
            end))
            assert.is_true(res == big, "the large file arrived altered")
            res = assert(loom.timeout(GUARD, function() return r2:response() end))
            assert.equal(200, res.status)
            assert.is_true(res.body == big:sub(1, 131072), "the second file arrived altered")
        end, { timeout = 60 })
    end)

    it("connections closed in the middle of a sendfile while others arrive: each answer is its own", function()
        -- Readers take big.bin steadily from a server (its body goes by sendfile in the
        -- thread pool, kept busy by clients that read), and that server is closed at once
        -- (srv:close(0)): it closes those connections while jobs write to their descriptors.
        -- Meanwhile askers open new connections to a second server, which would get those
        -- descriptor numbers if they were freed under a job; two requests on each must get
        -- exactly their own file, and a reader only bytes of big.bin in order. Then no
        -- connection or handle is left (and under ASan, no memory).
        local ROUNDS, READERS, ASKERS, NFILES, SIZE = 8, 4, 3, 8, 200000 -- over NOWAIT
        local files = {}
        for k = 1, NFILES do
            files[k] = (("<%05d>"):format(k)):rep(SIZE // 7 + 1):sub(1, SIZE)
            put(("%s/u%d.bin"):format(dir, k), files[k])
        end
        local a = loom.app()
        a:static("/s", dir)
        run(function()
            local other = assert(a:listen{ host = "127.0.0.1", port = 0 })
            local _ <close> = run.defer(function() other:close(0) end)
            local base = core.stats().handles
            local stop, asked = false, 0
            local function asker(w)
                local n = 0
                while not stop do
                    n = n + 1
                    local k = (w * 7 + n) % NFILES + 1
                    local sb, rb = open(other)
                    for _ = 1, 2 do
                        local res = request(sb, rb, "GET", ("/s/u%d.bin"):format(k))
                        assert.equal(200, res.status)
                        assert.equal(tostring(SIZE), res.headers["content-length"])
                        assert.is_true(res.body == files[k], "an answer with bytes not its own")
                    end
                    sb:close()
                    asked = asked + 1
                end
                return true
            end
            local got = 0
            local function reader(srv)
                local sa, ra = open(srv)
                local _ <close> = sa
                assert(sa:write("GET /s/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"))
                assert.equal("HTTP/1.1 200 OK", assert(loom.timeout(GUARD, function() return ra:line() end)))
                repeat until assert(ra:line()) == ""
                local off = 0
                while true do
                    local piece = loom.timeout(GUARD, function() return ra:bytes(16384) end)
                    if not piece then break end
                    assert.is_true(piece == big:sub(off + 1, off + #piece), "the file arrived altered")
                    off = off + #piece
                    got = got + #piece
                end
                assert.is_true(off < #big, "the close came after the whole file")
                return true
            end
            local askers = {}
            for w = 1, ASKERS do askers[w] = loom.spawn(asker, w) end
            for _ = 1, ROUNDS do
                local srv = assert(a:listen{ host = "127.0.0.1", port = 0 })
                local readers = {}
                got = 0
                for i = 1, READERS do readers[i] = loom.spawn(reader, srv) end
                wait_until(function() return got >= READERS * (1 << 20) end, "the readers to read")
                srv:close(0)
                for i = 1, READERS do assert(readers[i]:join()) end
                srv:wait()
            end
            stop = true
            for w = 1, ASKERS do
                local ok, err = askers[w]:join()
                assert(ok, err)
            end
            assert.is_true(asked >= ASKERS)
            wait_until(function() return other.connections == 0 end, "the connections to close")
            wait_until(function() return core.stats().handles == base end, "the handles to be released")
        -- a hang guard only: 50 s on a loaded machine in the normal build, mostly waiting for
        -- the thread pool's sendfile jobs (closed connections send on until their job ends)
        end, { timeout = 300 })
        for k = 1, NFILES do os.remove(("%s/u%d.bin"):format(dir, k)) end
    end)

    it("a file changed under the cache is sent as it is now; a removed one is 404", function()
        local fresh, max_files = static.FRESH, static.MAX_FILES
        local _ <close> = setmetatable({}, { __close = function()
            static.FRESH, static.MAX_FILES = fresh, max_files
            static.flush()
        end })
        static.flush()
        -- the stat stays remembered and no file is kept open: the open of each answer finds
        -- the change, and the answer is prepared again from what it opened
        static.FRESH, static.MAX_FILES = 3600, 0
        local a = loom.app()
        a:static("/s", dir)
        put(dir .. "/v.bin", ("a"):rep(100000))
        put(dir .. "/gone.bin", ("g"):rep(100000))
        put(dir .. "/small2.txt", "one")
        serve(a, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert.equal(100000, #request(st, r, "GET", "/s/v.bin").body)
            assert.equal(100000, #request(st, r, "GET", "/s/gone.bin").body)
            assert.equal("one", request(st, r, "GET", "/s/small2.txt").body)
            put(dir .. "/v.bin", ("b"):rep(150000))
            os.remove(dir .. "/gone.bin")
            local res = request(st, r, "GET", "/s/v.bin", { Range = "bytes=0-99" })
            assert.equal(206, res.status)
            assert.equal("bytes 0-99/150000", res.headers["content-range"])
            res = request(st, r, "GET", "/s/v.bin")
            assert.equal(200, res.status)
            assert.equal("150000", res.headers["content-length"])
            assert.is_true(res.body == ("b"):rep(150000))
            assert.equal(404, request(st, r, "GET", "/s/gone.bin").status)
            -- a small file is answered from memory until its stat is looked at again
            put(dir .. "/small2.txt", "two!")
            assert.equal("one", request(st, r, "GET", "/s/small2.txt").body)
            static.FRESH = 0
            assert.equal("two!", request(st, r, "GET", "/s/small2.txt").body)
            -- files kept open: the look at the stat finds a rewrite in place and a rename
            static.MAX_FILES = max_files
            assert.is_true(request(st, r, "GET", "/s/v.bin").body == ("b"):rep(150000))
            put(dir .. "/v.bin", ("c"):rep(120000))
            assert.is_true(request(st, r, "GET", "/s/v.bin").body == ("c"):rep(120000))
            put(dir .. "/v.new", ("d"):rep(130000))
            assert(os.rename(dir .. "/v.new", dir .. "/v.bin"))
            assert.is_true(request(st, r, "GET", "/s/v.bin").body == ("d"):rep(130000))
        end)
    end)
end)

describe("app:static over HTTPS", function()
    local certs, dir
    setup(function()
        certs = os.tmpname()
        os.remove(certs)
        assert(os.execute("bash spec/support/make_certs.sh " .. certs), "make_certs.sh failed")
        dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        local parts = {}
        for i = 1, 3000 do parts[i] = ("%07d|"):format(i):rep(128) end
        put(dir .. "/big.bin", table.concat(parts))
    end)
    teardown(function() os.execute("rm -rf '" .. certs .. "' '" .. dir .. "'") end)

    it("sends a large file and a range through the TLS session, intact", function()
        local a = loom.app()
        a:static("/s", dir)
        local want = read_file(dir .. "/big.bin")
        run(function()
            local srv <close> = assert(a:listen{ host = "127.0.0.1", port = 0,
                tls = { cert = certs .. "/a.pem", key = certs .. "/a.key" } })
            local st <close> = assert(loom.connect("127.0.0.1", srv.port,
                { tls = { ca_file = certs .. "/ca.pem", server_name = "a.test" }, timeout = 5 }))
            local r = testing.reader(st)
            local res = request(st, r, "GET", "/s/big.bin")
            assert.equal(200, res.status)
            assert.is_true(res.body == want, "the file arrived altered")
            res = request(st, r, "GET", "/s/big.bin", { Range = "bytes=1000000-1999999" })
            assert.equal(206, res.status)
            assert.is_true(res.body == want:sub(1000001, 2000000), "the range arrived altered")
        end, { timeout = 30 })
    end)
end)

describe("app:static: a whole file without validators", function()
    local dir
    setup(function()
        dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        put(dir .. "/hello.txt", "Hello, World!")
    end)
    teardown(function() os.execute("rm -rf " .. dir) end)

    local function without_date(h)
        local t = {}
        for k, v in pairs(h) do if k ~= "date" then t[k] = v end end
        return t
    end

    it("is told from the head in C (req.headers not made), with the head the full check gives", function()
        local made = {}
        local a = loom.app()
        a:use(function(req, next)
            if req.target == "/s/hello.txt?range" then req.headers.range = "bytes=0-4" end
            local res = next()
            made[#made + 1] = rawget(req, "headers") ~= nil
            return res
        end)
        a:static("/s", dir)
        serve(a, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local fast = request(st, r, "GET", "/s/hello.txt")
            assert.equal(200, fast.status)
            assert.equal("Hello, World!", fast.body)
            assert.is_false(made[1], "req.headers was made for a plain GET")
            -- a validator that does not match: the answer through the full check, the same head
            local full = request(st, r, "GET", "/s/hello.txt", { ["If-None-Match"] = '"other"' })
            assert.equal(200, full.status)
            assert.equal("Hello, World!", full.body)
            assert.same(without_date(full.headers), without_date(fast.headers))
            assert.same({ "text/plain; charset=utf-8", "13", "bytes" }, { fast.headers["content-type"],
                fast.headers["content-length"], fast.headers["accept-ranges"] })
            assert.truthy(fast.headers.etag and fast.headers["last-modified"])
            local head = request(st, r, "HEAD", "/s/hello.txt")
            assert.equal("", head.body)
            assert.same(without_date(fast.headers), without_date(head.headers))
            assert.equal(304, request(st, r, "GET", "/s/hello.txt", { ["If-None-Match"] = fast.headers.etag }).status)
            assert.equal(304, request(st, r, "GET", "/s/hello.txt",
                { ["If-Modified-Since"] = fast.headers["last-modified"] }).status)
            local part = request(st, r, "GET", "/s/hello.txt", { Range = "bytes=7-" })
            assert.equal(206, part.status)
            assert.equal("World!", part.body)
            -- a Range a middleware put in req.headers is seen
            part = request(st, r, "GET", "/s/hello.txt?range")
            assert.equal(206, part.status)
            assert.equal("Hello", part.body)
        end)
    end)
end)
