-- Compression over real sockets: loom.app{ compress } (gzip and br chosen by Accept-Encoding,
-- Vary, ETags, the answers never coded, streams and SSE flushed per write) with loom's test
-- client, curl --compressed, Python (requests, urllib + brotli) and Node's zlib as peers; and
-- the client's br decoding (truncation, trailing bytes, bombs) against a loom server and a
-- Node one. See docs/server.md ("Compression") and docs/client.md ("Compressed bodies").
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local timing = require "support.timing"
local core = require "loom.core"

local TMP = os.getenv("TMPDIR") or "/tmp"
local HAS_BR = core.compress_codings and core.compress_codings.br == true
-- Debian's python3-brotli is for /usr/bin/python3 (a pyenv python3 first in PATH lacks it)
local PYTHON = io.open("/usr/bin/python3") and "/usr/bin/python3" or "python3"

local function tmpfile(tag)
    return ("%s/loom-cz-%d-%s-%s"):format(TMP, core.process_pid and core.process_pid() or 0, tag,
        loom.crypto.hex(loom.crypto.random(4)))
end

local function write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
end

-- Runs a shell command beside the loop; its exit code.
local function sh(cmd)
    local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
    return p:wait()
end

-- A peer's output, or a failure that says what the peer printed.
local function peer(cmd)
    local out = tmpfile("out")
    local rc = sh(cmd .. " >" .. out .. " 2>&1")
    local s = read_file(out) or ""
    os.remove(out)
    assert(rc == 0, ("peer failed (exit %s): %s\n%s"):format(tostring(rc), cmd, s))
    return s
end

-- A JSON answer of about 20 KB, as in the benchmark.
local BIG = {}
for i = 1, 200 do
    BIG[i] = { id = i, name = "user " .. i, email = ("user%d@example.com"):format(i), active = i % 2 == 0 }
end
local BIG_JSON = loom.json.encode(BIG)
local TEXT = ("All work and no play makes Jack a dull boy.\n"):rep(100) -- 4400 bytes

