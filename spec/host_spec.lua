-- The `loom` executable: arguments, -e/-v/-h, exit status, errors on stderr, and when the
-- process ends. Runs the host (LOOM_BIN, else build/loom) on scripts written to temp files.
local loom = require "loom"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function shell_quote(s)
    return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- Runs the host with `argv` (a list; "%s" in it is replaced by the script's path) and, if
-- given, `script` written to a temp file. Returns {code, out, err, secs}. Bounded by
-- coreutils timeout, so a host that never exits fails the spec (code 124).
local function host(argv, script)
    local path
    if script then
        path = os.tmpname()
        local f = assert(io.open(path, "wb"))
        f:write(script)
        f:close()
    end
    local out, err = os.tmpname(), os.tmpname()
    local words = {}
    for i, a in ipairs(argv) do
        words[i] = shell_quote(path and a == "%s" and path or a)
    end
    local cmd = ("timeout 10 %s %s >%s 2>%s </dev/null"):format(shell_quote(LOOM),
        table.concat(words, " "), out, err)
    local t0 = loom.now()
    local _, how, code = os.execute(cmd)
    local r = { code = how == "exit" and code or 128 + code, secs = loom.now() - t0,
        out = slurp(out), err = slurp(err), path = path }
    os.remove(out)
    os.remove(err)
    if path then os.remove(path) end
    return r
end

describe("the loom host", function()
    it("exists", function()
        local f = io.open(LOOM, "rb")
        assert.is_not_nil(f, "no loom executable at " .. LOOM .. " (set LOOM_BIN)")
        f:close()
    end)

    it("runs a script with arg and ... as lua does", function()
        local r = host({ "%s", "a", "b c" }, [[
            print(arg[0] == (...) and "?" or "ok", arg[1], arg[2], #arg)
            print(select("#", ...), ...)
        ]])
        assert.equal(0, r.code)
        assert.equal("ok\ta\tb c\t2\n2\ta\tb c\n", r.out)
        assert.equal("", r.err)
    end)

    it("sets arg[0] to the script path", function()
        local r = host({ "%s" }, [[io.write(arg[0])]])
        assert.equal(0, r.code)
        assert.equal(r.path, r.out)
    end)

    it("has the global loom, the same table as require 'loom'", function()
        local r = host({ "%s" }, [[print(type(loom), loom == require("loom"), type(loom.spawn))]])
        assert.equal("table\ttrue\tfunction\n", r.out)
    end)

    it("runs the script as a task: it may wait at top level", function()
        local r = host({ "%s" }, [[
            loom.sleep(0.01)
            local t = loom.spawn(function(x) loom.sleep(0.01) return x * 2 end, 21)
            print(t:join())
        ]])
        assert.equal(0, r.code)
        assert.equal("true\t42\n", r.out)
    end)

    it("-e runs code", function()
        local r = host({ "-e", "loom.sleep(0) print(1 + 1)" })
        assert.equal(0, r.code)
        assert.equal("2\n", r.out)
    end)

    it("-v prints the version", function()
        local r = host({ "-v" })
        assert.equal(0, r.code)
        assert.matches("^loom %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, libuv %d+%.%d+%.%d+, llhttp %d+%.%d+%.%d+, mbed TLS %d+%.%d+%.%d+, nghttp2 %d+%.%d+%.%d+%)\n$", r.out)
        assert.equal(loom.version, r.out:match("^loom (%S+)"))
    end)

    it("-h prints the usage on stdout", function()
        local r = host({ "-h" })
        assert.equal(0, r.code)
        assert.matches("^usage: ", r.out)
        assert.matches("%-e code", r.out)
    end)

    it("without a script prints the usage on stderr and fails", function()
        local r = host({})
        assert.equal(1, r.code)
        assert.matches("^usage: ", r.err)
    end)

    it("rejects an unknown option", function()
        local r = host({ "-x" })
        assert.equal(1, r.code)
        assert.matches("unrecognized option '%-x'", r.err)
    end)

    it("reports a script that cannot be loaded", function()
        local r = host({ "/nonexistent/script.lua" })
        assert.equal(1, r.code)
        assert.matches("^loom: cannot open /nonexistent/script%.lua", r.err)
        r = host({ "%s" }, "this is not lua")
        assert.equal(1, r.code)
        assert.matches("syntax error", r.err)
    end)

    describe("exit status", function()
        it("is 0 when the script ends normally", function()
            local r = host({ "%s" }, [[print("fine")]])
            assert.equal(0, r.code)
            assert.equal("fine\n", r.out)
            assert.equal("", r.err)
        end)

        it("is 1, with the error and a traceback on stderr, when the main chunk raises", function()
            local r = host({ "%s" }, [[
                local function inner() error("main failed") end
                inner()
            ]])
            assert.equal(1, r.code)
            assert.matches("main failed", r.err)
            assert.matches("stack traceback:", r.err)
            assert.matches("in %a+ 'inner'", r.err)
        end)

        it("is 1 when the main chunk raises after waiting", function()
            local r = host({ "-e", "loom.sleep(0.01) error('late')" })
            assert.equal(1, r.code)
            assert.matches("late", r.err)
        end)

        it("is 0 when a spawned task raises: its traceback is printed, the rest goes on", function()
            local r = host({ "%s" }, [[
                local function failing() error("task failed") end
                loom.spawn(function() failing() end)
                loom.spawn(function() loom.sleep(0.05) print("still running") end)
            ]])
            assert.equal(0, r.code)
            assert.equal("still running\n", r.out)
            assert.matches("task failed", r.err)
            assert.matches("stack traceback:", r.err)
            assert.matches("'failing'", r.err)
        end)

        it("prints nothing for a task whose error someone joined, or that was cancelled", function()
            local r = host({ "%s" }, [[
                local t = loom.spawn(function() error("seen") end)
                print(t:join())
                local u = loom.spawn(loom.sleep, 10)
                loom.sleep(0)
                u:cancel()
            ]])
            assert.equal(0, r.code)
            assert.matches("^false\t.*seen\n$", r.out)
            assert.equal("", r.err)
        end)

        it("is what loom.exit asked", function()
            assert.equal(3, host({ "-e", "loom.exit(3)" }).code)
            assert.equal(0, host({ "-e", "loom.exit()" }).code)
            assert.equal(0, host({ "-e", "loom.exit(true)" }).code)
            assert.equal(1, host({ "-e", "loom.exit(false)" }).code)
            local r = host({ "-e", "loom.sleep(0.01) loom.exit(7) print('not reached')" })
            assert.equal(7, r.code)
            assert.equal("", r.out)
        end)

        it("loom.exit in a task ends the process at once, whatever else is waiting", function()
            local r = host({ "%s" }, [[
                loom.spawn(function() loom.sleep(0.05) io.write("exiting\n") loom.exit(4) end)
                loom.spawn(function() loom.sleep(60) print("too late") end) -- far past the guard
                local srv = loom.listen{ host = "127.0.0.1", port = 0, handler = print }
            ]])
            assert.equal(4, r.code)
            assert.equal("exiting\n", r.out)
            assert.is_true(r.secs < 8, "took " .. r.secs)
        end)
    end)

    describe("lifetime", function()
        it("ends by itself when no work is left", function()
            local r = host({ "-e", "print('bye')" })
            assert.equal(0, r.code)
            assert.is_true(r.secs < 8, "took " .. r.secs) -- no hang; slow machines start slowly
        end)

        it("stays while a sleeping task remains", function()
            local r = host({ "%s" }, [[
                loom.spawn(function() loom.sleep(0.3) print("woke") end)
                print("main done")
            ]])
            assert.equal(0, r.code)
            assert.equal("main done\nwoke\n", r.out)
            assert.is_true(r.secs >= 0.28, "took " .. r.secs)
        end)

        it("stays while a listener is open, and ends when it is closed", function()
            local r = host({ "%s" }, [[
                local srv = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                    st:write("hi\n")
                    st:close()
                end })
                loom.spawn(function()
                    local c = assert(loom.connect("127.0.0.1", srv.port))
                    print(c:read_line())
                    c:close()
                    loom.sleep(0.2)
                    srv:close()
                    print("closed")
                end)
            ]])
            assert.equal(0, r.code)
            assert.equal("hi\nclosed\n", r.out)
            assert.is_true(r.secs >= 0.18, "took " .. r.secs)
        end)

        it("ends when the only task left waits for something nothing can bring", function()
            local r = host({ "-e", "loom.spawn(function() loom.queue():get() end) print('x')" })
            assert.equal(0, r.code)
            assert.equal("x\n", r.out)
            assert.is_true(r.secs < 8, "took " .. r.secs) -- no hang; slow machines start slowly
        end)
    end)
end)
