-- loom.cookies: a session's cookie jar, after RFC 6265: Set-Cookie is parsed with its
-- Domain (host-only when absent; a domain that does not cover the request host is
-- refused, and so is a public suffix other than the host: see "Public suffixes"), Path
-- (default: the request path's directory), Expires and Max-Age (Max-Age wins; a date in
-- the past deletes), Secure (sent over https only). As RFC 6265bis has
-- it, a Set-Cookie holding a control character (but tab), setting Secure over plain http,
-- or from plain http naming a stored Secure cookie it would overwrite or shadow, is
-- ignored, and a Max-Age that is not an optional "-" and digits is ignored.
-- Limits (RFC 6265 6.1 gives the least a jar should keep; 6265bis 5.7 and 5.6.1-2 the
-- caps): a name and value over 4096 bytes together are ignored, lifetimes are cut to 400
-- days, and past 50 cookies for one domain or 3000 in all, the least recently used of
-- that domain (or of all) goes.
-- jar:header(u) gives the Cookie header for a request, longest paths first. Pure Lua;
-- times are os.time().
local M = {}

local Jar = {}
Jar.__index = Jar
Jar.__name = "loom.cookies"

local lower, find, sub, match, gmatch = string.lower, string.find, string.sub, string.match, string.gmatch
local time, concat, sort = os.time, table.concat, table.sort

local MAX_PAIR = 4096            -- bytes of name and value together
local MAX_AGE = 400 * 24 * 3600  -- seconds
local MAX_PER_DOMAIN, MAX_TOTAL = 50, 3000
M.MAX_PER_DOMAIN, M.MAX_TOTAL = MAX_PER_DOMAIN, MAX_TOTAL

-- list: key -> cookie; count: how many; per_domain: domain -> how many; used: a clock
-- that orders uses (stores and sends), for eviction
function M.new()
    return setmetatable({ list = {}, count = 0, per_domain = {}, used = 0 }, Jar)
end

-- Days from 1970-01-01 to y-m-d (proleptic Gregorian), so dates need no local time zone.
local function days_from_civil(y, m, d)
    if m <= 2 then y = y - 1 end
    local era = (y >= 0 and y or y - 399) // 400
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = (153 * mp + 2) // 5 + d - 1
    local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
end

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8,
    sep = 9, oct = 10, nov = 11, dec = 12 }

-- "Wed, 21 Oct 2015 07:28:00 GMT" (and the RFC 850 / asctime shapes) -> epoch seconds.
function M.parse_date(s)
    local d, mon, y, hh, mm, ss = match(s, "(%d%d?)[ %-](%a%a%a)%a*[ %-](%d%d%d?%d?) (%d%d?):(%d%d):(%d%d)")
    if not d then
        mon, d, hh, mm, ss, y = match(s, "(%a%a%a) +(%d%d?) (%d%d?):(%d%d):(%d%d) (%d%d%d%d)")
    end
    local m = mon and MONTHS[lower(mon)]
    if not m then return nil end
    y = tonumber(y)
    if y < 70 then y = y + 2000 elseif y < 100 then y = y + 1900 end
    return days_from_civil(y, m, tonumber(d)) * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
end

local function is_ip(host)
    return match(host, "^%d+%.%d+%.%d+%.%d+$") or find(host, ":", 1, true)
end

-- Whether `host` is `domain` or a name under it (never for IP addresses).
local function domain_match(host, domain)
    if host == domain then return true end
    return not is_ip(host) and #host > #domain and sub(host, -#domain - 1) == "." .. domain
end

