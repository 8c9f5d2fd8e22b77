-- Happy Eyeballs (RFC 8305) in dialing: loom.dial races a name's addresses, each started
-- 250 ms after the one before or as soon as it failed, the first to connect wins and the
-- others are cancelled, all within connect_timeout. Over real loopback sockets: the black
-- hole is a listener whose accept queue is full (the kernel drops the SYNs, so a connect
-- to it hangs as to an address routed to nowhere), on 127.0.0.2 at the port loom listens
-- on at 127.0.0.1; nothing listens on 127.0.0.3 or 127.0.0.4 (refused at once). Name
-- lookups are faked by standing in for loom.resolver.resolve. The #namespaces case at the
-- end resolves a real name to a black-holed IPv6 address and 127.0.0.1 inside a private
-- network namespace (spec/fixtures/fault_dns.sh; run by smoke/fault_dns).
local loom = require "loom"
local core = require "loom.core"
local dial = require "loom.dial"
local resolver = require "loom.resolver"
local run = require "support.run"
local timing = require "support.timing"

local function wait_until(cond, what, secs)
    local deadline = loom.now() + (secs or 10)
    while not cond() do
        if loom.now() > deadline then error("timed out waiting for " .. what, 2) end
        loom.sleep(0.005)
    end
end

-- A python3 process holding listeners with full accept queues on 127.0.0.2 (and 127.0.0.5)
-- at one port, which loom then listens on at 127.0.0.1. Returns the port, the loom
-- listener (its `accepted` counts connections; it answers a line with "hi", a GET with
-- "fine") and a function that stops both.
local BLACKHOLE = [[
import socket, sys, time
def hole(ip, port):
    l = socket.socket(); l.bind((ip, port)); l.listen(0)
    for _ in range(2):  # fill the accept queue: further SYNs are dropped
        c = socket.socket(); c.setblocking(False); c.connect_ex((ip, l.getsockname()[1])); keep.append(c)
    keep.append(l)
    return l.getsockname()[1]
keep = []
port = hole("127.0.0.2", 0)
hole("127.0.0.5", port)
time.sleep(0.2)
print(port, flush=True)
sys.stdin.read()
]]

local function blackhole_and_listener()
    for _ = 1, 5 do -- the port python got may be taken at 127.0.0.1: try another
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        f:write(BLACKHOLE)
        f:close()
        local fifo = os.tmpname()
        os.remove(fifo)
        assert(os.execute("mkfifo " .. fifo))
        -- stdin from the fifo: python lives until the fifo's writer (held below) closes
        local p = assert(io.popen("python3 " .. path .. " <" .. fifo .. " & echo $!"))
        local hold = assert(io.open(fifo, "w"))
        local pid = tonumber(p:read("l"))
        local port = tonumber(p:read("l"))
        local function stop()
            hold:close()
            p:close()
            os.remove(path)
            os.remove(fifo)
            if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
        end
        assert(port, "the black-hole helper (python3) did not start")
        local accepted = { n = 0 }
        local srv = loom.listen{ host = "127.0.0.1", port = port, handler = function(st)
            accepted.n = accepted.n + 1
            local line = st:read_line()
            if line and line:find("^GET ") then -- enough HTTP for loom.fetch
                repeat line = st:read_line() until not line or line == ""
                st:write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfine")
            elseif line then
                st:write("hi\n")
            end
            st:close()
        end }
        if srv then return port, srv, accepted, stop end
        stop()
    end
    error("no port free at both 127.0.0.1 and 127.0.0.2")
end

-- Runs body(port, srv, accepted) with the black holes and the listener up; checks that
-- every handle the body made is released once it returned and the listener closed.
local function with_blackhole(body)
    local stop
    local ok, err = pcall(run, function()
        local base = core.stats().handles
        local port, srv, accepted
        port, srv, accepted, stop = blackhole_and_listener()
        body(port, srv, accepted)
        srv:close()
        -- within 5 s: long before any attempt's own deadline (60 s) would close it
        wait_until(function() return core.stats().handles == base end, "every attempt's handle to be released", 5)
    end, { timeout = 30 })
    if stop then stop() end
    assert(ok, err)
end

