-- loom.url and the client's reference resolution, as plain functions: splitting URLs
-- (what is refused), and resolving a Location or a path against a base as RFC 3986 5.4
-- does. Cases here came from fuzz/fuzz_url (docs/fuzzing.md).
local url = require "loom.url"
local join = require("loom.client").join

describe("url.split", function()
    it("splits every part and lowercases scheme and host", function()
        assert.same({ scheme = "http", user = "u", password = "p w", host = "example.com", port = 8080,
            path = "/a/b", query = "x=1" }, url.split("HTTP://u:p%20w@Example.COM:8080/a/b?x=1#frag"))
        assert.same({ scheme = "https", host = "::1", port = 443, path = "/" }, url.split("https://[::1]"))
    end)

    it("refuses controls and spaces, which would reach the request line or Host raw", function()
        for _, s in ipairs { "http://h/a b", "http://h/a\r\nX-Injected: 1", "http://h\r\nX: y/",
            "http://h/?q=\0", "http://h/\127", " http://h/", "http://h/\t" } do
            assert.same({ nil, "invalid character in URL" }, { url.split(s) })
        end
    end)

    it("refuses a port past 65535", function()
        assert.same({ nil, "bad port in URL" }, { url.split("http://h:65536/") })
        assert.same({ nil, "bad port in URL" }, { url.split("http://h:99999999999999999999/") })
        assert.equal(65535, url.split("http://h:65535/").port)
        assert.equal(80, url.split("http://h:000080/").port)
    end)

    it("takes a long host or port in linear time", function()
        -- "^([^:]*):?(%d*)$" backtracked over digits: 60000 of them took seconds
        local digits = string.rep("1", 60000)
        local t0 = os.clock()
        assert.is_nil(url.split("http://" .. digits .. ":x/"))
        assert.equal(digits, url.split("http://" .. digits .. "/").host)
        assert.same({ nil, "bad port in URL" }, { url.split("http://h:" .. digits .. "/") })
        assert.is_true(os.clock() - t0 < 1, tostring(os.clock() - t0))
    end)

    it("makes loom.fetch raise on such a URL rather than send it", function()
        local loom = require "loom"
        loom.run(function()
            assert.error_matches(function() loom.fetch("http://127.0.0.1:1/a\r\nX: 1") end,
                "invalid character in URL")
            assert.error_matches(function() loom.fetch("http://127.0.0.1:70000/") end, "bad port in URL")
        end)
    end)
end)

describe("url.parse_query", function()
    it("splits on '&' only: a ';' belongs to its value (CVE-2021-23336)", function()
        local last, all = url.parse_query("a=1;b=2&c=3;&d")
        assert.same({ a = "1;b=2", c = "3;", d = "" }, last)
        assert.same({ a = { "1;b=2" }, c = { "3;" }, d = { "" } }, all)
        assert.same({ [";x"] = "y" }, (url.parse_query(";x=y")))
        assert.same({ a = "x y", b = "&" }, (url.parse_query("a=x+y&&b=%26&")))
        assert.same({ a = "2" }, (url.parse_query("a=1&a=2")))
    end)

    it("gives req.query and req:form() the same pairs", function()
        local loom = require "loom"
        local testing = require "loom.testing"
        local app = loom.app()
        app:post("/f", function(req) return { json = { q = req.query, f = req:form() } } end)
        loom.run(function()
            local client <close> = testing.client(app)
            local res = assert(client:post("/f?a=1;b=2&c=3", {
                body = "x=1;y=2&z=3", headers = { ["content-type"] = "application/x-www-form-urlencoded" } }))
            assert.same({ q = { a = "1;b=2", c = "3" }, f = { x = "1;y=2", z = "3" } }, res:json())
        end)
    end)
end)

