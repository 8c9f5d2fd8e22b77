-- loom.json: JSON through lua-cjson, loaded on first use so loom works without it until a
-- script needs JSON. loom.json.null is the JSON null.
local M = {}
local cjson
local floats -- this lua-cjson decodes integers as floats
local slashes -- this lua-cjson writes "/" as "\/" whatever it is told

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
        -- cjson writes "/" as "\/" (needless in JSON); later versions can be told not to,
        -- 2.1.0 cannot, and encode undoes it (unslash)
        if c.encode_escape_forward_slash then
            c.encode_escape_forward_slash(false)
        else
            slashes = true
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
-- for a placeholder string and the placeholder's JSON for [] afterwards. A string of the
-- document (a value or a key, whole or in part: '"' before it in a string makes it look
-- whole in the JSON) may hold the placeholder too, so encode counts what it replaced: more
-- than it swapped, it takes a placeholder found nowhere in that JSON and encodes again.
local own_array_mt = { __name = "loom.json.array" }
local marked = false -- an array was marked: encode must look for empty ones
local EMPTY = "\0loom:[]\0"
local MAX_DEPTH = 1000 -- cjson's own nesting limit; deeper, it raises

local find, format, gsub = string.find, string.format, string.gsub

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

-- v, or a copy of it where each empty marked table is the string hole (copied only along
-- the way); and how many were swapped.
local function swap_empty(v, hole, depth)
    if getmetatable(v) == own_array_mt and next(v) == nil then return hole, 1 end
    if depth > MAX_DEPTH then return v, 0 end
    local copy, n = nil, 0
    for k, x in next, v do
        if type(x) == "table" then
            local y, m = swap_empty(x, hole, depth + 1)
            if y ~= x then
                if not copy then
                    copy = {}
                    for k2, x2 in next, v do copy[k2] = x2 end
                end
                copy[k] = y
                n = n + m
            end
        end
    end
    return copy or v, n
end

-- The JSON of a placeholder string (as cjson writes it: "\0" is "\u0000"), as a pattern.
local function hole_pattern(hole)
    local json = '"' .. gsub(hole, "%z", "\\u0000") .. '"'
    return (gsub(json, "%W", "%%%0")), json
end

-- c.encode(v), its error raised without a position (cjson's would point here)
local function cj_encode(c, v)
    local ok, r = pcall(c.encode, v)
    if not ok then error(r, 0) end
    return r
end

-- The JSON of v (a table) with its marked empty tables written [].
local function encode_marked(c, v)
    local hole = EMPTY
    for _ = 1, 8 do
        local w, n = swap_empty(v, hole, 1)
        if n == 0 then return cj_encode(c, v) end
        local text = cj_encode(c, w)
        local out, k = gsub(text, (hole_pattern(hole)), "[]")
        if k == n then return out end
        -- a string of v holds the placeholder: take one its JSON does not hold
        repeat
            hole = format("\0loom:[]%x\0", math.random(0, 0x7fffffff))
        until not find(text, select(2, hole_pattern(hole)), 1, true)
    end
    error("no placeholder for empty arrays found") -- not reached: the second one fits
end

local SLASH = { ["/"] = "/" }

-- cjson's JSON with "\/" written "/". Each backslash in cjson's output begins an escape of
-- two characters ("\\", "\/", "\n", "\u..."), so a left-to-right scan of pairs finds the
-- escaped slashes and leaves "\\/" (a backslash, then a slash) alone. Without an escaped
-- backslash, every "\/" is an escaped slash.
local function unslash(text)
    if not find(text, "\\\\", 1, true) then return (gsub(text, "\\/", "/")) end
    return (gsub(text, "\\(.)", SLASH))
end

-- The JSON of v; raises cjson's errors without a position.
local function encode(c, v)
    local text
    if marked and type(v) == "table" then
        text = encode_marked(c, v)
    else
        text = cj_encode(c, v)
    end
    if slashes and find(text, "\\/", 1, true) then text = unslash(text) end
    return text
end

-- loom.json.encode(v) -> string; raises on values JSON cannot hold.
function M.encode(v)
    local c = cjson or lib()
    if not marked then
        local ok, text = pcall(c.encode, v) -- call's work, one Lua call fewer per answer
        if not ok then error(text, 2) end
        if slashes and find(text, "\\/", 1, true) then text = unslash(text) end
        return text
    end
    local ok, r = pcall(encode, c, v)
    if not ok then error(r, 2) end
    return r
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
