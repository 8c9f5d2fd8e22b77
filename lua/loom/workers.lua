-- loom.workers: app:run{workers = N}. The supervisor starts N copies of the running script
-- with LOOM_WORKER set; each copy serves the same port through SO_REUSEPORT. A worker that
-- dies is restarted (after a second's pause if it died young); SIGINT or SIGTERM stops the
-- workers gracefully, each finishing its requests in flight, running the app's shutdown
-- hooks and cancelling its remaining tasks; the supervisor then cancels its own remaining
-- tasks (the script ran up to app:run there too) and returns.
local core = require "loom.core"

local M = {}

-- Keeps absorbing SIGINT/SIGTERM after the first, so a second signal (the terminal's Ctrl-C
-- reaches the whole process group, and the supervisor forwards SIGTERM) cannot kill a
-- process that is finishing its requests.
local function absorb_signals()
    return core.spawn(function()
        while true do core.wait_signal({ "SIGINT", "SIGTERM" }) end
    end)
end

local function command_line()
    if not arg or not arg[0] then
        error("app:run: workers need a script file to start again (not -e code)", 4)
    end
    local argv = { arg[0] }
    for i = 1, #arg do argv[#argv + 1] = arg[i] end
    local exe = core.exepath()
    local lo = 0
    while arg[lo - 1] do lo = lo - 1 end
    if lo < 0 then -- stock lua: arg[-1] is the interpreter, and any options before the script
        local pre = {}
        for i = lo + 1, -1 do pre[#pre + 1] = arg[i] end
        for i = #pre, 1, -1 do table.insert(argv, 1, pre[i]) end
    end
    return exe, argv
end

-- The worker side: listen with SO_REUSEPORT and serve until told to stop, then shut down
-- as app:run does in one process (hooks.shutdown).
local function serve(hooks, n, opts)
    local ppid = tonumber(os.getenv("LOOM_SUPERVISOR"))
    if ppid then core.exit_with_parent(ppid) end
    opts.reuseport = true
    local srv = hooks.listen()
    local unshare = hooks.started and hooks.started(tonumber(os.getenv("LOOM_WORKER")), n)
    core.wait_signal({ "SIGINT", "SIGTERM" })
    local absorber = absorb_signals()
    if unshare then unshare() end -- before shutdown, which may wait for every task to end
    hooks.shutdown(srv)
    absorber:cancel()
    return srv
end

-- hooks: listen() -> server, shutdown(srv) (a worker's), finish() (the supervisor's);
-- optional: prepare() (the supervisor's, before it starts the workers), started(i, n) (a
-- worker's, once it listens) -> nil or a function called when the worker is told to stop
function M.run(hooks, n, opts)
    if os.getenv("LOOM_WORKER") then return serve(hooks, n, opts) end
    if not opts.port or opts.port == 0 then
        error("app:run: workers need a fixed port (port 0 would give each worker its own)", 3)
    end
    local exe, argv = command_line()
    core.setenv("LOOM_SUPERVISOR", tostring(core.pid()))
    local procs, stopping, tasks = {}, false, {}
    io.stdout:write(("listening on http://%s:%d (%d workers)\n"):format(opts.host or "0.0.0.0", opts.port, n))
    io.stdout:flush()
    if hooks.prepare then hooks.prepare() end
    for i = 1, n do
        tasks[i] = core.spawn(function()
            while not stopping do
                core.setenv("LOOM_WORKER", tostring(i))
                local started = core.now()
                local p, err = core.process_spawn(exe, argv)
                if not p then
                    io.stderr:write(("loom: cannot start worker %d: %s\n"):format(i, err))
                    core.sleep(1)
                else
                    procs[i] = p
                    local code, sig = p:wait()
                    procs[i] = nil
                    if not stopping then
                        io.stderr:write(("loom: worker %d (pid %d) exited (%s); starting it again\n")
                            :format(i, p.pid, sig or ("status " .. code)))
                        if core.now() - started < 1 then core.sleep(1) end
                    end
                end
            end
        end)
    end
    local sig = core.wait_signal({ "SIGINT", "SIGTERM" })
    local absorber = absorb_signals()
    stopping = true
    io.stderr:write(("loom: %s, stopping %d workers\n"):format(sig, n))
    for _, p in pairs(procs) do p:kill("SIGTERM") end
    for _, t in ipairs(tasks) do t:join() end
    hooks.finish()
    absorber:cancel()
end

return M
