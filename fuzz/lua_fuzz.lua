-- lua_fuzz.lua: helpers the Lua drivers of fuzz/ share (see lua_fuzz.h). A driver returns
-- function(bytes); what it raises is a finding, so checks raise with what they saw.
local M = {}

local format, concat = string.format, table.concat

-- check(cond, fmt, ...): raises "property: <message>" when cond is false. Arguments for
-- %s that are not strings or numbers are shown with M.show, and only then: a check that
-- holds costs no formatting.
function M.check(cond, fmt, ...)
    if cond then return cond end
    local args = table.pack(...)
    for i = 1, args.n do
        local t = type(args[i])
        if t ~= "string" and t ~= "number" then args[i] = M.show(args[i]) end
    end
    error("property: " .. format(fmt or "failed", table.unpack(args, 1, args.n)), 2)
end

-- Splits the input at "\n" into at most max fields (the last keeps any further "\n").
function M.lines(data, max)
    local out, pos = {}, 1
    while #out < max - 1 do
        local nl = data:find("\n", pos, true)
        if not nl then break end
        out[#out + 1] = data:sub(pos, nl - 1)
        pos = nl + 1
    end
    out[#out + 1] = data:sub(pos)
    return out
end

-- Deep equality of plain values and tables (no cycles), keys compared with rawequal.
function M.same(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do
        if not M.same(v, b[k]) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end

-- A short, printable form of a value for messages.
function M.show(v)
    if type(v) ~= "table" then return format("%q", v) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do
        local x = v[k]
        if x == nil then x = v[tonumber(k)] end
        out[#out + 1] = k .. "=" .. M.show(x)
    end
    return "{" .. concat(out, ", ") .. "}"
end

-- Whether s holds a byte that may not appear on an HTTP request line or in a header value
-- unescaped: controls (NUL, CR, LF, ...), space and DEL.
function M.has_ctl(s)
    return s:find("[%z\1-\32\127]") ~= nil
end

return M
