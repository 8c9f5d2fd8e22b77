-- fuzz_cookies.lua: the driver of fuzz_cookies (see lua_fuzz.h and docs/fuzzing.md). The
-- input's first line is the request URL (when it is not an http(s) URL with a host, a fixed
-- one is used and the line becomes a Set-Cookie value too); each further line is a
-- Set-Cookie value of the response. They go through a fresh jar: store, header for the same
-- URL over http and https and for its parent and child paths, get; and every line through
-- parse_date. The first eight bytes also pick a time for a date round trip.
--
-- Properties: nothing raises; every stored cookie has a non-empty name without "=" or ";",
-- a value without ";", neither holding a control character but tab, a path starting with
-- "/", a domain that is the request host or a name above it that holds a dot (never for an
-- IP address), and is Secure only when set over https; jar.count counts the jar; a
-- cookie stored with the default path and host-only is sent back to the URL that set it
-- (over https, or when not Secure) while it has not expired; a header holds only stored
-- name=value pairs, no more than there are cookies; parse_date answers nil or an
-- integer; and a time written as RFC 1123, RFC 850 and asctime dates parses back to itself.
-- The jar uses a small public-suffix list of the driver's own (the system's may be absent,
-- and a fixed one keeps runs alike), with a wildcard and exceptions: a cookie that is not
-- host-only never has a public suffix for its domain, and one whose Domain was refused as a
-- public suffix is not stored.
local F = require "lua_fuzz"
local url = require "loom.url"
local cookies = require "loom.cookies"

local check = F.check
local MAX_LINES = 16
local FALLBACK = "http://www.example.com/dir/page"

cookies.set_public_suffix_list(table.concat({ "com", "net", "uk", "co.uk", "github.io", "*.ck", "!www.ck",
    "jp", "*.kobe.jp", "!city.kobe.jp", "example.net", "\xe5\x85\xac\xe5\x8f\xb8.cn" }, "\n"))

local function is_ip(host)
    return host:find("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true)
end

-- RFC 6265 5.1.4: the directory of the request path, "/" when it has none.
local function default_path(path)
    if path:sub(1, 1) ~= "/" then return "/" end
    local last = path:match("^.*()/")
    return last == 1 and "/" or path:sub(1, last - 1)
end

local function check_stored(jar, u)
    local n, per_domain = 0, {}
    for k, c in pairs(jar.list) do
        n = n + 1
        per_domain[c.domain] = (per_domain[c.domain] or 0) + 1
        check(#c.name + #c.value <= 4096, "a %d-byte pair stored", #c.name + #c.value)
        check(c.expires == nil or c.expires <= os.time() + 400 * 86400, "expires past 400 days: %s", c.expires)
        check(type(c.name) == "string" and c.name ~= "" and not c.name:find("[=;]"), "stored name %q", c.name)
        check(type(c.value) == "string" and not c.value:find(";", 1, true), "stored value %q", c.value)
        check(not (c.name .. c.value):find("[\0-\8\10-\31\127]"), "control character in %q=%q", c.name, c.value)
        check(not c.secure or u.scheme == "https", "Secure cookie %s stored over %s", k, u.scheme)
        check(type(c.path) == "string" and c.path:sub(1, 1) == "/", "stored path %q", c.path)
        check(c.expires == nil or type(c.expires) == "number", "expires %s", c.expires)
        local d = c.domain
        check(d == u.host or (not is_ip(u.host) and d:find(".", 1, true) and u.host:sub(-#d - 1) == "." .. d),
            "cookie %s for %q under domain %q", k, u.host, d)
        check(not c.host_only or d == u.host, "host-only cookie for %q under %q", u.host, d)
        check(c.host_only or not cookies.is_public_suffix(d), "cookie %s for the public suffix %q", k, d)
    end
    check(n == jar.count, "jar.count is %d, the jar holds %d", jar.count, n)
    check(n <= cookies.MAX_TOTAL, "%d cookies kept", n)
    for d, dn in pairs(per_domain) do
        check(dn == jar.per_domain[d], "per_domain[%q] is %s, the jar holds %d", d, jar.per_domain[d], dn)
        check(dn <= cookies.MAX_PER_DOMAIN, "%d cookies for %q", dn, d)
    end
    for d in pairs(jar.per_domain) do check(per_domain[d], "per_domain[%q] counts a domain with none", d) end
end

-- The header: "name=value" pairs joined by "; ", each one stored, no more than stored.
local function check_header(jar, u)
    local h = jar:header(u)
    if h == nil then return end
    check(type(h) == "string" and h ~= "", "header %q", h)
    local stored = {}
    for _, c in pairs(jar.list) do stored[c.name .. "=" .. c.value] = true end
    local n = 0
    for p in (h .. "; "):gmatch("(.-); ") do
        check(stored[p], "header %q sends %q, which is not stored", h, p)
        n = n + 1
    end
    check(n <= jar.count, "header %q: %d pairs from %d cookies", h, n, jar.count)
end

-- A session cookie stored host-only with the default path goes back to the URL that set it.
local function check_sent_back(jar, u, https)
    local h = (jar:header(u) or "") .. "; "
    local dir = default_path(u.path)
    for _, c in pairs(jar.list) do
        if c.host_only and c.path == dir and c.expires == nil and (https or not c.secure) then
            check(h:find(c.name .. "=" .. c.value .. "; ", 1, true), "%s=%s (path %q) not sent back to %q: %q",
                c.name, c.value, c.path, u.path, h)
        end
    end
end

local function check_dates(lines, data)
    for _, line in ipairs(lines) do
        local t = cookies.parse_date(line)
        check(t == nil or math.type(t) == "integer", "parse_date(%q) = %s", line, t)
    end
    if #data < 8 then return end
    local t = string.unpack("<I8", data) % 253402300800 -- up to 9999-12-31
    local shapes = { "!%a, %d %b %Y %H:%M:%S GMT", "!%a %b %e %H:%M:%S %Y" }
    local year = tonumber(os.date("!%Y", t))
    if year >= 1970 and year < 2070 then shapes[#shapes + 1] = "!%A, %d-%b-%y %H:%M:%S GMT" end
    for _, shape in ipairs(shapes) do
        local s = os.date(shape, t)
        check(cookies.parse_date(s) == t, "parse_date(%q) = %s, not %d", s, cookies.parse_date(s), t)
    end
end

local function request_url(lines)
    local u = url.split(lines[1])
    if u and (u.scheme == "http" or u.scheme == "https") then return u, 2 end
    return url.split(FALLBACK), 1
end

return function(data)
    local lines = F.lines(data, MAX_LINES)
    local u, first = request_url(lines)
    local raw = {}
    for i = first, #lines do
        raw[#raw + 1], raw[#raw + 2] = "set-cookie", lines[i]
    end
    local jar = cookies.new()
    jar:store(raw, u)
    check_stored(jar, u)
    local https = { scheme = "https", host = u.host, path = u.path }
    local http = { scheme = "http", host = u.host, path = u.path }
    check_sent_back(jar, http, false)
    check_sent_back(jar, https, true)
    for _, path in ipairs { u.path, default_path(u.path), u.path .. "/x", "/" } do
        check_header(jar, { scheme = "http", host = u.host, path = path })
        check_header(jar, { scheme = "https", host = u.host, path = path })
    end
    check_header(jar, { scheme = "https", host = "sub." .. u.host, path = u.path })
    for _, c in pairs(jar.list) do
        check(type(jar:get(c.name)) == "string", "get(%q)", c.name)
    end
    check_stored(jar, u)
    check_dates(lines, data)
end
