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

-- loom.json.encode(v) -> string; raises on values JSON cannot hold.
function M.encode(v)
    local s = call(lib().encode, v)
    return s
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
