-- loom.args: argument and option checks that raise in Lua's own shape, e.g.
-- bad argument #2 to 'fetch' (option 'timeout': number expected, got string)
local args = {}

local type, error, format = type, error, string.format
local running = coroutine.running
local core -- loom.core, loaded on first use

function args.fail(fname, n, msg, level)
    error(format("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 1) + 2)
end

-- Checks that v has Lua type t; returns v.
function args.check(v, t, fname, n)
    if type(v) ~= t then
        args.fail(fname, n, format("%s expected, got %s", t, type(v) == "nil" and "no value" or type(v)), 2)
    end
    return v
end

-- Checks an optional options table; returns it or an empty one.
function args.opts(v, fname, n)
    if v == nil then return {} end
    if type(v) ~= "table" then
        args.fail(fname, n, "table expected, got " .. type(v), 2)
    end
    return v
end

-- Raises for a key of opts that is not in `names` (a set: {timeout = true, ...}), so a
-- misspelt option is an error rather than silently ignored.
function args.known(opts, names, fname, n)
    for k in pairs(opts) do
        if not names[k] then
            args.fail(fname, n, format("unknown option '%s'", tostring(k)), 2)
        end
    end
    return opts
end

-- Reads opts[name], which must be of type t (or one of the types in t, a table) when
-- present; returns the default otherwise.
function args.opt(opts, name, t, default, fname, n)
    local v = opts[name]
    if v == nil then return default end
    local ok
    if type(t) == "table" then
        for _, tt in ipairs(t) do if type(v) == tt then ok = true end end
        t = table.concat(t, " or ")
    else
        ok = type(v) == t
    end
    if not ok then
        args.fail(fname, n, format("option '%s': %s expected, got %s", name, t, type(v)), 2)
    end
    return v
end

-- A timeout option: a non-negative number, or false for none; default when absent.
function args.timeout(opts, name, default, fname, n)
    local v = opts[name]
    if v == nil then return default end
    if v == false then return nil end
    if type(v) ~= "number" or v < 0 or v ~= v then
        args.fail(fname, n, format("option '%s': non-negative number expected, got %s", name,
            type(v) == "number" and tostring(v) or type(v)), 2)
    end
    return v
end

-- Raises unless the caller runs in a loom task: `fname` is a call that waits, and waiting
-- is only possible in a task. Outside any task, and in a coroutine of the user's own
-- (coroutine.wrap/create, whose resume would swallow loom's yield), the message says what
-- to use instead. `level` 1 blames the caller of the function that calls need_task.
function args.need_task(fname, level)
    core = core or require "loom.core"
    if core.in_task() then return end
    local _, main = running()
    if main then
        error(fname .. ": called outside any task (use loom.run or loom.spawn)", (level or 1) + 2)
    end
    error(fname .. ": called inside a coroutine that is not a loom task "
        .. "(use loom.spawn instead of coroutine.wrap/create)", (level or 1) + 2)
end

return args
