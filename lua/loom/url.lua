-- loom.url: percent-encoding, query strings and forms (application/x-www-form-urlencoded),
-- and splitting URLs. Pure Lua; shared by the server (req.query, req:form) and the client.
local M = {}

local char, byte, format, tonumber = string.char, string.byte, string.format, tonumber

local function hex_to_char(h)
    return char(tonumber(h, 16))
end

-- Decodes %XX escapes (malformed ones are left as they are).
function M.decode(s)
    return (s:gsub("%%(%x%x)", hex_to_char))
end

-- Decodes a form or query component: '+' is a space. Most components have neither '%'
-- nor '+': one find, no gsub.
local find = string.find
function M.decode_component(s)
    if not find(s, "[%%+]") then return s end
    return M.decode((s:gsub("+", " ")))
end

-- Encodes everything but RFC 3986 unreserved characters.
function M.encode(s)
    return (tostring(s):gsub("[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

-- "a=1&b=x+y&a=2" -> {a = "2", b = "x y"}; a repeated key keeps the last value, and the
-- second return value holds every value in order: {a = {"1", "2"}, b = {"x y"}}. Pairs are
-- split on "&" only, as the WHATWG URL standard and Python since CVE-2021-23336 do: a ";"
-- is part of a value, so "a=1;b=2" cannot hide a b from a cache or proxy that splits on "&".
function M.parse_query(s)
    local last, all = {}, {}
    if not s or s == "" then return last, all end
    local decode = M.decode_component
    for k, v in s:gmatch("([^&=]*)=?([^&]*)") do
        k, v = decode(k), decode(v)
        if k ~= "" then
            last[k] = v
            local list = all[k]
            if list then list[#list + 1] = v else all[k] = { v } end
        end
    end
    return last, all
end

-- {a = 1, b = {"x", "y"}} -> "a=1&b=x&b=y" (keys sorted, so the result is stable).
function M.encode_query(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do
        local v = t[k]
        if v == nil then v = t[tonumber(k)] end
        if type(v) == "table" then
            for _, x in ipairs(v) do out[#out + 1] = M.encode(k) .. "=" .. M.encode(x) end
        elseif v ~= false then
            out[#out + 1] = M.encode(k) .. "=" .. M.encode(v == true and "" or v)
        end
    end
    return table.concat(out, "&")
end

-- "host:port" -> "host", "port" ("" without one); nil when the port is not digits. Not
-- "^([^:]*):?(%d*)$", which backtracks quadratically over a long run of digits.
local function host_port(s)
    local colon = s:find(":", 1, true)
    if not colon then return s, "" end
    local port = s:sub(colon + 1)
    if port:find("%D") then return nil end
    return s:sub(1, colon - 1), port
end

-- Splits "http://user:pw@host:port/path?query#frag" into a table:
-- {scheme, user, password, host, port, path, query}; nil, err when it is not a URL.
-- Controls and spaces are refused (they would end up raw on a request line or in Host:
-- "a\r\nX: y" would add a header), as is a port past 65535.
function M.split(s)
    if s:find("[%z\1-\32\127]") then return nil, "invalid character in URL" end
    local scheme, rest = s:match("^(%a[%w+.-]*)://(.*)$")
    if not scheme then return nil, "not an absolute URL" end
    scheme = scheme:lower()
    rest = rest:gsub("#.*$", "")
    local authority, target = rest:match("^([^/?]*)(.*)$")
    local u = { scheme = scheme }
    local userinfo, hostport = authority:match("^(.*)@(.-)$")
    if userinfo then
        u.user, u.password = userinfo:match("^([^:]*):?(.*)$")
        u.user, u.password = M.decode(u.user), M.decode(u.password)
    else
        hostport = authority
    end
    local host, port = hostport:match("^%[(.-)%]:?(%d*)$")
    if not host then host, port = host_port(hostport) end
    if not host or host == "" then return nil, "no host in URL" end
    u.host = host:lower()
    port = tonumber(port) -- digits only: an integer, or a float once past 2^63
    if port and port > 65535 then return nil, "bad port in URL" end
    u.port = port or (scheme == "https" and 443 or scheme == "wss" and 443 or 80)
    local path, query = target:match("^([^?]*)%??(.*)$")
    u.path = path ~= "" and path or "/"
    u.query = query ~= "" and query or nil
    return u
end

return M
