-- loom.fs reads: data the page cache holds is read in place (no thread pool round trip),
-- within a budget so a long read loop still lets other tasks run; a read that must wait
-- (a FIFO with nothing in it) goes to the thread pool, completes when data comes, and is
-- cancelled cleanly. Over real files and a real FIFO. The rest of loom.fs (write, stat,
-- list, errors, whole-file reads cancelled) is in spec/runtime_spec.lua.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

local function tmpdir()
    local p = io.popen("mktemp -d")
    local d = p:read("l")
    p:close()
    return d
end

local function spit(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
end

describe("loom.fs reads", function()
    local dir
    before_each(function() dir = tmpdir() end)
    after_each(function() os.execute("rm -rf " .. dir) end)

    it("read cached data in place, yet let other tasks run every few MiB", function()
        run(function()
            local path = dir .. "/big"
            local block = ("0123456789abcdef"):rep(1 << 16) -- 1 MiB
            spit(path, block:rep(32))
            local whole = assert(loom.fs.read(path)) -- now in the page cache
            assert.equal(32 << 20, #whole)
            local f <close> = assert(loom.fs.open(path))
            local ran = false
            local t = loom.spawn(function() ran = true end)
            assert.equal("0123", f:read(4))
            assert.is_false(ran, "the read of cached data waited for the thread pool")
            t:join()
            -- the other task counts the turns it gets while this one reads in a loop
            local turns, stop = 0, false
            local ticker = loom.spawn(function()
                while not stop do
                    turns = turns + 1
                    loom.sleep(0)
                end
            end)
            local parts = { "0123" }
            while true do
                local s = f:read(1 << 20)
                if not s then break end
                parts[#parts + 1] = s
            end
            stop = true
            ticker:join()
            assert.equal(whole, table.concat(parts))
            assert.is_true(turns >= 3, "the other task ran only " .. turns .. " times in 32 MiB")
        end)
    end)

    it("fail in place with the errno name (a directory)", function()
        run(function()
            local f <close> = assert(loom.fs.open(dir))
            local data, err = f:read(10)
            assert.is_nil(data)
            assert.matches("^fs: EISDIR illegal operation on a directory", err)
        end)
    end)

    it("wait on the thread pool when nothing is there yet (a FIFO), and cancel cleanly", function()
        run(function()
            local fifo = dir .. "/fifo"
            assert.equal(0, select(3, os.execute("mkfifo " .. fifo)))
            -- r+ opens a FIFO without waiting for a writer (Linux)
            local r <close> = assert(loom.fs.open(fifo, "r+"))
            local w <close> = assert(loom.fs.open(fifo, "w"))
            local reader = loom.spawn(function() return r:read(100) end)
            loom.sleep(0) -- the reader is parked on the thread pool now
            assert.is_true(w:write("hello"))
            assert.same({ true, "hello" }, { reader:join() })
            -- a cancelled wait: the task ends at once; the read still running on the pool
            -- takes the next bytes, and nothing is left behind once they came
            local before = core.stats().alive
            reader = loom.spawn(function() return r:read(100) end)
            loom.sleep(0)
            assert.equal(before + 1, core.stats().alive)
            reader:cancel()
            assert.same({ false, "cancelled" }, { reader:join() })
            assert.is_true(w:write("lost"))
            while core.stats().alive > before do loom.sleep(0.01) end -- (nothing to wait on)
            assert.is_true(w:write("kept"))
            -- "lost" went to the abandoned read if it was running, else (uv_cancel took it
            -- off the queue) it is still in the FIFO
            local got = r:read(100)
            assert.is_true(got == "kept" or got == "lostkept", got)
        end)
    end)
end)
