-- An upgrade hands the server connection's loom_sock to a stream (loom_stream_adopt) rather
-- than a duplicate descriptor: on HTTPS the TLS session stays in the sock, so the stream's
-- half-close goes through the shared layer (a close_notify, then the FIN after what is
-- queued) and the peer sees a clean TLS end, while the server goes on reading what the peer
-- sends after it. The peer is python3's ssl with ragged EOFs reported
-- (spec/fixtures/half_close_peer.py).
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

-- beside this file (the spec may run from another checkout's root)
local PEER = debug.getinfo(1, "S").source:match("^@(.*)upgrade_spec%.lua$") .. "fixtures/half_close_peer.py"

local CERTS = os.tmpname()
os.remove(CERTS)
assert(os.execute("bash " .. PEER:gsub("fixtures/half_close_peer%.py$", "support/make_certs.sh") .. " " .. CERTS),
    "make_certs.sh failed")
local function cert(name) return CERTS .. "/" .. name end

local function exepath(cmd)
    local p = io.popen("command -v " .. cmd)
    local path = p:read("l")
    p:close()
    return assert(path, cmd .. " not found")
end
local PYTHON = exepath("python3")

-- An app whose /half websocket answers the first message, half-closes its stream and then
-- still receives; what it saw lands in `seen`.
local function half_close_app(seen)
    local app = loom.app()
    app:ws("/half", function(ws)
        local first = assert(ws:receive())
        assert(ws:send("echo: " .. first))
        assert(ws.st:shutdown()) -- no more writes: the peer reads the end
        seen.after = ws:receive()   -- the read side is still open
        seen.rest = { ws:receive() } -- then the peer's close frame
    end)
    return app
end

-- Runs the peer against srv; returns its exit status and what it printed.
local function peer(srv, ca)
    local out = os.tmpname()
    local p = assert(core.process_spawn("/bin/sh", { "-c",
        string.format("exec %s %s %d /half %s > %s 2>&1", PYTHON, PEER, srv.port, ca or "", out) }))
    local code = p:wait()
    local f = assert(io.open(out))
    local text = f:read("a")
    f:close()
    os.remove(out)
    return code, text
end

describe("an upgrade hands the sock over", function()
    it("over TLS: the stream keeps the session; its half-close sends close_notify, then reads on", function()
        run(function()
            local seen = {}
            local srv <close> = assert(half_close_app(seen):listen{ host = "127.0.0.1", port = 0,
                tls = { cert = cert("a.pem"), key = cert("a.key") } })
            local code, out = peer(srv, cert("ca.pem"))
            assert.equal(0, code, out)
            assert.equal("HTTP/1.1 101 Switching Protocols\nframe 1 echo: first\nend close_notify\n", out)
            assert.equal("after your half-close", seen.after)
            assert.is_nil(seen.rest[1])
            assert.matches("^closed: 1000", seen.rest[2])
            -- the upgraded connection left the server: a graceful close does not wait for it
            assert.equal(0, srv.connections)
        end, { timeout = 20 })
    end)

    it("over plain TCP: the half-close is a FIN after the frame, and the server reads on", function()
        run(function()
            local seen = {}
            local srv <close> = assert(half_close_app(seen):listen{ host = "127.0.0.1", port = 0 })
            local code, out = peer(srv)
            assert.equal(0, code, out)
            assert.equal("HTTP/1.1 101 Switching Protocols\nframe 1 echo: first\nend fin\n", out)
            assert.equal("after your half-close", seen.after)
            assert.matches("^closed: 1000", seen.rest[2])
        end, { timeout = 20 })
    end)
end)
