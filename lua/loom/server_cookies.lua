-- loom.server_cookies: the server's side of cookies (RFC 6265): req.cookies from a
-- request's Cookie header, and the Set-Cookie lines of an answer's `cookies` field. The
-- client's jar is loom.cookies; this file knows nothing of it, nor of sessions.
--
-- Values: loom writes a value byte outside RFC 6265's cookie-octet (and "%", so that the
-- encoding can be undone) as %XX, and parse undoes %XX, so any string goes through. A
-- value in double quotes is read without them.
local type, pairs, error, tostring, byte, char, format, find, sub, gsub =
    type, pairs, error, tostring, string.byte, string.char, string.format, string.find, string.sub,
    string.gsub
local concat, sort, tointeger = table.concat, table.sort, math.tointeger
local url_decode = require("loom.url").decode

local M = {}

-- s[i..j] without the blanks (space, tab) at its ends; a byte loop, linear however long
-- the runs of blanks are (a pattern like "[ \t]*$" is quadratic in them).
local function trim(s, i, j)
    while i <= j do
        local b = byte(s, i)
        if b ~= 32 and b ~= 9 then break end
        i = i + 1
    end
    while j >= i do
        local b = byte(s, j)
        if b ~= 32 and b ~= 9 then break end
        j = j - 1
    end
    return sub(s, i, j)
end

-- name = value pairs from a Cookie header (several joined with "; "). The first of two
-- pairs with one name wins: browsers send the most specific path first (RFC 6265 5.4).
-- A piece without "=" is skipped. Linear in the header's length (find, no backtracking).
function M.parse(header)
    local out = {}
    if type(header) ~= "string" then return out end
    local pos, n = 1, #header
    local eq = find(header, "=", 1, true) -- the next "=", found again only once passed
    while pos <= n do
        local semi = find(header, ";", pos, true) or n + 1
        if eq and eq < pos then eq = find(header, "=", pos, true) end
        if eq and eq < semi then
            local name = trim(header, pos, eq - 1)
            local value = trim(header, eq + 1, semi - 1)
            if #value >= 2 and byte(value, 1) == 34 and byte(value, -1) == 34 then
                value = sub(value, 2, -2)
            end
            if find(value, "%", 1, true) then value = url_decode(value) end
            if name ~= "" and out[name] == nil then out[name] = value end
        end
        pos = semi + 1
    end
    return out
end

-- cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E; "%" (0x25) is escaped too
local ESCAPE = {}
for b = 0, 255 do
    if not (b == 0x21 or (b >= 0x23 and b <= 0x2B and b ~= 0x25) or (b >= 0x2D and b <= 0x3A)
            or (b >= 0x3C and b <= 0x5B) or (b >= 0x5D and b <= 0x7E)) then
        ESCAPE[char(b)] = format("%%%02X", b)
    end
end

local function encode_value(v)
    return (gsub(v, ".", ESCAPE))
end
M.encode_value = encode_value

-- RFC 9110 token
local function is_token(s)
    return type(s) == "string" and s ~= "" and not find(s, "[^!#$%%&'*+%-.^_`|~%w]")
end
M.is_token = is_token

local function fail(msg, level)
    error("bad cookie " .. msg, level + 1)
end

-- An attribute value (Path, Domain): no control character and no ";".
local function attr(name, cname, v, level)
    if v == nil then return nil end
    if type(v) ~= "string" or find(v, "[%c;]") then
        fail(format("'%s' (option '%s': a string without ';' or control characters expected)", cname, name),
            level + 1)
    end
    return v
end

local SAME_SITE = { lax = "Lax", strict = "Strict", none = "None" }
local SPEC_OPTS = { value = true, max_age = true, path = true, domain = true, secure = true, http_only = true,
    same_site = true, expires = true, partitioned = true }

local function http_date(t)
    return os.date("!%a, %d %b %Y %H:%M:%S GMT", t)
end