-- Stands in for the resolver: name -> addresses, for the body's time.
local function fake_dns(answers, body)
    local real = resolver.resolve
    resolver.resolve = function(name, timeout)
        if answers[name] then return answers[name] end
        return real(name, timeout)
    end
    local ok, err = pcall(body)
    resolver.resolve = real
    assert(ok, err)
end

describe("Happy Eyeballs: dial.interleave", function()
    it("alternate the families, starting with the first address's", function()
        assert.same({ "::1", "10.0.0.1", "::2", "10.0.0.2", "10.0.0.3" },
            dial.interleave({ "::1", "::2", "10.0.0.1", "10.0.0.2", "10.0.0.3" }))
        assert.same({ "10.0.0.1", "::1", "10.0.0.2", "::2", "::3" },
            dial.interleave({ "10.0.0.1", "10.0.0.2", "::1", "::2", "::3" }))
        assert.same({ "127.0.0.1" }, dial.interleave({ "127.0.0.1" }))
        assert.same({}, dial.interleave({}))
    end)
end)

describe("Happy Eyeballs: dial.race", function()
    it("fall back from a black hole to the next address after the attempt delay, and close the loser", function()
        with_blackhole(function(port, _, accepted)
            local t0 = loom.now()
            local st, ip, secs = dial.race({ "127.0.0.2", "127.0.0.1" }, port, loom.now() + 60)
            local took = loom.now() - t0
            assert.is_truthy(st, ip)
            assert.equal("127.0.0.1", ip)
            assert(st:write("x\n"))
            assert.equal("hi", st:read_line())
            -- not before the 250 ms attempt delay; long before the 60 s the black hole holds
            timing.within(took, 0.2, 0.25, "won")
            assert.is_true(secs < took, "the winning attempt alone took " .. secs)
            assert.equal(1, accepted.n)
            st:close()
        end)
    end)

    it("move on at once from an address that refuses, without waiting for the delay", function()
        with_blackhole(function(port)
            local delay = dial.ATTEMPT_DELAY
            -- a delay the race would have to sit out, far past the hang guard
            dial.ATTEMPT_DELAY = 60
            local _ <close> = setmetatable({}, { __close = function() dial.ATTEMPT_DELAY = delay end })
            local t0 = loom.now()
            local ok, st, ip = pcall(dial.race, { "127.0.0.3", "127.0.0.1" }, port, loom.now() + 120)
            assert(ok, st)
            local took = loom.now() - t0
            assert.is_truthy(st, ip)
            assert.equal("127.0.0.1", ip)
            assert.is_true(took < timing.guard(0), "took " .. took .. " (the delay is 60 s)")
            st:close()
        end)
    end)

    it("give the first attempt's error when every address fails", function()
        with_blackhole(function(port)
            local st, err = dial.race({ "127.0.0.3", "127.0.0.4" }, port, loom.now() + 60)
            assert.is_nil(st)
            assert.equal("connect: connection refused (127.0.0.3:" .. port .. ")", err)
            st, err = dial.race({}, port, loom.now() + 60)
            assert.is_nil(st)
            assert.is_nil(err)
        end)
    end)

    it("end the whole race at the deadline, with both black holes tried and closed", function()
        with_blackhole(function(port)
            local t0 = loom.now()
            local st, err = dial.race({ "127.0.0.2", "127.0.0.5", "127.0.0.3" }, port, loom.now() + 0.6)
            local took = loom.now() - t0
            -- the third (refusing) address was reached after two delays: its refusal is
            -- not the answer, the deadline is
            assert.is_nil(st)
            assert.equal("timeout", err)
            timing.within(took, 0.55, 0.6, "the race ended")
        end)
    end)

    it("cancel every attempt when the dialing task is cancelled", function()
        with_blackhole(function(port)
            local base = core.stats().handles
            local t = loom.spawn(dial.race, { "127.0.0.2", "127.0.0.5" }, port, loom.now() + 60)
            -- both attempts under way (the second after 250 ms): two sockets more
            wait_until(function() return core.stats().handles >= base + 2 end, "both attempts to start")
            t:cancel()
            local ok, err = t:join()
            assert.is_false(ok)
            assert.equal("cancelled", err)
        end)
    end)
end)

