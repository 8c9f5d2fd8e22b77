-- permessage-deflate's compressor at a message's end (src/ws/ws_deflate.c): a message
-- whose last part holds nothing new (an empty last fragment after a flushed one, an empty
-- message after another) must still end in a form the peer inflates (0x00, RFC 7692
-- 7.2.3.6), not in nothing, after which the peer's inflater, given only 00 00 ff ff, is
-- left inside a stored block and takes the next message for garbage. Found by
-- fuzz/fuzz_ws_deflate. Over real sockets: loom's client and server, both compressing.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

local format, rep = string.format, string.rep

local function echo_server()
    local app = loom.app()
    app:ws("/echo", function(ws) for m, k in ws:each() do ws:send(m, k) end end, { compress = true })
    return assert(app:listen{ host = "127.0.0.1", port = 0 })
end

describe("permessage-deflate at a message's end", function()
    it("a compressed message with an empty last fragment, then more messages, reach the peer", function()
        run(function()
            local srv = echo_server()
            local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/echo", srv.port), { compress = true }))
            assert.is_string(ws.extensions)
            local sent = {
                { rep("first fragment ", 10), "" },
                { rep("a", 100), "", "" },
                { "", rep("b", 100), "" },
                { rep("context takeover ", 10) },
            }
            for _, parts in ipairs(sent) do
                assert.is_true(ws:send(parts))
                local got, kind = ws:receive()
                assert.equal(table.concat(parts), got, kind)
                assert.equal("text", kind)
            end
            srv:close()
        end)
    end)

    it("an empty message after another deflates to 0x00, and the peer inflates both and the next", function()
        run(function()
            local d, z = core.ws_deflater(15, false), core.ws_inflater(false)
            local msgs = { rep("x", 80), "", "", rep("y", 80) }
            for _, m in ipairs(msgs) do
                local c = d:deflate(m, true)
                if m == "" then assert.equal("\0", c) end
                assert.equal(m, z:inflate(c, true, 1000))
            end
        end)
    end)
end)
