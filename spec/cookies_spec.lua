-- loom.cookies as plain functions: what a server's Set-Cookie values cannot do to the jar.
-- The jar's matching rules are in client_spec ("cookies"); cases here came from
-- fuzz/fuzz_cookies and the review around it (docs/fuzzing.md).
local cookies = require "loom.cookies"

local u = { scheme = "http", host = "a.example.com", path = "/dir/page" }
local us = { scheme = "https", host = "a.example.com", path = "/dir/page" }

-- A fresh jar holding the Set-Cookie values given, for a response to `to`.
local function store_for(to, ...)
    local jar, raw = cookies.new(), {}
    for _, v in ipairs { ... } do raw[#raw + 1], raw[#raw + 2] = "set-cookie", v end
    jar:store(raw, to)
    return jar
end

local function store(...)
    return store_for(u, ...)
end

-- The stored cookie named `name` (the jar's own record), or nil.
local function stored(jar, name)
    for _, c in pairs(jar.list) do
        if c.name == name then return c end
    end
    return nil
end

describe("cookies.store", function()
    it("ignores a Domain that is an address other than the host's", function()
        -- fuzz_cookies: a name that ends in ".10.0.0.1" kept a host-only cookie whose domain
        -- was the address, not the host
        local to = { scheme = "http", host = "10.0.10.0.0.1", path = "/" }
        local jar = store_for(to, "a=1; Domain=10.0.0.1", "b=2")
        assert.is_nil(stored(jar, "a"))
        assert.equal("b=2", jar:header(to))
        local ip = { scheme = "http", host = "10.0.0.1", path = "/" }
        jar = store_for(ip, "a=1; Domain=10.0.0.1")
        assert.equal("10.0.0.1", stored(jar, "a").domain)
        assert.is_true(stored(jar, "a").host_only)
        assert.equal("a=1", jar:header(ip))
    end)

    it("takes long runs of blanks in linear time", function()
        -- "^%s*([^=]-)%s*=%s*(.-)%s*$" backtracked: cubic in a run of blanks without "="
        -- ("a=b;" and 2000 spaces took 11 s), quadratic with one
        local blanks = string.rep(" ", 60000)
        local t0 = os.clock()
        local jar = store("a=b;" .. blanks .. "x", blanks .. "x", "c=" .. blanks .. "d" .. blanks,
            "e=f;" .. blanks .. "=" .. blanks .. "g", "h = i ;" .. blanks .. "Path =" .. blanks .. "/dir")
        assert.is_true(os.clock() - t0 < 1, tostring(os.clock() - t0))
        assert.equal("a=b; c=d; e=f; h=i", jar:header(u))
    end)

    it("trims names, values and attributes as before", function()
        local jar = store_for(us, "  n  =  v w  ; Path = /dir ;  Secure ", "\tm\t=\t1\t")
        assert.equal("m=1", jar:header(u))
        assert.equal("m=1; n=v w", jar:header({ scheme = "https", host = u.host, path = "/dir/x" }))
        assert.equal(2, jar.count)
    end)

    it("ignores a Secure cookie set over plain http (RFC 6265bis 5.7)", function()
        local jar = store("s=1; Secure", "t=1; secure; Path=/", "plain=1")
        assert.equal(1, jar.count)
        assert.is_nil(jar:get("s"))
        assert.is_nil(jar:get("t"))
        assert.equal("plain=1", jar:header(us))
        -- over https it is kept, and sent over https only
        jar = store_for(us, "s=1; Secure", "plain=1")
        assert.equal(2, jar.count)
        assert.equal("plain=1; s=1", jar:header(us))
        assert.equal("plain=1", jar:header(u))
        -- a plain http response cannot delete it either: its Secure deletion is ignored
        jar:store({ "set-cookie", "s=; Secure; Max-Age=0" }, u)
        assert.equal("plain=1; s=1", jar:header(us))
    end)

    it("ignores a cookie from plain http that would overwrite or shadow a Secure one (6265bis 5.7)", function()
        local sub = { scheme = "http", host = "b.a.example.com", path = "/dir/sub/page" }
        local jar = store_for(us, "s=1; Secure; Path=/dir", "t=1; Secure; Path=/dir/deep")
        jar:store({ "set-cookie", "s=2; Path=/dir", -- the same cookie: would overwrite it
            "set-cookie", "s=; Max-Age=0; Path=/dir", -- would delete it
            "set-cookie", "s=3; Path=/dir/x", -- a path under its path: would shadow it
            "set-cookie", "s=4; Domain=example.com; Path=/dir", -- a domain above its host
            "set-cookie", "t=2; Path=/", -- "/" does not path-match "/dir/deep": kept
            "set-cookie", "u=1; Path=/dir" }, u) -- another name: kept
        assert.equal("1", jar:get("s"))
        assert.equal(4, jar.count)
        jar:store({ "set-cookie", "s=5; Path=/dir/sub" }, sub) -- a host under its host, over http
        assert.equal(4, jar.count)
        assert.equal("t=1; s=1; u=1; t=2", jar:header({ scheme = "https", host = u.host, path = "/dir/deep" }))
        -- over https the same Set-Cookie replaces it
        jar:store({ "set-cookie", "s=6; Path=/dir" }, us)
        assert.equal("6", jar:get("s"))
        assert.equal("t=1; s=6; u=1; t=2", jar:header({ scheme = "https", host = u.host, path = "/dir/deep" }))
    end)

    it("ignores a Set-Cookie holding a control character other than tab", function()
        local ignored = {}
        for b = 0, 31 do
            if b ~= 9 then ignored[#ignored + 1] = b end
        end
        ignored[#ignored + 1] = 127
        for _, b in ipairs(ignored) do
            local ch = string.char(b)
            for _, v in ipairs { "n" .. ch .. "x=1", "n=1" .. ch .. "x", "n=1; Path=/" .. ch, ch .. "n=1" } do
                local jar = store(v)
                assert.equal(0, jar.count, ("%q"):format(v))
            end
        end
        -- tab is allowed, and trimmed around names and values; bytes past 0x7f are kept
        local jar = store("n=a\tb", "m=\xc3\xa9")
        assert.equal("a\tb", jar:get("n"))
        assert.equal("\xc3\xa9", jar:get("m"))
    end)

    it("takes Max-Age only as an optional '-' and digits, else ignores the attribute", function()
        local now = os.time()
        -- ignored: the cookie is kept, for the session (these were 16 s, 0, 1000 s, -0.5...)
        for _, v in ipairs { "0x10", "0x0", "1e3", "1.5", "-0.5", "+5", "- 5", "5s", "", "-", " 1 2", "inf", "nan" } do
            local jar = store("n=1; Max-Age=" .. v)
            assert.equal(1, jar.count, v)
            assert.is_nil(stored(jar, "n").expires, v)
        end
        -- ignored Max-Age leaves Expires in force
        local jar = store("n=1; Max-Age=1.5; Expires=Wed, 21 Oct 2015 07:28:00 GMT")
        assert.equal(0, jar.count)
        -- digits: seconds from now; zero or negative deletes
        jar = store("n=1; Max-Age=60", "z=1; Max-Age=0", "m=1; Max-Age=-5", "w=1; Max-Age = 007 ")
        assert.equal(2, jar.count)
        local e = stored(jar, "n").expires
        assert.is_true(e >= now + 60 and e <= os.time() + 60)
        assert.is_true(stored(jar, "w").expires >= now + 7)
        -- a later Max-Age=-1 deletes
        jar:store({ "set-cookie", "n=1; Max-Age=-1" }, u)
        assert.is_nil(jar:get("n"))
    end)
end)

describe("cookies: limits (RFC 6265 6.1, 6265bis 5.7)", function()
    it("ignores a cookie whose name and value pass 4096 bytes together", function()
        local jar = store("n=" .. string.rep("v", 4096), "m=" .. string.rep("v", 4095))
        assert.is_nil(jar:get("n"))
        assert.equal(4095, #jar:get("m"))
        assert.equal(1, jar.count)
    end)

    it("cuts Max-Age and Expires to 400 days", function()
        local now = os.time()
        local jar = store("a=1; Max-Age=999999999", "b=1; Expires=Fri, 01 Jan 9999 00:00:00 GMT")
        for _, name in ipairs { "a", "b" } do
            local e = stored(jar, name).expires
            assert.is_true(e >= now + 400 * 86400 and e <= os.time() + 400 * 86400, name)
        end
    end)

    it("keeps 50 cookies per domain, dropping the least recently used", function()
        local jar = cookies.new()
        jar:store({ "set-cookie", "c1=1; Path=/x" }, u)
        for i = 2, 50 do jar:store({ "set-cookie", "c" .. i .. "=1" }, u) end
        assert.equal(50, jar.count)
        -- c1 alone is sent (used) again, so c2 is the least recently used
        assert.equal("c1=1", jar:header({ scheme = "http", host = u.host, path = "/x/y" }))
        jar:store({ "set-cookie", "c51=1" }, u)
        assert.equal(50, jar.count)
        assert.is_nil(jar:get("c2"))
        assert.equal("1", jar:get("c51"))
        -- replacing a stored cookie uses it, and takes no room
        jar:store({ "set-cookie", "c3=2" }, u)
        assert.equal(50, jar.count)
        jar:store({ "set-cookie", "c52=1" }, u)
        assert.is_nil(jar:get("c4"))
        assert.equal("2", jar:get("c3"))
        assert.equal("1", jar:get("c1"))
        -- another domain has room of its own
        jar:store({ "set-cookie", "o=1" }, { scheme = "http", host = "other.example", path = "/" })
        assert.equal(51, jar.count)
    end)

    it("keeps 3000 cookies in all, and expired ones go first", function()
        local jar = cookies.new()
        for d = 1, 60 do
            local to = { scheme = "http", host = "h" .. d .. ".example", path = "/" }
            for i = 1, 50 do jar:store({ "set-cookie", "c" .. i .. "=1" }, to) end
        end
        assert.equal(3000, jar.count)
        assert.equal("1", jar:get("c1", "h1.example"))
        jar:store({ "set-cookie", "new=1" }, { scheme = "http", host = "new.example", path = "/" })
        assert.equal(3000, jar.count)
        assert.is_nil(jar:get("c1", "h1.example")) -- the least recently used of all
        assert.equal("1", jar:get("new", "new.example"))
        -- an expired cookie (here the newest) is dropped before the least recently used
        jar.list["h60.example;/;c50"].expires = os.time() - 1
        jar:store({ "set-cookie", "newer=1" }, { scheme = "http", host = "new.example", path = "/" })
        assert.equal(3000, jar.count)
        assert.is_nil(jar.list["h60.example;/;c50"])
        assert.equal("1", jar:get("c2", "h1.example"))
    end)
end)

-- Issue 18 (#18): a Domain attribute that is a public suffix would let one site set
-- cookies for all its neighbours ("Domain=co.uk" from evil.co.uk, sent to bank.co.uk).
describe("cookies: public suffixes (RFC 6265 5.3 step 5)", function()
    local files = cookies.PUBLIC_SUFFIX_FILES
    local SYSTEM_LIST = "/usr/share/publicsuffix/public_suffix_list.dat"
    after_each(function()
        cookies.PUBLIC_SUFFIX_FILES = files
        cookies.set_public_suffix_list(nil)
    end)

    local function at(host, path)
        return { scheme = "https", host = host, path = path or "/" }
    end

    -- Domain cookies set from `from`; returns the jar.
    local function set(from, ...)
        return store_for(at(from), ...)
    end

    it("refuses Domain=co.uk from evil.co.uk, keeps Domain=example.co.uk (the system's list)", function()
        assert(io.open(SYSTEM_LIST), "needs the publicsuffix package (scripts/deps.sh)"):close()
        local jar = set("evil.co.uk", "a=1; Domain=co.uk", "b=1; Domain=.CO.UK", "c=1; Domain=uk")
        assert.equal(0, jar.count)
        assert.is_nil(jar:header(at("bank.co.uk")))
        jar = set("www.example.co.uk", "a=1; Domain=example.co.uk", "b=1; Domain=co.uk")
        assert.equal(1, jar.count)
        assert.equal("a=1", jar:header(at("api.example.co.uk")))
        assert.is_nil(jar:header(at("bank.co.uk")))
        -- a private-section suffix too: github.io pages are separate sites
        jar = set("evil.github.io", "a=1; Domain=github.io")
        assert.equal(0, jar.count)
        -- a Unicode rule matches its ASCII (punycode) form: 公司.cn is xn--55qx5d.cn
        jar = set("evil.xn--55qx5d.cn", "a=1; Domain=xn--55qx5d.cn", "b=1; Domain=evil.xn--55qx5d.cn")
        assert.equal(1, jar.count)
        assert.equal("1", jar:get("b"))
        assert.is_true(cookies.is_public_suffix("xn--55qx5d.cn"))
    end)

    it("follows wildcard and exception rules", function()
        cookies.set_public_suffix_list("// a comment\n*.ck\n!www.ck\nuk\nco.uk  trailing words\n\n")
        -- *.ck: any name under ck is a suffix, so b.ck may not set for itself and a.b.ck not for b.ck
        assert.is_true(cookies.is_public_suffix("b.ck"))
        local jar = set("a.b.ck", "x=1; Domain=b.ck", "y=1; Domain=ck", "z=1; Domain=a.b.ck")
        assert.equal(1, jar.count)
        assert.equal("z=1", jar:header(at("c.a.b.ck")))
        -- !www.ck: www.ck is a registrable name, under the suffix ck
        assert.is_false(cookies.is_public_suffix("www.ck"))
        jar = set("shop.www.ck", "x=1; Domain=www.ck")
        assert.equal("x=1", jar:header(at("mail.www.ck")))
        assert.is_nil(jar:header(at("other.ck")))
        -- the rest of the line after a blank is ignored; comments are not rules
        assert.is_true(cookies.is_public_suffix("co.uk"))
        assert.is_true(cookies.is_public_suffix("org")) -- "*": any single label
        assert.is_false(cookies.is_public_suffix("example.org"))
    end)

    it("makes a Domain that is a public suffix and the host itself host-only", function()
        cookies.set_public_suffix_list("uk\nco.uk\n*.ck\n")
        local jar = set("co.uk", "a=1; Domain=co.uk; Path=/")
        assert.equal(1, jar.count)
        assert.is_true(stored(jar, "a").host_only)
        assert.equal("a=1", jar:header(at("co.uk")))
        assert.is_nil(jar:header(at("bank.co.uk")))
        jar = set("b.ck", "a=1; Domain=B.CK")
        assert.equal("a=1", jar:header(at("b.ck")))
        assert.is_nil(jar:header(at("a.b.ck")))
    end)

    it("reads the list once, the first time a Domain attribute needs it", function()
        local dir = os.tmpname()
        os.remove(dir)
        cookies.PUBLIC_SUFFIX_FILES = { dir .. ".missing", dir }
        cookies.set_public_suffix_list(nil)
        -- no Domain attribute: the list is not needed, and not read yet
        set("www.example.test", "a=1")
        local f = assert(io.open(dir, "w"))
        f:write("test\nexample.test\n")
        f:close()
        local jar = set("www.example.test", "a=1; Domain=example.test", "b=1; Domain=www.example.test")
        assert.equal(1, jar.count)
        assert.equal("1", jar:get("b"))
        -- read once: a change to the file is not seen
        f = assert(io.open(dir, "w"))
        f:write("test\n")
        f:close()
        jar = set("www.example.test", "a=1; Domain=example.test")
        assert.equal(0, jar.count)
        os.remove(dir)
    end)

    it("without a list, takes every Domain attribute as the host's own (host-only)", function()
        cookies.set_public_suffix_list(false)
        assert.is_nil(cookies.is_public_suffix("co.uk"))
        local jar = set("www.example.com", "a=1; Domain=example.com", "b=1; Domain=www.example.com",
            "c=1; Domain=other.com")
        assert.equal(2, jar.count)
        assert.equal("a=1; b=1", jar:header(at("www.example.com")))
        assert.is_nil(jar:header(at("api.example.com")))
        -- the same when the files are missing
        cookies.PUBLIC_SUFFIX_FILES = { "/nonexistent/public_suffix_list.dat" }
        cookies.set_public_suffix_list(nil)
        jar = set("evil.co.uk", "a=1; Domain=co.uk")
        assert.equal("a=1", jar:header(at("evil.co.uk")))
        assert.is_nil(jar:header(at("bank.co.uk")))
    end)
end)
