-- fuzz_router.lua: the driver of fuzz_router (see lua_fuzz.h and docs/fuzzing.md). The
-- input's first line is a route pattern; each further line is a request path. The pattern
-- is compiled (router:add) in a router of its own, and the paths are matched against it and
-- against a fixed table of routes, with GET, HEAD and one more method.
--
-- The reference is the documented grammar and matching (docs/server.md, "Patterns"),
-- written here again: a pattern must start with "/"; without braces it is one exact path;
-- otherwise each segment (the text after each "/" up to the next, empty segments included)
-- is literal, {name} or {name*}, {name*} only last, at most 32 parameters, and anything else
-- with a brace raises "bad route pattern". A path is routed as sent: its segments are taken
-- the same way, empty ones included, and a path not starting with "/" ("*", "host:443")
-- matches nothing; a literal segment matches itself, {name} one non-empty segment and
-- {name*} the rest of the path after the slash before it, slashes and all, possibly empty,
-- both percent-decoded after matching; exact routes are tried before patterns, patterns in
-- the order added, HEAD falls back to GET, "*" routes come last; a path no route takes for
-- its method gets the sorted list of methods that would take it (HEAD wherever GET is).
--
-- Properties: the router raises exactly when the grammar says so, and only with its
-- documented message; it picks the same route with the same params as the reference; a
-- path written back from a match (params encoded) matches the same route with the same
-- params; the allowed list is the reference's.
local F = require "lua_fuzz"
local url = require "loom.url"
local router = require "loom.router"

local check = F.check
local MAX_LINES = 8
local ROUTES = {
    { "GET", "/" }, { "GET", "/about" }, { "GET", "/about/" }, { "GET", "/users/{id}" },
    { "GET", "/users/{id}/posts/{post}" }, { "POST", "/users/{id}" }, { "GET", "/files/{path*}" },
    { "*", "/any/{x}" }, { "PUT", "/a/b" }, { "DELETE", "/{a}/{b}/{c}" }, { "PATCH", "/{all*}" },
    { "GET", "/t//{x}/" }, { "PUT", "/{x}/" }, { "GET", "/admin/users/{id}" },
}

-- The documented grammar: nil for an exact route, the segments, or false when it must raise.
local function segments(pattern)
    if pattern:sub(1, 1) ~= "/" then return false end
    if not pattern:find("[{}]") then return nil end
    local segs, params = {}, 0
    for seg in pattern:gmatch("/([^/]*)") do
        local name, star = seg:match("^{([%w_]+)(%*?)}$")
        if name then
            segs[#segs + 1] = { name = name, rest = star == "*" }
            params = params + 1
        elseif seg:find("[{}]") then
            return false
        else
            segs[#segs + 1] = seg
        end
    end
    for i, s in ipairs(segs) do
        if type(s) == "table" and s.rest and i < #segs then return false end
    end
    if params > 32 then return false end
    return segs
end

-- A path's segments (what follows each "/" up to the next, empty ones included) and where
-- each starts; no segments at all when the path does not start with "/".
local function split_path(path)
    local parts, starts = { path = path }, {}
    if path:sub(1, 1) == "/" then
        for from, seg in path:gmatch("/()([^/]*)") do
            parts[#parts + 1], starts[#starts + 1] = seg, from
        end
    end
    parts.starts = starts
    return parts
end

-- The reference match of one pattern route against a split path: its params, or nil.
local function ref_match(segs, parts)
    if #parts == 0 then return nil end
    local params = {}
    for i, s in ipairs(segs) do
        if parts[i] == nil then
            return nil
        elseif type(s) == "string" then
            if parts[i] ~= s then return nil end
        elseif s.rest then
            params[s.name] = url.decode(parts.path:sub(parts.starts[i]))
            return params
        elseif parts[i] ~= "" then
            params[s.name] = url.decode(parts[i])
        else
            return nil
        end
    end
    return #parts == #segs and params or nil
end

local function ref_find_one(routes, method, parts)
    for i, r in ipairs(routes) do
        if r.method == method and not r.segs and r.pattern == parts.path and #parts > 0 then return i, {} end
    end
    for i, r in ipairs(routes) do
        if r.method == method and r.segs then
            local params = ref_match(r.segs, parts)
            if params then return i, params end
        end
    end
end

local function ref_find(routes, method, parts)
    local order = method == "HEAD" and { "HEAD", "GET", "*" } or { method, "*" }
    for _, m in ipairs(order) do
        local i, params = ref_find_one(routes, m, parts)
        if i then return i, params end
    end
end

local function ref_allowed(routes, parts)
    local set = {}
    for _, r in ipairs(routes) do
        local m = r.method
        if m ~= "*" and set[m] == nil then set[m] = ref_find_one(routes, m, parts) ~= nil end
    end
    if set.GET then set.HEAD = true end
    local list = {}
    for m, yes in pairs(set) do
        if yes then list[#list + 1] = m end
    end
    table.sort(list)
    return list
end

-- A path that should take route r with params: literals as they are, params encoded.
local function unmatch(r, params)
    if not r.segs then return r.pattern end
    local out = {}
    for _, s in ipairs(r.segs) do
        out[#out + 1] = type(s) == "string" and s or url.encode(params[s.name])
    end
    return "/" .. table.concat(out, "/")
end

local function build(list)
    local r, routes = router.new(), {}
    for i, spec in ipairs(list) do
        local handler = function() return i end
        local segs = segments(spec[2])
        local ok, err = pcall(r.add, r, spec[1], spec[2], handler)
        if segs == false then
            check(not ok and type(err) == "string" and err:find("^bad route pattern '"),
                "add(%q) should raise 'bad route pattern', got %s, %s", spec[2], ok, err)
        else
            check(ok, "add(%q) raised %s", spec[2], err)
            routes[#routes + 1] = { method = spec[1], pattern = spec[2], segs = segs, handler = handler }
        end
    end
    return r, routes
end

local function check_path(r, routes, method, parts)
    local path = parts.path
    local h, params = r:match(method, path)
    local i, want = ref_find(routes, method, parts)
    if not h then
        check(not i, "%s %q: no route, the reference takes %q", method, path, i and routes[i].pattern)
        local allowed = ref_allowed(routes, parts)
        check(F.same(params, allowed), "%s %q: allowed %s, the reference says %s", method, path, params,
            allowed)
        return
    end
    check(i and h == routes[i].handler, "%s %q: route #%s, the reference takes %s", method, path, tostring(h()),
        (i and routes[i].pattern))
    check(F.same(params or {}, want), "%s %q: params %s, the reference binds %s", method, path, params,
        want)
    local again = unmatch(routes[i], want)
    local h2, params2 = r:match(method, again)
    check(h2 == h and F.same(params2 or {}, want), "%s %q matches %q with %s, but %q gives %s", method, path,
        routes[i].pattern, want, again, params2)
end

-- Every path is tried with GET and HEAD, and with one more method picked by its length.
local OTHERS = { "POST", "PUT", "DELETE", "PATCH" }

-- Built once, before the line hook is on (matching changes nothing in a router).
local fixed, fixed_routes = build(ROUTES)

return function(data)
    local lines = F.lines(data, MAX_LINES)
    local own, own_routes = build { { "GET", lines[1] } }
    for _, path in ipairs(lines) do
        local parts = split_path(path)
        check_path(own, own_routes, "GET", parts)
        check_path(own, own_routes, "POST", parts)
        check_path(fixed, fixed_routes, "GET", parts)
        check_path(fixed, fixed_routes, "HEAD", parts)
        check_path(fixed, fixed_routes, OTHERS[#path % #OTHERS + 1], parts)
    end
end