local function the_app(opts)
    local app = loom.app{ compress = opts or true }
    app:get("/json", function() return { json = BIG } end)
    app:get("/text", function() return TEXT end)
    app:get("/small", function() return ("s"):rep(1000) end)
    app:get("/png", function() return { body = TEXT, headers = { ["content-type"] = "image/png" } } end)
    app:get("/coded", function()
        return { body = TEXT, headers = { ["content-type"] = "text/plain", ["content-encoding"] = "identity" } }
    end)
    app:get("/off", function() return { text = TEXT, compress = false } end)
    app:get("/partial", function()
        return { status = 206, body = TEXT, headers = { ["content-type"] = "text/plain",
            ["content-range"] = "bytes 0-4399/9000" } }
    end)
    app:get("/etag", function(req)
        for tag in (req.headers["if-none-match"] or ""):gmatch("[^,]+") do -- a list (RFC 9110 13.1.2)
            tag = tag:match("^%s*(.-)%s*$")
            if tag == '"v1"' or tag == 'W/"v1"' then
                return { status = 304, headers = { etag = '"v1"' } }
            end
        end
        return { text = TEXT, headers = { etag = '"v1"', vary = "Cookie" } }
    end)
    app:get("/weak", function() return { text = TEXT, headers = { etag = 'W/"w2"' } } end)
    app:get("/seen", function(req) return { text = req.headers["if-none-match"] or "none" } end)
    -- a body the handler coded itself, with its own suffixed tag (as app:static's .br siblings)
    app:get("/pre", function(req)
        local h = { etag = '"p1-br"', ["content-type"] = "text/plain", ["content-encoding"] = "br" }
        if (req.headers["if-none-match"] or ""):find('"p1-br"', 1, true) then
            return { status = 304, headers = h }
        end
        return { body = "pretend br", headers = h }
    end)
    return app
end

local function with_client(app, body)
    run(function()
        local client <close>, srv = testing.client(app)
        return body(client, ("http://127.0.0.1:%d"):format(srv.port), srv)
    end, { timeout = 60 })
end

local function get(client, path, ae, extra)
    local h = { ["accept-encoding"] = ae }
    for k, v in pairs(extra or {}) do h[k] = v end
    return assert(client:get(path, { headers = h }))
end

local function is_gzip(body) return body:sub(1, 2) == "\31\139" end

describe("compress: negotiation", function()
    it("codes gzip for Accept-Encoding: gzip, with Vary and the coded Content-Length", function()
        with_client(the_app(), function(client)
            local res = get(client, "/json", "gzip")
            assert.equal(200, res.status)
            assert.equal("gzip", res.headers["content-encoding"])
            assert.equal("Accept-Encoding", res.headers["vary"])
            assert.equal(tostring(#res.body), res.headers["content-length"])
            assert.is_true(is_gzip(res.body))
            assert.is_true(#res.body < #BIG_JSON / 3)
        end)
    end)

    it("chooses by q-values: br first at equal q, q=0 refuses, * stands for the rest", function()
        local br = HAS_BR and "br" or "gzip"
        local cases = {
            { "gzip, br", br }, { "br, gzip", br }, { "br;q=0.5, gzip", "gzip" },
            { "gzip;q=0.4, br;q=0.9", br }, { "br;q=1.0, gzip;q=1", br },
            { "gzip;q=0, br;q=0", nil }, { "GZIP;Q=0.5", "gzip" }, { "x-gzip", "gzip" },
            { "*", br }, { "*;q=0, gzip", "gzip" }, { "br;q=0, *", "gzip" },
            { "identity", nil }, { "deflate", nil }, { "gzip;q=0", nil }, { "", nil },
            { " gzip ; q=0.001 ", "gzip" }, { "compress, gzip;q=0.5, identity;q=0.9", "gzip" },
        }
        with_client(the_app(), function(client)
            for _, c in ipairs(cases) do
                local res = get(client, "/text", c[1])
                assert.equal(c[2], res.headers["content-encoding"], "Accept-Encoding: " .. c[1])
                assert.equal("Accept-Encoding", res.headers["vary"], "Accept-Encoding: " .. c[1])
                if not c[2] then assert.equal(TEXT, res.body) end
            end
            local res = assert(client:get("/text")) -- no Accept-Encoding at all
            assert.is_nil(res.headers["content-encoding"])
            assert.equal(TEXT, res.body)
        end)
    end)

    it("leaves br out with br = false, and codes only the types and sizes asked for", function()
        local app = the_app{ br = false, min_size = 100, types = { "application/json", "image/*" }, level = 1 }
        with_client(app, function(client)
            assert.equal("gzip", get(client, "/json", "br, gzip").headers["content-encoding"])
            assert.equal("gzip", get(client, "/png", "br, gzip").headers["content-encoding"])
            local res = get(client, "/text", "br, gzip")
            assert.is_nil(res.headers["content-encoding"])
            assert.is_nil(res.headers["vary"]) -- text/plain is not in types: it never varies
        end)
    end)

    it("never codes HEAD, 206, 304, a coded answer, a small body, an image, or compress = false", function()
        with_client(the_app(), function(client)
            for _, path in ipairs({ "/small", "/png", "/coded", "/off", "/partial" }) do
                local res = get(client, path, "gzip, br")
                assert.equal(path == "/coded" and "identity" or nil, res.headers["content-encoding"], path)
                assert.equal(path == "/small" and ("s"):rep(1000) or TEXT, res.body, path)
                assert.is_nil(res.headers["vary"], path)
            end
            local res = assert(client:head("/json", { headers = { ["accept-encoding"] = "gzip" } }))
            assert.is_nil(res.headers["content-encoding"])
            assert.equal(tostring(#BIG_JSON), res.headers["content-length"])
            res = get(client, "/etag", "gzip", { ["if-none-match"] = '"v1"' })
            assert.equal(304, res.status)
            assert.is_nil(res.headers["content-encoding"])
            assert.equal('"v1"', res.headers["etag"]) -- the client's identity copy is current
        end)
    end)

    it("codes what middleware hands on, and keeps an answer's compress = false through it", function()
        local app = the_app()
        app:use(function(req, next)
            local res = next(req)
            res.headers = res.headers or {}
            res.headers["x-mw"] = "seen"
            return res
        end)
        with_client(app, function(client)
            local res = get(client, "/json", "gzip")
            assert.equal("gzip", res.headers["content-encoding"])
            assert.equal("seen", res.headers["x-mw"])
            res = get(client, "/off", "gzip")
            assert.is_nil(res.headers["content-encoding"])
            assert.equal("seen", res.headers["x-mw"])
            assert.equal(TEXT, res.body)
        end)
    end)

    it("rejects a bad compress option naming it", function()
        assert.error_matches(function() loom.app{ compress = "yes" } end, "option 'compress'")
        assert.error_matches(function() loom.app{ compress = { level = 10 } } end, "option 'compress': level")
        assert.error_matches(function() loom.app{ compress = { mystery = 1 } } end, "unknown option 'mystery'")
        assert.error_matches(function() loom.app{ compress = { types = "text/*" } } end, "types")
        assert.equal(nil, loom.app{ compress = false }.compress)
    end)
end)

describe("compress: ETags", function()
    it("suffixes the ETag per coding, keeps W/, and merges Vary", function()
        with_client(the_app(), function(client)
            local res = get(client, "/etag", "gzip")
            assert.equal('"v1-gzip"', res.headers["etag"])
            assert.equal("Cookie, Accept-Encoding", res.headers["vary"])
            if HAS_BR then assert.equal('"v1-br"', get(client, "/etag", "br").headers["etag"]) end
            assert.equal('"v1"', get(client, "/etag", "identity").headers["etag"])
            assert.equal('W/"w2-gzip"', get(client, "/weak", "gzip").headers["etag"])
        end)
    end)

    it("answers 304 to the coded copy's tag: the handler sees the identity tag too", function()
        with_client(the_app(), function(client)
            local res = get(client, "/etag", "gzip", { ["if-none-match"] = '"v1-gzip"' })
            assert.equal(304, res.status)
            assert.equal('"v1-gzip"', res.headers["etag"])
            assert.equal("", res.body)
            -- the handler sees each coded tag and its identity tag
            assert.equal('"a-gzip", W/"b-br", "c", "a", W/"b"', get(client, "/seen", "gzip",
                { ["if-none-match"] = '"a-gzip", W/"b-br", "c"' }).body)
            assert.equal('"x"', get(client, "/seen", "gzip", { ["if-none-match"] = '"x"' }).body)
            -- a handler's own suffixed tag still matches, and its 304 keeps the tag
            res = get(client, "/pre", "br", { ["if-none-match"] = '"p1-br"' })
            assert.equal(304, res.status)
            assert.equal('"p1-br"', res.headers["etag"])
            res = get(client, "/etag", "gzip", { ["if-none-match"] = '"v0-gzip"' }) -- stale
            assert.equal(200, res.status)
            assert.equal("gzip", res.headers["content-encoding"])
        end)
    end)
end)

describe("compress: streams", function()
    -- /sse writes an event, then waits for the test to say it arrived before the next one:
    -- the stream cannot end (nor fill a buffer) before the client has decoded the first.
    local function sse_app(gate)
        local app = loom.app{ compress = true }
        app:get("/sse", function(req)
            local out = assert(req:stream{ headers = { ["content-type"] = "text/event-stream" } })
            for i = 1, 3 do
                assert(out:write(("id: %d\ndata: event %d\n\n"):format(i, i)))
                if i < 3 then gate[i]:wait() end
            end
        end)
        app:get("/raw", function(req)
            local out = assert(req:stream{ headers = { ["content-type"] = "text/plain" }, compress = false })
            out:write(TEXT)
        end)
        app:get("/sized", function(req)
            local out = assert(req:stream{ headers = { ["content-type"] = "text/plain",
                ["content-length"] = #TEXT, etag = '"s1"' } })
            out:write(TEXT:sub(1, 1000))
            out:write(TEXT:sub(1001))
        end)
        return app
    end

    local function gates() return { loom.event(), loom.event() } end

    it("flushes each write: loom's client decodes event 1 before event 2 is written", function()
        local codings = HAS_BR and { "gzip", "br" } or { "gzip" }
        for _, coding in ipairs(codings) do
            local gate = gates()
            with_client(sse_app(gate), function(_, base)
                local res = assert(loom.fetch(base .. "/sse", { stream = true,
                    headers = { ["accept-encoding"] = coding } }))
                assert.equal(coding, res.headers["content-encoding"])
                assert.equal("chunked", res.headers["transfer-encoding"])
                local got = ""
                local n = 0
                for chunk in res:chunks() do
                    got = got .. chunk
                    while n < 2 and got:find(("data: event %d\n\n"):format(n + 1), 1, true) do
                        n = n + 1
                        gate[n]:set() -- the server writes the next event only now
                    end
                end
                assert.equal("id: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\nid: 3\ndata: event 3\n\n", got)
            end)
        end
    end)

    it("reaches curl --compressed -N event by event (gzip and br)", function()
        local codings = HAS_BR and { "gzip", "br" } or { "gzip" }
        for _, coding in ipairs(codings) do
            local gate = gates()
            with_client(sse_app(gate), function(_, base)
                local out = tmpfile("sse")
                local p = assert(core.process_spawn("/bin/sh", { "-c",
                    ("curl -sS -N --compressed -H 'Accept-Encoding: %s' --max-time 30 %s/sse >%s 2>&1")
                        :format(coding, base, out) }))
                for i = 1, 2 do
                    timing.poll(function()
                        local s = read_file(out)
                        return s and s:find(("data: event %d\n\n"):format(i), 1, true) ~= nil
                    end, 0.5, "curl saw event " .. i)
                    gate[i]:set()
                end
                assert.equal(0, p:wait())
                assert.equal("id: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\nid: 3\ndata: event 3\n\n",
                    read_file(out))
                os.remove(out)
            end)
        end
    end)

    it("codes a stream with a Content-Length as chunked, and leaves compress = false alone", function()
        with_client(sse_app(gates()), function(client)
            local res = get(client, "/sized", "gzip")
            assert.equal("gzip", res.headers["content-encoding"])
            assert.is_nil(res.headers["content-length"])
            assert.equal("chunked", res.headers["transfer-encoding"])
            assert.equal('"s1-gzip"', res.headers["etag"])
            assert.is_true(is_gzip(res.body))
            res = get(client, "/raw", "gzip")
            assert.is_nil(res.headers["content-encoding"])
            assert.equal(TEXT, res.body)
        end)
    end)
end)

describe("compress: real clients decode what loom sends", function()
    it("curl --compressed, gzip and br", function()
        with_client(the_app(), function(_, base)
            local path = tmpfile("json")
            for _, c in ipairs(HAS_BR and { "gzip", "br" } or { "gzip" }) do
                local head = peer(("curl -sS --compressed -H 'Accept-Encoding: %s' -D - -o %s %s/json")
                    :format(c, path, base))
                assert.truthy(head:lower():find("content-encoding: " .. c, 1, true), head)
                assert.equal(BIG_JSON, read_file(path))
            end
            os.remove(path)
        end)
    end)

    it("Python: requests (gzip) and urllib with the brotli module (br)", function()
        with_client(the_app(), function(_, base)
            local py = tmpfile("py")
            write_file(py, ([[
import sys, urllib.request, json, requests
r = requests.get("%s/json", headers={"Accept-Encoding": "gzip"})
assert r.headers["Content-Encoding"] == "gzip", r.headers
assert r.headers["Vary"] == "Accept-Encoding"
assert r.json() == json.loads(%q), "gzip body"
if "%s" == "br":
    import brotli
    q = urllib.request.Request("%s/json", headers={"Accept-Encoding": "br"})
    with urllib.request.urlopen(q) as f:
        assert f.headers["Content-Encoding"] == "br"
        raw = f.read()
    assert int(f.headers["Content-Length"]) == len(raw)
    assert json.loads(brotli.decompress(raw)) == json.loads(%q), "br body"
print("ok")
]]):format(base, BIG_JSON, HAS_BR and "br" or "", base, BIG_JSON))
            assert.equal("ok\n", peer(PYTHON .. " " .. py))
            os.remove(py)
        end)
    end)

    it("Node's zlib decodes br and gzip", function()
        with_client(the_app(), function(_, base)
            local js = tmpfile("js")
            write_file(js, ([[
const http = require("http"), zlib = require("zlib");
function get(ae) {
  return new Promise((ok, fail) => http.get("%s/json", { headers: { "accept-encoding": ae } }, (res) => {
    const parts = []; res.on("data", (d) => parts.push(d)); res.on("error", fail);
    res.on("end", () => ok([res.headers["content-encoding"], Buffer.concat(parts)]));
  }).on("error", fail));
}
(async () => {
  const want = %q;
  let [ce, body] = await get("gzip");
  if (ce !== "gzip" || zlib.gunzipSync(body).toString() !== want) throw new Error("gzip: " + ce);
  if (%s) {
    [ce, body] = await get("br");
    if (ce !== "br" || zlib.brotliDecompressSync(body).toString() !== want) throw new Error("br: " + ce);
  }
  console.log("ok");
})().catch((e) => { console.error(e); process.exit(1); });
]]):format(base, BIG_JSON, HAS_BR and "true" or "false"))
            assert.equal("ok\n", peer("node " .. js))
            os.remove(js)
        end)
    end)
end)

describe("client: br bodies", function()
    if not HAS_BR then
        it("is built with brotli", function()
            error("this loom was built without libbrotli (Debian: libbrotli-dev): br is not tested")
        end)
        return
    end

    local function br(s, level) return core.compress("br", s, level) end

    -- A br stream of n MiB of zeros, coded a MiB at a time (a bomb: a few hundred bytes).
    local function bomb(mib)
        local enc = core.compressor("br", 1)
        local zeros = ("\0"):rep(1 << 20)
        local t = {}
        for i = 1, mib do t[#t + 1] = enc:write(zeros, false) end
        t[#t + 1] = enc:finish()
        return table.concat(t)
    end

    -- Answers each path's raw bytes as Content-Encoding: br, as they are.
    local function raw_app(bodies)
        local app = loom.app()
        app:get("/{name}", function(req)
            return { body = bodies[req.params.name], headers = { ["content-type"] = "text/plain",
                ["content-encoding"] = "br" } }
        end)
        app:get("/ae/echo", function(req) return req.headers["accept-encoding"] or "none" end)
        return app
    end

    it("offers br and decodes it, whole and streamed", function()
        local coded = br(TEXT)
        with_client(raw_app{ ok = coded }, function(_, base)
            assert.equal("gzip, deflate, br", assert(loom.fetch(base .. "/ae/echo")):text())
            local res = assert(loom.fetch(base .. "/ok"))
            assert.equal(TEXT, res:text())
            res = assert(loom.fetch(base .. "/ok", { stream = true }))
            local t = {}
            for chunk in res:chunks() do t[#t + 1] = chunk end
            assert.equal(TEXT, table.concat(t))
            res = assert(loom.fetch(base .. "/ok", { decode = false }))
            assert.equal(coded, res:text())
        end)
    end)

    it("fails a truncated br body, bytes after its end, and a corrupt one as http errors", function()
        local coded = br(TEXT)
        with_client(raw_app{ cut = coded:sub(1, -3), tail = coded .. "xx", bad = "\255\255\255\255junk" },
            function(_, base)
                local res, err = loom.fetch(base .. "/cut")
                assert.is_nil(res)
                assert.matches("^http: truncated br body", err)
                res, err = loom.fetch(base .. "/tail")
                assert.is_nil(res)
                assert.matches("^http: undecodable compressed body: bytes after the end of the br stream", err)
                res, err = loom.fetch(base .. "/bad")
                assert.is_nil(res)
                assert.matches("^http: undecodable compressed body: corrupt br body", err)
            end)
    end)

    it("stops a br bomb at max_body: limit, not out of memory (whole and streamed)", function()
        local b = bomb(256) -- 256 MiB of zeros
        assert.is_true(#b < 64 * 1024, "a bomb is small: " .. #b)
        with_client(raw_app{ bomb = b }, function(_, base)
            local res, err = loom.fetch(base .. "/bomb") -- the default max_body, 64 MiB
            assert.is_nil(res)
            assert.matches("^limit: response body over 67108864 bytes %(max_body%)", err)
            res, err = loom.fetch(base .. "/bomb", { max_body = 1 << 20 })
            assert.is_nil(res)
            assert.matches("^limit: ", err)
            -- streamed: the piece that decodes past max_body fails the fetch, or the read
            res, err = loom.fetch(base .. "/bomb", { stream = true, max_body = 1 << 20 })
            if res then
                local ok, e = pcall(function() for _ in res:chunks() do end end)
                assert.is_false(ok)
                err = tostring(e)
                res:close()
            end
            assert.matches("^limit: decoded response body over 1048576 bytes unread", err)
        end)
    end)

    it("decodes br from a Node server (zlib.brotliCompressSync)", function()
        run(function()
            local js = tmpfile("srv")
            local portfile = tmpfile("port")
            write_file(js, ([[
const http = require("http"), zlib = require("zlib"), fs = require("fs");
const body = zlib.brotliCompressSync(Buffer.from(%s));
const srv = http.createServer((req, res) => {
  res.writeHead(200, { "content-encoding": "br", "content-type": "text/plain",
                       "x-ae": req.headers["accept-encoding"] || "" });
  res.end(body); srv.close();
});
srv.listen(0, "127.0.0.1", () => fs.writeFileSync(%q, String(srv.address().port)));
]]):format(loom.json.encode(TEXT), portfile))
            local p = assert(core.process_spawn("node", { js }))
            timing.poll(function() return (read_file(portfile) or "") ~= "" end, 1, "node listening")
            local res = assert(loom.fetch("http://127.0.0.1:" .. read_file(portfile) .. "/"))
            assert.equal("gzip, deflate, br", res.headers["x-ae"])
            assert.equal(TEXT, res:text())
            assert.equal(0, p:wait())
            os.remove(js)
            os.remove(portfile)
        end, { timeout = 30 })
    end)
end)
