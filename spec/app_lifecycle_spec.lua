-- app:run's life: after SIGTERM it waits for the requests in flight, runs the shutdown
-- hooks, cancels the process's remaining tasks and returns, so one signal ends the process.
-- The app (spec/fixtures/app_lifecycle.lua) runs in the host (LOOM_BIN) as a child process;
-- it tells the spec over TCP when it serves and when its slow handler began, and writes
-- what happened, in order, to a notes file. The slow handler ends only after it has seen
-- the SIGTERM itself, so a drain test cannot pass without a request in flight, however
-- slow the machine.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local FIXTURE = HERE .. "/fixtures/app_lifecycle.lua"

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
end

local function lines_of(s)
    local t = {}
    for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
    return t
end

local function free_port()
    local l = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function() end })
    local port = l.port
    l:close()
    return port
end

-- Starts the fixture in `mode`; returns a handle whose :next_line() waits (15 s at most)
-- for the next line the app tells.
local function start(mode, workers)
    local c = { notes = os.tmpname(), log = os.tmpname(), lines = loom.queue(), port = free_port() }
    c.teller = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
        local l = st:read_line()
        st:close()
        if l then c.lines:put(l) end
    end })
    local cmd = ("exec %s %s %s %d %d %s %s >%s 2>&1"):format(LOOM, FIXTURE, mode, c.port, c.teller.port,
        c.notes, workers or "", c.log)
    c.p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
    function c.next_line()
        local l, err = loom.timeout(15, c.lines.get, c.lines)
        assert(l, "the app told nothing (" .. tostring(err) .. "); its output:\n" .. slurp(c.log))
        return l
    end
    -- waits for the process to end (20 s guard: past that it is killed and the spec fails)
    function c.wait()
        local code, sig = loom.timeout(20, c.p.wait, c.p)
        if code == nil then
            c.p:kill("SIGKILL")
            c.p:wait()
        end
        return code, sig
    end
    -- <close>: a process still running (a failed spec) is killed
    return setmetatable(c, { __close = function()
        if c.p:kill("SIGKILL") then loom.timeout(5, c.p.wait, c.p) end
        c.teller:close()
        os.remove(c.notes)
        os.remove(c.log)
    end })
end

-- GET /slow on a connection of its own, in a task: -> the whole response text
local function slow_request(port)
    return loom.spawn(function()
        local st = assert(loom.connect("127.0.0.1", port))
        assert(st:write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
        local parts = {}
        while true do
            local s = st:read()
            if not s then break end
            parts[#parts + 1] = s
            if table.concat(parts):find("slow done", 1, true) then break end
        end
        st:close()
        return table.concat(parts)
    end)
end

describe("app:run after SIGTERM", function()
    it("returns once the requests in flight are done", function()
        run(function()
            local c <close> = start("drain")
            assert.equal("ready", c.next_line())
            local req = slow_request(c.port)
            assert.equal("slow began", c.next_line())
            assert(c.p:kill("SIGTERM"))
            local ok, resp = req:join()
            assert.is_true(ok, resp)
            assert.matches("^HTTP/1.1 200", resp)
            assert.same({ 0, nil }, { c.wait() })
            assert.same({ "main slow saw SIGTERM", "main slow finished", "main after run true" }, lines_of(slurp(c.notes)), slurp(c.log))
        end, { timeout = 60 })
    end)

    it("cancels the remaining tasks, so one signal ends the process", function()
        run(function()
            local c <close> = start("ticker")
            assert.equal("ready", c.next_line())
            assert(c.p:kill("SIGTERM"))
            assert.same({ 0, nil }, { c.wait() }, slurp(c.log))
            assert.same({ "main ticker closed: cancelled", "main after run false ticker done true" },
                lines_of(slurp(c.notes)), slurp(c.log))
        end, { timeout = 60 })
    end)

    it("runs the shutdown hooks, then cancels the remaining tasks", function()
        run(function()
            local c <close> = start("hooks")
            assert.equal("ready", c.next_line())
            local req = slow_request(c.port)
            assert.equal("slow began", c.next_line())
            assert(c.p:kill("SIGTERM"))
            assert.is_true((req:join()))
            assert.same({ 0, nil }, { c.wait() }, slurp(c.log))
            assert.same({
                "main startup true",
                "main slow saw SIGTERM",
                "main slow finished",
                "main shutdown hook true true",
                "main second hook",
                "main ticker closed: cancelled",
                "main after run true ticker done true",
            }, lines_of(slurp(c.notes)), slurp(c.log))
        end, { timeout = 60 })
    end)

    it("cancels a handler still running after the grace period", function()
        run(function()
            local c <close> = start("stuck")
            assert.equal("ready", c.next_line())
            local req = loom.spawn(function()
                local st = assert(loom.connect("127.0.0.1", c.port))
                assert(st:write("GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n"))
                return st:read("a") -- the connection is cut at the grace period: no answer
            end)
            assert.equal("stuck began", c.next_line())
            local t0 = loom.now()
            assert(c.p:kill("SIGTERM"))
            assert.same({ true, "" }, { req:join() })
            assert.same({ 0, nil }, { c.wait() }, slurp(c.log))
            assert.is_true(loom.now() - t0 >= 0.3)
            assert.same({ "main stuck handler closed: cancelled", "main after run false" },
                lines_of(slurp(c.notes)), slurp(c.log))
        end, { timeout = 60 })
    end)

    it("leaves the tasks alone with cancel_tasks = false", function()
        run(function()
            local c <close> = start("keep")
            assert.equal("ready", c.next_line())
            assert(c.p:kill("SIGTERM"))
            assert.same({ 0, nil }, { c.wait() }, slurp(c.log))
            assert.same({
                "main startup true",
                "main shutdown hook true false",
                "main second hook",
                "main after run false ticker done false",
                "main ticker closed: cancelled", -- the script's own t:cancel() after app:run
            }, lines_of(slurp(c.notes)), slurp(c.log))
        end, { timeout = 60 })
    end)

    it("with workers, ends the workers' tasks and the supervisor's", function()
        run(function()
            local c <close> = start("workers", 2)
            assert.equal("ready", c.next_line())
            assert.equal("ready", c.next_line()) -- both workers wait for the signal
            local req = slow_request(c.port)
            assert.equal("slow began", c.next_line())
            assert(c.p:kill("SIGTERM"))
            assert.is_true((req:join()))
            assert.same({ 0, nil }, { c.wait() }, slurp(c.log))
            local count = {}
            for _, l in ipairs(lines_of(slurp(c.notes))) do count[l] = (count[l] or 0) + 1 end
            assert.same({
                ["worker startup true"] = 2,
                ["worker slow saw SIGTERM"] = 1, -- /slow was in flight when the signal came
                ["worker slow finished"] = 1,
                ["worker shutdown hook true true"] = 1, -- the worker that served /slow
                ["worker shutdown hook true false"] = 1,
                ["worker second hook"] = 2,
                ["worker ticker closed: cancelled"] = 4, -- the script's and on_startup's, in each
                ["worker after run true ticker done true"] = 1,
                ["worker after run false ticker done true"] = 1,
                ["main ticker closed: cancelled"] = 1,   -- the supervisor ran the script too
                ["main after run false ticker done true"] = 1,
            }, count, slurp(c.log))
        end, { timeout = 60 })
    end)
end)