-- The Set-Cookie value for cookie `name`, given as a string (its value), false (delete
-- it) or a table { value, max_age, path = "/", domain, secure, http_only = true,
-- same_site = "Lax", expires, partitioned }. `secure` is the default of the Secure
-- attribute (the request came over TLS). Misuse raises, blaming the caller `level` up.
function M.serialize(name, spec, secure, level)
    level = (level or 1) + 1
    if not is_token(name) then
        fail(format("name %q (a token expected: letters, digits and !#$%%&'*+-.^_`|~)", tostring(name)), level)
    end
    if type(spec) ~= "table" then spec = { value = spec } end
    for k in pairs(spec) do
        if not SPEC_OPTS[k] then fail(format("'%s' (unknown option '%s')", name, tostring(k)), level) end
    end
    local value, max_age = spec.value, spec.max_age
    if value == false then value, max_age = "", 0 end
    if value == nil then value = "" end
    local tv = type(value)
    if tv == "number" then value = tostring(value)
    elseif tv ~= "string" then
        fail(format("'%s' (value: string expected, got %s)", name, tv), level)
    end
    local parts = { name .. "=" .. encode_value(value) }
    local path = attr("path", name, spec.path, level)
    parts[#parts + 1] = "Path=" .. (path or "/")
    local domain = attr("domain", name, spec.domain, level)
    if domain then parts[#parts + 1] = "Domain=" .. domain end
    if max_age ~= nil then
        local n = type(max_age) == "number" and tointeger(max_age)
        if not n then fail(format("'%s' (option 'max_age': integer expected)", name), level) end
        if n <= 0 then
            parts[#parts + 1] = "Max-Age=0"
            parts[#parts + 1] = "Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        else
            parts[#parts + 1] = "Max-Age=" .. n
        end
    end
    local expires = spec.expires
    if expires ~= nil and not (max_age ~= nil and max_age <= 0) then
        if type(expires) == "number" then
            parts[#parts + 1] = "Expires=" .. http_date(expires)
        else
            parts[#parts + 1] = "Expires=" .. attr("expires", name, expires, level)
        end
    end
    if spec.secure ~= nil then secure = spec.secure end
    local ss = spec.same_site
    if ss == nil then ss = "Lax" end
    if ss ~= false then
        local v = type(ss) == "string" and SAME_SITE[ss:lower()]
        if not v then fail(format("'%s' (option 'same_site': \"Lax\", \"Strict\", \"None\" or false expected)", name),
            level) end
        if v == "None" and not secure then
            fail(format("'%s' (same_site \"None\" needs secure = true: browsers reject it otherwise)", name), level)
        end
        ss = v
    end
    if secure then parts[#parts + 1] = "Secure" end
    if spec.http_only ~= false then parts[#parts + 1] = "HttpOnly" end
    if ss then parts[#parts + 1] = "SameSite=" .. ss end
    if spec.partitioned then parts[#parts + 1] = "Partitioned" end
    return concat(parts, "; ")
end

-- The headers of an answer with the Set-Cookie lines of `cookies` added after any the
-- headers already hold (a string or a list). A new table: `headers` is left as it was.
-- Cookies go out in name order, so an answer's head is the same from run to run.
function M.add(headers, cookies, secure, level)
    level = (level or 1) + 1
    if type(cookies) ~= "table" then
        error("bad answer (field 'cookies': table expected, got " .. type(cookies) .. ")", level)
    end
    local names = {}
    for name in pairs(cookies) do
        if type(name) ~= "string" then fail(format("name %s (a string expected)", tostring(name)), level) end
        names[#names + 1] = name
    end
    if #names == 0 then return headers end
    sort(names)
    local h, lines = {}, {}
    for k, v in pairs(headers or {}) do
        if type(k) == "string" and k:lower() == "set-cookie" then
            if type(v) == "table" then
                for i = 1, #v do lines[#lines + 1] = v[i] end
            else
                lines[#lines + 1] = v
            end
        else
            h[k] = v
        end
    end
    for _, name in ipairs(names) do
        lines[#lines + 1] = M.serialize(name, cookies[name], secure, level)
    end
    h["set-cookie"] = lines
    return h
end

return M
