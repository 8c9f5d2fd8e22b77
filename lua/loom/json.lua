-- loom.json: JSON through lua-cjson, loaded on first use so loom works without it until a
-- script needs JSON. loom.json.null is the JSON null.
local M = {}
local cjson
local floats -- this lua-cjson decodes integers as floats

local function lib()
    if not cjson then
        local ok, mod = pcall(require, "cjson")
        if not ok then
            error("loom.json needs lua-cjson (Debian: apt-get install lua-cjson)", 3)
        end
        local c = mod.new()
        c.encode_sparse_array(true)
        -- lua-cjson >= 2.1.0.9 only (Debian 12 ships 2.1.0): decoded arrays keep
        -- cjson.array_mt, so an empty one encodes back as [] rather than {}.
        if c.decode_array_with_array_mt then
            c.decode_array_with_array_mt(true)
        end
        M.null = c.null
        -- lua-cjson 2.1.0 decodes every number as a float, so a JSON 3 would print as 3.0
        -- in Lua 5.4; later versions give integers. Make the old one agree.
        floats = math.type(c.decode("1")) == "float"
        cjson = c
    end
    return cjson
end

local tointeger, mtype, next = math.tointeger, math.type, next

-- Turns the integral floats of a decoded value into integers, in place.
local function integers(v)
    if type(v) == "number" then
        return mtype(v) == "float" and tointeger(v) or v
    end
    if type(v) == "table" then
        for k, x in next, v do
            if type(x) == "number" then
                local i = mtype(x) == "float" and tointeger(x)
                if i then v[k] = i end
            elseif type(x) == "table" then
                integers(x)
            end
        end
    end
    return v
end

-- Calls cjson's fn(x); its errors are raised again at the level of the caller of the
-- function calling this one, instead of pointing into this file.
local function call(fn, x)
    local ok, r = pcall(fn, x)
    if not ok then error(r, 3) end
    return r
end

-- Empty arrays. lua-cjson 2.1.0 (Debian 12's) writes every empty table as {}; later
-- versions write a table with cjson.array_mt as []. loom.json.array(t) gives t that mark,
-- cjson's own when it has one; with the old library, encode swaps each marked empty table
-- for a placeholder string and the placeholder's JSON for [] afterwards.
local own_array_mt = { __name = "loom.json.array" }
local marked = false -- an array was marked: encode must look for empty ones
local EMPTY = "\0loom:[]\0"
local EMPTY_JSON = '"\\u0000loom:%[%]\\u0000"' -- EMPTY as cjson writes it, as a pattern
local MAX_DEPTH = 1000 -- cjson's own nesting limit; deeper, it raises

-- loom.json.array([t]) -> t (or a new table), encoded as a JSON array even when empty.
function M.array(t)
    if t == nil then t = {} end
    if type(t) ~= "table" then
        error("bad argument #1 to 'array' (table expected, got " .. type(t) .. ")", 2)
    end
    local c = lib()
    if not c.array_mt then marked = true end
    return setmetatable(t, c.array_mt or own_array_mt)
end

-- v, or a copy of it where each empty marked table is EMPTY (copied only along the way).
local function swap_empty(v, depth)
    if getmetatable(v) == own_array_mt and next(v) == nil then return EMPTY end
    if depth > MAX_DEPTH then return v end
    local copy
    for k, x in next, v do
        if type(x) == "table" then
            local y = swap_empty(x, depth + 1)
            if y ~= x then
                if not copy then
                    copy = {}
                    for k2, x2 in next, v do copy[k2] = x2 end
                end
                copy[k] = y
            end
        end
    end
    return copy or v
end

-- loom.json.encode(v) -> string; raises on values JSON cannot hold.
function M.encode(v)
    local c = lib()
    if marked and type(v) == "table" then
        local w = swap_empty(v, 1)
        if w ~= v then return (call(c.encode, w):gsub(EMPTY_JSON, "[]")) end
    end
    return call(c.encode, v)
end

-- loom.json.decode(s) -> value; raises on malformed JSON.
function M.decode(s)
    if type(s) ~= "string" then
        error("bad argument #1 to 'decode' (string expected, got " .. type(s) .. ")", 2)
    end
    local v = call(lib().decode, s)
    if floats then v = integers(v) end
    return v
end

pcall(lib) -- sets M.null when cjson is there
return M
