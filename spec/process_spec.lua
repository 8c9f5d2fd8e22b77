-- loom.process: real child processes (echo, cat, sh, head) with pipes that are loom streams,
-- exit codes and signals, kill, a missing program, env and cwd, a 64 MiB flood read under
-- backpressure, and cancelled waits and reads (support.run checks that nothing is left; the
-- ASan build checks that nothing leaks).
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

local function tmpdir()
    local p = io.popen("mktemp -d")
    local d = p:read("l")
    p:close()
    return d
end

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
end

-- The state letter of process pid ("R", "S", "Z", ...), or nil once it is gone.
local function proc_state(pid)
    local s = slurp("/proc/" .. pid .. "/stat")
    return s and s:match("%) (%a)")
end

-- This process's resident set, in bytes.
local function rss()
    return tonumber(slurp("/proc/self/statm"):match("^%d+ (%d+)")) * 4096
end

describe("loom.process", function()
    it("runs a command and reads its output through a pipe", function()
        run(function()
            local p = assert(loom.process{ "echo", "hello", "world", stdout = "pipe" })
            assert.is_true(math.type(p.pid) == "integer" and p.pid > 0)
            assert.is_nil(p.stdin)
            assert.is_nil(p.stderr)
            assert.equal("hello world\n", p.stdout:read("a"))
            assert.same({ nil, "closed: end of stream" }, { p.stdout:read() })
            assert.same({ 0 }, { p:wait() })
            assert.same({ 0 }, { p:wait() }) -- again: the same answer
            p.stdout:close()
        end)
    end)

    it("round-trips 4 MiB through cat's stdin and stdout, a writer and a reader at once", function()
        run(function()
            local p = assert(loom.process{ "cat", stdin = "pipe", stdout = "pipe" })
            local chunk = ("0123456789abcdef"):rep(4096) -- 64 KiB
            local writer = loom.spawn(function()
                for _ = 1, 64 do assert(p.stdin:write(chunk)) end
                p.stdin:close()
            end)
            local got = assert(p.stdout:read("a"))
            writer:join()
            assert.equal(64 * #chunk, #got)
            assert.is_true(got == chunk:rep(64))
            assert.same({ 0 }, { p:wait() })
            p.stdout:close()
        end)
    end)

    it("fails a write to a child that stopped reading with closed", function()
        run(function()
            local p = assert(loom.process{ "head", "-c", "10", stdin = "pipe", stdout = "ignore" })
            local ok, err
            for _ = 1, 1000 do
                ok, err = p.stdin:write(("z"):rep(65536))
                if not ok then break end
            end
            assert.is_nil(ok)
            assert.matches("^closed: broken pipe", err)
            assert.same({ 0 }, { p:wait() })
            p.stdin:close()
        end)
    end)

    it("reads lines from stdout and stderr apart", function()
        run(function()
            local p = assert(loom.process{ "sh", "-c", "echo out1; echo err1 >&2; echo out2",
                stdout = "pipe", stderr = "pipe" })
            assert.equal("out1", p.stdout:read_line())
            assert.equal("out2", p.stdout:read_line())
            assert.equal("err1\n", p.stderr:read("a"))
            assert.same({ 0 }, { p:wait() })
            p.stdout:close()
            p.stderr:close()
        end)
    end)

    it("gives exit codes, and the signal that ended a process", function()
        run(function()
            assert.same({ 7 }, { assert(loom.process{ "sh", "-c", "exit 7" }):wait() })
            assert.same({ 0, "SIGTERM" },
                { assert(loom.process{ "sh", "-c", "kill -TERM $$" }):wait() })
            assert.same({ 0, "SIGSEGV" },
                { assert(loom.process{ "sh", "-c", "kill -SEGV $$" }):wait() })
        end)
    end)

    it("kills with SIGTERM or the signal named; a finished process cannot be", function()
        run(function()
            local p = assert(loom.process{ "sleep", "30" })
            assert.is_true(p:kill())
            assert.same({ 0, "SIGTERM" }, { p:wait() })
            assert.same({ nil, "closed: process has exited" }, { p:kill() })
            p = assert(loom.process{ "sleep", "30" })
            assert.is_true(p:kill("SIGKILL"))
            assert.same({ 0, "SIGKILL" }, { p:wait() })
            p = assert(loom.process{ "sleep", "30" })
            assert.has_error(function() p:kill("SIGNOPE") end)
            p:kill("SIGINT")
            assert.same({ 0, "SIGINT" }, { p:wait() })
        end)
    end)

    it("fails with the errno name for a missing program, leaving nothing behind", function()
        run(function()
            assert.same({ nil, "process: ENOENT no such file or directory (loom-no-such-cmd)" },
                { loom.process{ "loom-no-such-cmd", "x", stdin = "pipe", stdout = "pipe" } })
            assert.same({ nil, "process: ENOENT no such file or directory (/nonexistent/bin/x)" },
                { loom.process{ "/nonexistent/bin/x" } })
            local dir = tmpdir()
            local ok, err = loom.process{ "sh", cwd = dir .. "/missing" }
            os.execute("rm -rf " .. dir)
            assert.is_nil(ok)
            assert.matches("^process: ENOENT ", err)
        end)
    end)

    it("leaves the loop clean after a program that could not start (a loom host exits quietly)", function()
        run(function()
            local dir = tmpdir()
            local script = dir .. "/s.lua"
            local f = assert(io.open(script, "w"))
            f:write('print(loom.process{ "/nonexistent/bin/x", stdout = "pipe" })\n')
            f:close()
            local p = assert(loom.process{ os.getenv("LOOM_BIN") or "build/loom", script,
                stdout = "pipe", stderr = "pipe" })
            local out, err = p.stdout:read("a"), p.stderr:read("a")
            assert.same({ 0 }, { p:wait() })
            p.stdout:close()
            p.stderr:close()
            os.execute("rm -rf " .. dir)
            assert.equal("nil\tprocess: ENOENT no such file or directory (/nonexistent/bin/x)\n", out)
            assert.equal("", err) -- not "loom: internal error: the loop still has open handles"
        end)
    end)

    it("runs in cwd with env replacing the environment", function()
        run(function()
            local dir = tmpdir()
            local p = assert(loom.process{ "sh", "-c", 'pwd; echo "$FOO ${HOME-unset}"', cwd = dir,
                env = { FOO = "bar", PATH = os.getenv("PATH") }, stdout = "pipe" })
            local out = p.stdout:read("a")
            assert.same({ 0 }, { p:wait() })
            p.stdout:close()
            local real = io.popen("cd " .. dir .. " && pwd -P"):read("l")
            os.execute("rm -rf " .. dir)
            assert.is_true(out == dir .. "\nbar unset\n" or out == real .. "\nbar unset\n", out)
        end)
    end)

    it("reads a 64 MiB flood under backpressure: a reader that stops stops the pipe", function()
        run(function()
            local p = assert(loom.process{ "head", "-c", tostring(64 << 20), "/dev/zero", stdout = "pipe" })
            local first = assert(p.stdout:read())
            local before = rss()
            -- nobody reads for a while: the child must be blocked writing, not finished,
            -- and this process must not have taken its output into memory
            loom.sleep(0.3)
            assert.is_truthy(proc_state(p.pid), "head finished although nobody read")
            assert.not_equal("Z", proc_state(p.pid))
            assert.is_true(rss() - before < (8 << 20), "RSS grew by " .. (rss() - before))
            local n = #first
            while true do
                local s = p.stdout:read()
                if not s then break end
                n = n + #s
            end
            assert.equal(64 << 20, n) -- (RSS while reading it all: bench/process, 1 GiB)
            assert.same({ 0 }, { p:wait() })
            p.stdout:close()
        end, { timeout = 60 })
    end)

    it("cancels a task waiting for the process or reading its pipe", function()
        run(function()
            local p = assert(loom.process{ "cat", stdin = "pipe", stdout = "pipe" })
            local waiter = loom.spawn(function() return p:wait() end)
            local reader = loom.spawn(function() return p.stdout:read() end)
            loom.sleep(0)
            waiter:cancel()
            reader:cancel()
            assert.same({ false, "cancelled" }, { waiter:join() })
            assert.same({ false, "cancelled" }, { reader:join() })
            -- the process and its pipes still work for another task
            assert(p.stdin:write("after\n"))
            assert.equal("after", p.stdout:read_line())
            p.stdin:close()
            assert.same({ 0 }, { p:wait() })
            p.stdout:close()
            -- a process object dropped with its pipes open: collected, nothing is left
            local q = assert(loom.process{ "cat", stdin = "pipe", stdout = "pipe", stderr = "pipe" })
            q.stdin:close()
            assert.same({ 0 }, { q:wait() })
            q = nil
            collectgarbage()
        end)
    end)

    it("reaps a child whose process object was collected before it exited", function()
        local timing = require "support.timing"
        run(function()
            local p = assert(loom.process{ "sh", "-c", "read x", stdin = "pipe" })
            local pid, stdin = p.pid, p.stdin
            p = nil
            collectgarbage()
            collectgarbage()
            stdin:close() -- the child reads the end of its input and exits
            -- a child nobody reaps stays a zombie ("Z") until this process ends
            timing.poll(function() return proc_state(pid) == nil end, 0.2, "child reaped")
        end)
    end)

    it("raises on misuse, naming the argument or option", function()
        run(function()
            assert.has_error(function() loom.process("echo") end,
                "bad argument #1 to 'process' (table expected, got string)")
            assert.has_error(function() loom.process{} end)
            assert.has_error(function() loom.process{ "echo", {} } end)
            assert.has_error(function() loom.process{ "echo", stdout = "file" } end,
                "bad argument #1 to 'process' (option 'stdout': \"pipe\", \"inherit\" or \"ignore\" expected, got file)")
            assert.has_error(function() loom.process{ "echo", env = { 1 } } end)
            assert.has_error(function() loom.process{ "echo", cwd = 1 } end)
            assert.has_error(function() loom.process{ "echo", stdot = "pipe" } end,
                "bad argument #1 to 'process' (unknown option 'stdot')")
        end)
    end)
end)