describe("Happy Eyeballs in loom.fetch and loom.connect", function()
    -- the default session's own handles, made once, before a spec counts handles
    setup(function() require("support.client_util").warm_default() end)

    it("fetch falls back within connect_timeout, and on_dns/on_connect tell which address won", function()
        with_blackhole(function(port)
            fake_dns({ ["he.test"] = { "127.0.0.2", "127.0.0.1" } }, function()
                local events = {}
                local function record(ev) events[#events + 1] = ev end
                local t0 = loom.now()
                local res, err = loom.fetch("http://he.test:" .. port .. "/", { connect_timeout = 20 })
                local took = loom.now() - t0
                assert.is_truthy(res, err)
                assert.equal(200, res.status)
                assert.equal("fine", res:text())
                local s = loom.session{ trace = { on_dns = record, on_connect = record } }
                assert.equal("fine", assert(s:get("http://he.test:" .. port .. "/", { connect_timeout = 20 })):text())
                s:close()
                -- not before the attempt delay; the connect timeout (20 s) is not what ended
                -- the first attempt (before, fetch waited it out and failed: timeout)
                assert.is_true(took >= 0.2, "took " .. took)
                assert.equal(2, #events)
                assert.same({ "127.0.0.2", "127.0.0.1" }, events[1].addresses)
                assert.equal("127.0.0.1", events[2].address)
                assert.equal(port, events[2].port)
            end)
        end)
    end)

    it("loom.connect falls back too, and names the host when connect_timeout ends the race", function()
        with_blackhole(function(port)
            fake_dns({ ["he.test"] = { "127.0.0.2", "127.0.0.1" }, ["hole.test"] = { "127.0.0.2", "127.0.0.5" } },
                function()
                    local st = assert(loom.connect("he.test", port, { timeout = 20 }))
                    assert(st:write("x\n"))
            assert.equal("hi", st:read_line())
                    st:close()
                    local t0 = loom.now()
                    local st2, err = loom.connect("hole.test", port, { timeout = 0.5 })
                    assert.is_nil(st2)
                    assert.equal("timeout: connect to hole.test:" .. port, err)
                    assert.is_true(loom.now() - t0 >= 0.45)
                end)
        end)
    end)
end)

describe("Happy Eyeballs through a real resolver #namespaces", function()
    -- spec/fixtures/fault_dns.sh runs the loom host in a network namespace whose resolver
    -- answers he*.test with 2001:db8:9::2 (routed to a tun device nobody reads: a black
    -- hole) and 127.0.0.1. The tag keeps this out of spec/happy_eyeballs: smoke/fault_dns
    -- runs it where namespaces are allowed and is reported skipped where not.
    local results, status

    setup(function()
        local loom_bin = assert(os.getenv("LOOM_BIN"), "LOOM_BIN (the loom host) is not set")
        local p = assert(io.popen("bash spec/fixtures/fault_dns.sh " .. loom_bin
            .. " spec/fixtures/fault_dns_happy_eyeballs.lua; echo status=$?"))
        local text = p:read("a")
        p:close()
        status = tonumber(text:match("status=(%d+)%s*$"))
        if status == 0 then results = loom.json.decode(text:match("^(.-)\nstatus=")) end
    end)

    local function check(fn)
        return function()
            assert.equal(0, status, status == 77 and "no user or network namespaces here"
                or status == 3 and "no tun device for the black hole here"
                or "spec/fixtures/fault_dns_happy_eyeballs.lua failed")
            fn()
        end
    end

    it("fall back from the black-holed IPv6 address to IPv4 after the attempt delay, not connect_timeout", check(function()
        -- about 250 ms: not before the delay; the hang guard (5.75 s) is far below
        -- connect_timeout (20 s), which the black hole took before (and failed: timeout)
        for _, name in ipairs({ "fetch", "connect", "trace" }) do
            local r = results[name]
            assert.is_true(r.ok, name .. ": " .. tostring(r.err))
            timing.within(r.secs, 0.2, 0.25, name)
        end
        assert.equal("fine", results.fetch.body)
        assert.same({ "2001:db8:9::2", "127.0.0.1" }, results.trace.dns)
        assert.equal("127.0.0.1", results.trace.connect)
    end))

    it("time out at connect_timeout when the black hole is the only address", check(function()
        local r = results.blackhole_only
        assert.is_false(r.ok)
        assert.matches("^timeout: connect to %[2001:db8:9::2%]:%d+$", r.err)
        assert.is_true(r.secs >= 0.39, "took " .. r.secs)
    end))
end)
