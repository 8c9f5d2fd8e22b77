-- loom.cookies as plain functions: what a server's Set-Cookie values cannot do to the jar.
-- The jar's matching rules are in client_spec ("cookies"); cases here came from
-- fuzz/fuzz_cookies and the review around it (docs/fuzzing.md).
local cookies = require "loom.cookies"

local u = { scheme = "http", host = "a.example.com", path = "/dir/page" }

local function store(...)
    local jar, raw = cookies.new(), {}
    for _, v in ipairs { ... } do raw[#raw + 1], raw[#raw + 2] = "set-cookie", v end
    jar:store(raw, u)
    return jar
end

describe("cookies.store", function()
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
        local jar = store("  n  =  v w  ; Path = /dir ;  Secure ", "\tm\t=\t1\t")
        assert.equal("m=1", jar:header(u))
        assert.equal("m=1; n=v w", jar:header({ scheme = "https", host = u.host, path = "/dir/x" }))
        assert.equal(2, jar.count)
    end)
end)