describe("client join", function()
    -- RFC 3986 5.4.1 and 5.4.2 (strict: "http:g" is the URL http:g, as a reference with a
    -- scheme is absolute)
    local base = "http://a/b/c/d;p?q"
    local cases = {
        { "g:h", "g:h" }, { "http:g", "http:g" },
        { "g", "http://a/b/c/g" }, { "./g", "http://a/b/c/g" }, { "g/", "http://a/b/c/g/" },
        { "/g", "http://a/g" }, { "//g", "http://g" }, { "?y", "http://a/b/c/d;p?y" },
        { "g?y", "http://a/b/c/g?y" }, { "#s", "http://a/b/c/d;p?q" }, { "g#s", "http://a/b/c/g" },
        { ";x", "http://a/b/c/;x" }, { "g;x", "http://a/b/c/g;x" }, { "", "http://a/b/c/d;p?q" },
        { ".", "http://a/b/c/" }, { "./", "http://a/b/c/" }, { "..", "http://a/b/" },
        { "../", "http://a/b/" }, { "../g", "http://a/b/g" }, { "../..", "http://a/" },
        { "../../", "http://a/" }, { "../../g", "http://a/g" }, { "../../../g", "http://a/g" },
        { "/./g", "http://a/g" }, { "/../g", "http://a/g" }, { "g.", "http://a/b/c/g." },
        { "..g", "http://a/b/c/..g" }, { "./../g", "http://a/b/g" }, { "./g/.", "http://a/b/c/g/" },
        { "g/./h", "http://a/b/c/g/h" }, { "g/../h", "http://a/b/c/h" },
        { "g;x=1/../y", "http://a/b/c/y" }, { "/a/b/..", "http://a/a/" }, { "/..", "http://a/" },
    }
    it("resolves references as RFC 3986 5.4 does, a trailing '..' keeping its slash", function()
        for _, c in ipairs(cases) do
            assert.equal(c[2], (join(base, c[1])), "join of " .. c[1])
        end
    end)

    it("takes a reference with a scheme as absolute (RFC 3986 5.2.2), normalized", function()
        for _, c in ipairs {
            { "g:h", "g:h" }, { "G:h", "g:h" }, { "mailto:a@b.c", "mailto:a@b.c" },
            { "a:b/c", "a:b/c" }, { "foo:bar?x#y", "foo:bar?x" },
            { "HTTPS://Example.com/a/./b/../c?q#f", "https://Example.com/a/c?q" },
            { "http://x", "http://x" }, { "http://x/..", "http://x/" }, { "http://x?y", "http://x?y" },
            { "ftp://h/p/../q", "ftp://h/q" }, { "x+y.z-w:/p/./q", "x+y.z-w:/p/q" },
            -- not a scheme: a first segment that starts with a digit, or holds "_"
            { "1g:h", "http://a/b/c/1g:h" }, { "g_h:i", "http://a/b/c/g_h:i" }, { "./g:h", "http://a/b/c/g:h" },
        } do
            assert.equal(c[2], (join(base, c[1])), "join of " .. c[1])
        end
    end)
end)

describe("req.query's parser (core.req_query)", function()
    -- C parses req.query (src/http1/http_request.c); it must read a query string exactly as
    -- url.parse_query's first table does, escapes, '+', empty keys and '#' included
    local core = require "loom.core"
    local function same(a, b)
        for k, v in pairs(a) do if b[k] ~= v then return false end end
        for k in pairs(b) do if a[k] == nil then return false end end
        return true
    end
    it("agrees with url.parse_query on the target's query", function()
        local cases = { "/", "/a?", "/a?x=1", "/a?x=1&y=2&x=3", "/?a+b=c+d%20e", "/?%41%4=%zz%%41",
            "/?=x&&a&b=&c=d=e", "/?a=1#frag&b=2", "/?a=1&", "/?+=%2B", "/?%=%", "/?k=%4", "/?k=%41x",
            "/p?a=%", "/?a%00b=1", "/?a=%e4%f6&b=%C3%A9", "/?%2=1&%%=2" }
        local alphabet = "&=+%#?aF0z"
        local rnd = 12345
        for _ = 1, 3000 do -- a fixed pseudo-random walk: the same cases every run
            local t = { "/x?" }
            for _ = 1, 12 do
                rnd = (rnd * 1103515245 + 12345) % 2147483648
                local i = rnd % #alphabet + 1
                t[#t + 1] = alphabet:sub(i, i)
            end
            cases[#cases + 1] = table.concat(t)
        end
        for _, target in ipairs(cases) do
            local want = url.parse_query(target:match("%?([^#]*)") or "")
            local got = core.req_query(target)
            assert(same(want, got), "req_query differs for " .. target)
        end
    end)
end)