-- Public suffixes ---------------------------------------------------------------------
-- RFC 6265 5.3 step 5: a Domain attribute that is a public suffix ("co.uk", "github.io")
-- would let one site set cookies for every site under it. The list is Mozilla's
-- (publicsuffix.org), as the system has it (Debian's publicsuffix package), read once, the
-- first time a Domain attribute needs it. Without it, every Domain attribute is taken as
-- the host's own: the cookie is host-only, never sent to another host.
M.PUBLIC_SUFFIX_FILES = { "/usr/share/publicsuffix/public_suffix_list.dat",
    "/usr/local/share/publicsuffix/public_suffix_list.dat" }

local psl -- nil: not read yet; false: no list; else {rules = set, wild = set, except = set}

-- RFC 3492 Punycode of one label's code points, for the list's Unicode rules: hosts come
-- in their ASCII ("xn--") form.
local function punycode(cps)
    local base, tmin, tmax = 36, 1, 26
    local function digit(d) return string.char(d < 26 and 97 + d or 22 + d) end
    local function adapt(delta, npoints, first)
        delta = first and delta // 700 or delta // 2
        delta = delta + delta // npoints
        local k = 0
        while delta > ((base - tmin) * tmax) // 2 do
            delta, k = delta // (base - tmin), k + base
        end
        return k + (base - tmin + 1) * delta // (delta + 38)
    end
    local out = {}
    for _, c in ipairs(cps) do if c < 128 then out[#out + 1] = string.char(c) end end
    local b = #out
    local h = b
    if b > 0 then out[#out + 1] = "-" end
    local n, delta, bias = 128, 0, 72
    while h < #cps do
        local m = math.huge
        for _, c in ipairs(cps) do if c >= n and c < m then m = c end end
        delta, n = delta + (m - n) * (h + 1), m
        for _, c in ipairs(cps) do
            if c < n then delta = delta + 1 end
            if c == n then
                local q, k = delta, base
                while true do
                    local t = k <= bias and tmin or k >= bias + tmax and tmax or k - bias
                    if q < t then break end
                    out[#out + 1] = digit(t + (q - t) % (base - t))
                    q, k = (q - t) // (base - t), k + base
                end
                out[#out + 1] = digit(q)
                bias, delta, h = adapt(delta, h + 1, h == b), 0, h + 1
            end
        end
        delta, n = delta + 1, n + 1
    end
    return "xn--" .. concat(out)
end

-- A rule's ASCII form ("公司.cn" -> "xn--55qx5d.cn"), or nil when it is ASCII already.
local function ascii_form(name)
    if not find(name, "[\128-\255]") or not utf8.len(name) then return nil end
    local labels = {}
    for label in gmatch(name, "[^.]+") do
        if find(label, "[\128-\255]") then
            local cps = {}
            for _, c in utf8.codes(label) do cps[#cps + 1] = c end
            label = punycode(cps)
        end
        labels[#labels + 1] = label
    end
    return concat(labels, ".")
end

-- Parses the list's text (publicsuffix.org/list/: a rule per line, read up to the first
-- blank; "//" comments; "*." wildcards; "!" exceptions).
local function parse_list(text)
    local list = { rules = {}, wild = {}, except = {} }
    for rule in gmatch(text, "[^\r\n]+") do
        rule = lower(match(rule, "^%s*(%S*)"))
        if rule ~= "" and sub(rule, 1, 2) ~= "//" then
            local set = list.rules
            if sub(rule, 1, 1) == "!" then
                set, rule = list.except, sub(rule, 2)
            elseif sub(rule, 1, 2) == "*." then
                set, rule = list.wild, sub(rule, 3)
            end
            set[rule] = true
            local a = ascii_form(rule)
            if a then set[a] = true end
        end
    end
    return list
end

local function load_list()
    for _, path in ipairs(M.PUBLIC_SUFFIX_FILES) do
        local f = io.open(path, "rb")
        if f then
            local text = f:read("a")
            f:close()
            if text then return parse_list(text) end
        end
    end
    return false
end

-- cookies.set_public_suffix_list(text | false | nil): the list to use from now on, in the
-- list's format; false for none (the fallback); nil to read the system's file when next
-- needed. For tests and fuzzing.
function M.set_public_suffix_list(text)
    if text == nil then psl = nil else psl = text and parse_list(text) end
end

local function parent(d)
    local dot = find(d, ".", 1, true)
    return dot and sub(d, dot + 1) or nil
end

-- Whether the list is known and d (lowercase, no leading dot) is a public suffix: whether
-- the prevailing rule of the list's algorithm covers every label of d. An exception rule
-- matching d prevails, and its suffix is shorter than d; else the matching rule with the
-- most labels: d is a suffix when one has as many labels as d ("d", or "*." and d's
-- parent); "*" (one label) is the rule when none matches. nil when there is no list.
function M.is_public_suffix(d)
    if psl == nil then psl = load_list() end
    if not psl then return nil end
    local s = d
    while s do
        if psl.except[s] then return false end
        s = parent(s)
    end
    local p = parent(d)
    return psl.rules[d] == true or (p ~= nil and psl.wild[p] == true) or p == nil
end

local function path_match(path, cpath)
    if path == cpath then return true end
    if sub(path, 1, #cpath) ~= cpath then return false end
    return sub(cpath, -1) == "/" or sub(path, #cpath + 1, #cpath + 1) == "/"
end

-- s without the blanks around it, in time linear in #s. The pattern way,
-- "^%s*([^=]-)%s*=%s*(.-)%s*$", backtracks over a run of blanks: cubic in its length when
-- there is no "=" ("a=b;" and 2000 spaces took 11 s), quadratic when there is.
local function trim(s)
    local first = find(s, "%S")
    if not first then return "" end
    return sub(s, first, (find(s, "%S%s*$", first)))
end

-- "name = value" -> "name", "value"; nil without "=".
local function split_pair(s)
    local eq = find(s, "=", 1, true)
    if not eq then return nil end
    return trim(sub(s, 1, eq - 1)), trim(sub(s, eq + 1))
end

local function default_path(path)
    local dir = match(path, "^(/.*)/[^/]*$")
    return dir and dir ~= "" and dir or "/"
end

-- Parses one Set-Cookie value for a response to u; nil when it is to be ignored.
local function parse(value, u, now)
    -- RFC 6265bis 5.7 step 1: "If the set-cookie-string contains a %x00-08 / %x0A-1F / %x7F
    -- character (CTL characters excluding HTAB): Abort these steps and ignore the
    -- set-cookie-string entirely."
    if find(value, "[\0-\8\10-\31\127]") then return nil end
    local pair, attrs = match(value, "^([^;]*);?(.*)$")
    local name, v = split_pair(pair)
    if not name or name == "" or #name + #v > MAX_PAIR then return nil end
    local c = { name = name, value = v, domain = u.host, host_only = true,
        path = default_path(u.path or "/") }
    local max_age, expires
    for attr in gmatch(attrs, "[^;]+") do
        local k, av = split_pair(attr)
        k = lower(k or trim(attr))
        if k == "domain" and av and av ~= "" then
            local d = lower((av:gsub("^%.", "")))
            -- a domain must cover the host; a bare top-level name ("com") would cover too much
            if not domain_match(u.host, d) or (d ~= u.host and not find(d, ".", 1, true)) then
                return nil
            end
            c.domain, c.host_only = d, false
            if is_ip(d) then
                -- an address covers only itself: "10.0.10.0.0.1" (a name, not an address)
                -- ends in ".10.0.0.1" but is not under it (fuzz_cookies)
                if d ~= u.host then return nil end
                c.host_only = true
            else
                -- 5.3 step 5: a public suffix is ignored, but when it is the host itself,
                -- whose cookie is then host-only; without a list, the cookie is the host's
                local public = M.is_public_suffix(d)
                if public and d ~= u.host then return nil end
                if public ~= false then c.domain, c.host_only = u.host, true end
            end
        elseif k == "path" and av and sub(av, 1, 1) == "/" then
            c.path = av
        elseif k == "max-age" and av and find(av, "^%-?%d+$") then
            -- 6265bis 5.6.2: a DIGIT or "-" and a DIGIT first, then only DIGITs, or the
            -- attribute is ignored (tonumber would take "0x10", "1.5" and "1e3")
            max_age = tonumber(av)
        elseif k == "expires" and av then
            expires = M.parse_date(av)
        elseif k == "secure" then
            c.secure = true
        elseif k == "httponly" then
            c.http_only = true
        end
    end
    -- 6265bis 5.7 step 8: a Secure cookie "from a non-secure origin" is ignored entirely
    if c.secure and u.scheme ~= "https" then return nil end
    if max_age then
        c.expires = max_age <= 0 and 0 or now + math.min(max_age, MAX_AGE)
    elseif expires then
        c.expires = math.min(expires, now + MAX_AGE)
    end
    return c
end

local function key(c)
    return c.domain .. ";" .. c.path .. ";" .. c.name
end

-- 6265bis 5.7 step 16: a cookie from plain http that is not Secure is ignored when a Secure
-- cookie of its name is stored whose domain domain-matches its own (or the other way) and
-- whose path its path path-matches, so http can neither overwrite nor shadow it.
local function shadows_secure(list, c)
    for _, old in pairs(list) do
        if old.secure and old.name == c.name and path_match(c.path, old.path)
            and (domain_match(old.domain, c.domain) or domain_match(c.domain, old.domain)) then
            return true
        end
    end
    return false
end

-- Marks c as the most recently used (stored or sent), for eviction.
local function touch(jar, c)
    jar.used = jar.used + 1
    c.used = jar.used
end

local function remove(jar, k)
    local c = jar.list[k]
    jar.list[k] = nil
    jar.count = jar.count - 1
    local n = jar.per_domain[c.domain] - 1
    jar.per_domain[c.domain] = n > 0 and n or nil
end

-- The key of the least recently used cookie (of one domain, or of all).
local function least_used(jar, domain)
    local lk, lc
    for k, c in pairs(jar.list) do
        if (not domain or c.domain == domain) and (not lc or c.used < lc.used) then lk, lc = k, c end
    end
    return lk
end

-- Makes room for one more cookie of `domain`: the expired go first, then the least used.
local function make_room(jar, domain, now)
    if (jar.per_domain[domain] or 0) < MAX_PER_DOMAIN and jar.count < MAX_TOTAL then return end
    for k, c in pairs(jar.list) do
        if c.expires and c.expires <= now then remove(jar, k) end
    end
    if (jar.per_domain[domain] or 0) >= MAX_PER_DOMAIN then remove(jar, least_used(jar, domain)) end
    if jar.count >= MAX_TOTAL then remove(jar, least_used(jar)) end
end

-- jar:store(raw, u): takes every Set-Cookie of a response (raw: {name1, value1, ...},
-- names lowercase) to the request URL u (scheme, host, path).
function Jar:store(raw, u)
    local now = time()
    for i = 1, #raw, 2 do
        if raw[i] == "set-cookie" then
            local c = parse(raw[i + 1], u, now)
            if c and u.scheme ~= "https" and not c.secure and shadows_secure(self.list, c) then
                c = nil
            end
            if c then
                local k = key(c)
                local old = self.list[k]
                if c.expires and c.expires <= now then
                    if old then remove(self, k) end
                else
                    if not old then
                        make_room(self, c.domain, now)
                        self.count = self.count + 1
                        self.per_domain[c.domain] = (self.per_domain[c.domain] or 0) + 1
                    end
                    touch(self, c)
                    self.list[k] = c
                end
            end
        end
    end
end

-- jar:header(u) -> "a=1; b=2" for a request to u, or nil.
function Jar:header(u)
    if self.count == 0 then return nil end
    local now, host, path, https = time(), u.host, u.path or "/", u.scheme == "https"
    local hits = {}
    for k, c in pairs(self.list) do
        if c.expires and c.expires <= now then
            remove(self, k)
        elseif (c.host_only and host == c.domain or not c.host_only and domain_match(host, c.domain))
            and path_match(path, c.path) and (https or not c.secure)
            -- parse refuses them; checked again where the header is made (defence in depth)
            and not find(c.name, "[%z\r\n;]") and not find(c.value, "[%z\r\n;]") then
            hits[#hits + 1] = c
        end
    end
    if #hits == 0 then return nil end
    sort(hits, function(a, b)
        if #a.path ~= #b.path then return #a.path > #b.path end
        return a.name < b.name
    end)
    for i, c in ipairs(hits) do
        touch(self, c)
        hits[i] = c.name .. "=" .. c.value
    end
    return concat(hits, "; ")
end

-- jar:get(name [, host]) -> the value of a stored cookie (the first found), or nil.
function Jar:get(name, host)
    for _, c in pairs(self.list) do
        if c.name == name and (not host or domain_match(host, c.domain)) then return c.value end
    end
    return nil
end

-- jar:clear(): forgets every cookie.
function Jar:clear()
    self.list, self.count, self.per_domain = {}, 0, {}
end

return M
