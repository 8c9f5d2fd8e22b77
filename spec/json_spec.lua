-- loom.json.encode beyond what spec/tasks_spec covers: '/' is written as it is, never
-- "\/", and no string of a document (a client's, say) can turn into the [] of an empty
-- loom.json.array. Both are checked on the encoder alone and through a handler's answer.
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local json = loom.json

-- The placeholder loom.json used (up to 79029de) for empty arrays under lua-cjson 2.1.0.
local PLACEHOLDER = "\0loom:[]\0"

describe("loom.json.encode", function()
    it("writes '/' as it is, and a backslash before a slash as two characters", function()
        assert.equal('"a/b"', json.encode("a/b"))
        assert.equal('{"url":"http://x/y","</script>":"</script>"}',
            json.encode({ url = "http://x/y", ["</script>"] = "</script>" })
                :gsub('^{("</script>":"</script>"),("url":"http://x/y")}$', "{%2,%1}"))
        assert.equal([["\\/"]], json.encode("\\/"))     -- a backslash, then a slash
        assert.equal([["\\\\/"]], json.encode("\\\\/")) -- two backslashes, then a slash
        assert.equal([["\"/\n/"]], json.encode('"/\n/'))
        assert.equal('["/",[]]', json.encode({ "/", json.array() }))
    end)

    it("round-trips every mix of slashes, backslashes and quotes", function()
        local chars = { "/", "\\", '"', "u", "\0" }
        local function each(prefix, n)
            if n == 0 then
                local doc = { list = { prefix }, k = prefix, [prefix .. "/"] = prefix }
                assert.same(doc, json.decode(json.encode(doc)), ("%q"):format(prefix))
                return
            end
            for _, c in ipairs(chars) do each(prefix .. c, n - 1) end
        end
        each("", 4)
    end)

    it("never writes a string of the document as [], whatever it holds", function()
        local doc = {
            empty = json.array(),
            client = PLACEHOLDER,
            [PLACEHOLDER] = "key",
            quoted = 'x"' .. PLACEHOLDER,
            inner = "a" .. PLACEHOLDER .. "b",
            list = { PLACEHOLDER, json.array(), { json.array() } },
        }
        local text = json.encode(doc)
        local back = json.decode(text)
        assert.equal(PLACEHOLDER, back.client)
        assert.equal("key", back[PLACEHOLDER])
        assert.equal('x"' .. PLACEHOLDER, back.quoted)
        assert.equal("a" .. PLACEHOLDER .. "b", back.inner)
        assert.equal(PLACEHOLDER, back.list[1])
        assert.truthy(text:find('"empty":[]', 1, true), text)
        assert.truthy(text:find(',[],[[]]]', 1, true), text)
        -- and the document given is left as it was
        assert.equal(PLACEHOLDER, doc.client)
        assert.is_nil(next(doc.empty))
    end)

    it("keeps a client's strings in a handler's JSON answer beside an empty array", function()
        local app = loom.app()
        app:post("/echo", function(req)
            return { json = { items = json.array(), echo = assert(req:json()) } }
        end)
        run(function()
            local client <close> = testing.client(app)
            local sent = { name = PLACEHOLDER, path = "/a\\/b/" }
            local res = assert(client:post("/echo", { json = sent }))
            assert.equal(200, res.status)
            assert.same({ items = {}, echo = sent }, res:json())
            assert.truthy(res.body:find('"items":[]', 1, true), res.body)
            assert.truthy(res.body:find('"/a\\\\/b/"', 1, true), res.body)
        end)
    end)
end)

describe("the small JSON encoder of {json = v} answers (core.json_small)", function()
    -- src/lib/json.c encodes the commonest answers without cjson; it must write the very
    -- bytes loom.json.encode writes, and turn down (nil) what it cannot write the same way
    local core = require "loom.core"
    local small = core.json_small

    local rnd = 4242
    local function rand(n) -- a fixed pseudo-random walk: the same cases every run
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        return rnd % n
    end
    local BYTES = { "a", "Z", "0", " ", "/", "\\", '"', "\0", "\1", "\8", "\9", "\10", "\12", "\13",
        "\31", "\127", "\128", "\255", "\195\169", "\226\130\172", "{", "}", "[", ":", ",", "u" }
    local function rstring()
        local t = {}
        for i = 1, rand(8) do t[i] = BYTES[rand(#BYTES) + 1] end
        return table.concat(t)
    end
    local NUMBERS = { 0, 1, -1, 42, 99999999999999, -99999999999999, 0.5, -0.0, 1 / 3, 3.0, 1e300,
        -1e-300, 2 ^ 53, 123456.789, 1e14 - 0.5, math.pi, -2.5e-7 }
    local function rvalue(depth)
        local k = rand(depth > 3 and 4 or 7)
        if k == 0 then return rstring() end
        if k == 1 then return NUMBERS[rand(#NUMBERS) + 1] end
        if k == 2 then return rand(2) == 0 end
        if k == 3 then return json.null end
        local t = {}
        if k == 4 then -- an array
            for i = 1, rand(5) do t[i] = rvalue(depth + 1) end
        else -- an object
            for _ = 1, rand(5) do t[rstring()] = rvalue(depth + 1) end
        end
        return t
    end

    it("writes loom.json.encode's bytes for strings, numbers, booleans, null and plain tables", function()
        local taken = 0
        for _ = 1, 5000 do
            local v = rvalue(0)
            local got = small(v)
            if got ~= nil then
                taken = taken + 1
                assert.equal(json.encode(v), got)
            end
        end
        assert.truthy(taken > 4500, "taken " .. taken) -- only a long text is turned down here
        local users = { id = "42", page = "3" }
        assert.equal(json.encode(users), small(users))
        assert.equal('"a/b\\\\\\"\\n\\u0000\\u007f\\u001f\\b\\t\\f\\r"', small('a/b\\"\n\0\127\31\8\9\12\13'))
        assert.equal("[1,2,{},{}]", small({ 1, 2, {}, {} }))
        assert.equal(json.encode({ 1, 2, {}, {} }), small({ 1, 2, {}, {} }))
        assert.equal("99999999999999", small(99999999999999))
        assert.equal("-0", small(-0.0))
        assert.equal("1e+300", small(1e300))
        assert.equal("null", small(json.null))
    end)

    it("turns down what cjson writes otherwise, or raises on", function()
        local deep = {}
        for _ = 1, 16 do deep = { deep } end
        local list = {
            100000000000000, -100000000000000, math.maxinteger, 0 / 0, 1 / 0, -1 / 0, print,
            io.stdout, coroutine.create(print), { 1, nil, 3 }, { [2] = 1 }, { [0] = 1 },
            { 1, x = 2 }, { x = 1, [1] = 2 }, { [1.5] = 1 }, { [true] = 1 }, json.array(),
            json.array({ 1 }), setmetatable({}, {}), { a = setmetatable({}, {}) }, deep,
            string.rep("x", 4095), { string.rep("\1", 700) }, { x = print }, { { { math.mininteger } } },
        }
        for i, v in ipairs(list) do
            assert.is_nil(small(v), "case " .. i)
        end
        deep = {}
        for _ = 1, 15 do deep = { deep } end
        assert.equal(json.encode(deep), small(deep))
        assert.equal(4094, #small(string.rep("x", 4092)))
        for k = 4060, 4100 do -- the last bytes of the room, escapes included: all or nothing
            for _, tail in ipairs({ "", "\1", '"', "\1\1\1", "\n\127" }) do
                local v = { string.rep("x", k - 4100 + 4000), string.rep("y", 90) .. tail }
                local got = small(v)
                local want = json.encode(v)
                if #want <= 4096 then assert.equal(want, got) else assert.is_nil(got) end
            end
        end
    end)

    it("answers {json = v} as json.encode(v) through the server, turned-down values included", function()
        local values = { { id = "42", page = "3" }, { 1, 2, 3 }, "text", 7, false, json.null, {},
            { big = 2 ^ 60, list = json.array(), sparse = { [3] = 1 } }, { f = 0.1, u = "\226\130\172/" } }
        local app = loom.app()
        app:get("/v/{i}", function(req)
            local v = values[tonumber(req.params.i)]
            if req.query.status then return { json = v, status = tonumber(req.query.status) } end
            if req.query.extra then req.response_headers["x-extra"] = "1" end
            if req.query.other then return { json = v, headers = { ["x-other"] = "2" } } end
            return { json = v }
        end)
        app:get("/bad", function() return { json = { f = print } } end)
        run(function()
            local client <close> = testing.client(app)
            for i, v in ipairs(values) do
                for _, q in ipairs({ "", "?status=201", "?extra=1", "?other=1" }) do
                    local res = assert(client:get("/v/" .. i .. q))
                    assert.equal(q == "?status=201" and 201 or 200, res.status)
                    assert.equal("application/json", res.headers["content-type"])
                    assert.equal(json.encode(v), res.body, "value " .. i .. q)
                    assert.equal(q == "?extra=1" and "1" or nil, res.headers["x-extra"])
                    assert.equal(q == "?other=1" and "2" or nil, res.headers["x-other"])
                end
            end
            local res = assert(client:get("/bad"))
            assert.equal(500, res.status)
        end)
    end)
end)
