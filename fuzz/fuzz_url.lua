-- fuzz_url.lua: the driver of fuzz_url (see lua_fuzz.h and docs/fuzzing.md). The input,
-- whole, goes through loom.url's decoding and encoding, parse_query and split; split at its
-- first "\n" it is a base URL and a reference for the client's join (redirects, base_url).
--
-- Properties: decode undoes encode, and encode leaves only unreserved bytes and %XX;
-- parse_query gives non-empty string keys and string values, one value for each piece between
-- "&"s (never ";") with a non-empty key, `last` agrees with `all`, and
-- encode_query then parse_query gives the same tables; split either answers one of its
-- documented errors or a URL whose scheme and host are lowercase, whose port is an integer
-- in 0..65535, whose path starts with "/" and whose host, path and query hold no byte that
-- could not go on a request line (no controls, no space), and which, written back out,
-- splits to the same table; join of a relative reference keeps the base's origin and
-- removes dot segments as RFC 3986 5.2.4 does; join of a reference with a scheme is that
-- reference (RFC 3986 5.2.2), its scheme lowercased, its fragment dropped and the dot
-- segments removed from a path that starts with "/".
local F = require "lua_fuzz"
local url = require "loom.url"
local join = require("loom.client").join

local check = F.check

local function coding(s)
    local e = url.encode(s)
    check(not e:find("[^%w%-%._~%%]"), "encode(%q) = %q keeps a reserved byte", s, e)
    check(not e:gsub("%%%u%u", ""):gsub("%%[%dA-F][%dA-F]", ""):find("%", 1, true),
        "encode(%q) = %q: a %% without two uppercase hex digits", s, e)
    check(url.decode(e) == s, "decode(encode(%q)) = %q", s, url.decode(e))
    local d = url.decode(s)
    check(#d <= #s, "decode(%q) = %q grew", s, d)
    check(s:find("%", 1, true) or d == s, "decode(%q) = %q changed a string without %%", s, d)
    local c = url.decode_component(s)
    check(type(c) == "string" and #c <= #s, "decode_component(%q) = %q", s, c)
end

local function query(s)
    local last, all = url.parse_query(s)
    -- pairs are split on "&" only: each non-empty piece between them whose key is not
    -- empty gives one value (a ";" stays inside its piece, CVE-2021-23336)
    local n, pieces = 0, 0
    local from = 1
    while from <= #s + 1 do
        local amp = s:find("&", from, true) or #s + 1
        local eq = s:find("=", from, true)
        local key_end = (eq and eq < amp) and eq - 1 or amp - 1
        if amp > from and url.decode_component(s:sub(from, key_end)) ~= "" then pieces = pieces + 1 end
        from = amp + 1
    end
    for k, list in pairs(all) do
        check(type(k) == "string" and k ~= "", "parse_query(%q): key %q", s, k)
        check(#list >= 1 and last[k] == list[#list], "parse_query(%q): last[%q] is not the last value", s, k)
        for _, v in ipairs(list) do check(type(v) == "string", "parse_query(%q): value %q", s, v) end
        n = n + #list
    end
    for k in pairs(last) do check(all[k] ~= nil, "parse_query(%q): %q in last only", s, k) end
    check(n == pieces, "parse_query(%q): %d values from %d pieces with a key", s, n, pieces)
    local q = url.encode_query(all)
    local last2, all2 = url.parse_query(q)
    check(F.same(all, all2) and F.same(last, last2), "parse_query(encode_query(%s)) = %s (via %q)", all,
        all2, q)
    check(F.same(last, (url.parse_query(url.encode_query(last)))), "encode_query(last) does not round-trip")
end

local SPLIT_ERRORS = { ["not an absolute URL"] = true, ["no host in URL"] = true,
    ["bad port in URL"] = true, ["invalid character in URL"] = true }

-- u written back as a URL: every part explicit, user and password encoded again.
local function unsplit(u)
    local host = u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host
    local userinfo = u.user and (url.encode(u.user) .. ":" .. url.encode(u.password) .. "@") or ""
    return u.scheme .. "://" .. userinfo .. host .. ":" .. u.port .. u.path .. (u.query and ("?" .. u.query) or "")
end

local function split(s)
    local u, err = url.split(s)
    if not u then
        check(SPLIT_ERRORS[err], "split(%q): undocumented error %s", s, err)
        return
    end
    check(u.scheme:find("^%l[%l%d+.-]*$"), "split(%q): scheme %q", s, u.scheme)
    check(u.host ~= "" and u.host == u.host:lower(), "split(%q): host %q", s, u.host)
    check(math.type(u.port) == "integer" and u.port >= 0 and u.port <= 65535, "split(%q): port %s", s,
        u.port)
    check(u.path:sub(1, 1) == "/" and not u.path:find("[?#]"), "split(%q): path %q", s, u.path)
    check(u.query == nil or (u.query ~= "" and not u.query:find("#", 1, true)), "split(%q): query %s", s,
        u.query)
    for _, part in ipairs { u.host, u.path, u.query or "" } do
        check(not F.has_ctl(part), "split(%q): %q holds a control byte or a space", s, part)
    end
    local back = unsplit(u)
    local again = url.split(back)
    check(F.same(u, again), "split(%q) = %s, but split(%q) = %s", s, u, back, again)
end

-- RFC 3986 5.2.4, step by step, as the RFC writes it: the reference to compare with.
local function remove_dot_segments(input)
    local out = {}
    while input ~= "" do
        if input:sub(1, 3) == "../" then
            input = input:sub(4)
        elseif input:sub(1, 2) == "./" then
            input = input:sub(3)
        elseif input:sub(1, 3) == "/./" or input == "/." then
            input = "/" .. input:sub(4)
        elseif input:sub(1, 4) == "/../" or input == "/.." then
            input = "/" .. input:sub(5)
            out[#out] = nil
        elseif input == "." or input == ".." then
            input = ""
        else
            local seg = input:match("^/?[^/]*")
            out[#out + 1] = seg
            input = input:sub(#seg + 1)
        end
    end
    return table.concat(out)
end

-- RFC 3986 5.2.2 for a reference with a scheme: the target is the reference.
local function check_absolute(base, ref, r, scheme, rest)
    rest = rest:gsub("#.*$", "")
    local auth, path, query = rest:match("^(//[^/?]*)([^?]*)(.*)$")
    if not auth then
        auth = ""
        path, query = rest:match("^([^?]*)(.*)$")
    end
    if path:sub(1, 1) == "/" then path = remove_dot_segments(path) end
    local want = scheme:lower() .. ":" .. auth .. path .. query
    check(r == want, "join(%q, %q) = %q, RFC 3986 5.2.2 gives %q", base, ref, r, want)
end

local function check_join(base, ref)
    local r = join(base, ref)
    check(type(r) == "string", "join(%q, %q) = %s", base, ref, r)
    local scheme, rest = ref:match("^(%a[%w+.-]*):(.*)$")
    if scheme then return check_absolute(base, ref, r, scheme, rest) end
    local b = url.split(base)
    if not b or ref:sub(1, 2) == "//" or F.has_ctl(ref) then return end
    local u, err = url.split(r)
    check(u, "join(%q, %q) = %q: %s", base, ref, r, err)
    check(u.scheme == b.scheme and u.host == b.host and u.port == b.port, "join(%q, %q) = %q left the origin",
        base, ref, r)
    ref = ref:gsub("#.*$", "")
    local rpath, rquery = ref:match("^([^?]*)%??(.*)$")
    local path
    if rpath == "" then
        path = b.path
    elseif rpath:sub(1, 1) == "/" then
        path = remove_dot_segments(rpath)
    else
        path = remove_dot_segments((b.path:match("^(.*/)") or "/") .. rpath)
    end
    if path == "" then path = "/" end
    check(u.path == path, "join(%q, %q) = %q: path %q, RFC 3986 gives %q", base, ref, r, u.path, path)
    local query = rpath == "" and not ref:find("?", 1, true) and b.query or (rquery ~= "" and rquery or nil)
    check(u.query == query, "join(%q, %q) = %q: query %s, expected %s", base, ref, r, u.query, query)
end

return function(data)
    coding(data)
    query(data)
    split(data)
    local base, ref = data:match("^([^\n]*)\n(.*)$")
    if base then
        check_join(base, ref)
    else
        check_join("http://a/b/c/d;p?q", data)
    end
end
