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
