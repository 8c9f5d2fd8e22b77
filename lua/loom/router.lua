-- loom.router: method + path to handler, on the path exactly as sent. Static paths are one
-- table lookup. A pattern is a path whose segments (the runs between slashes, empty ones
-- included: "/a//b/" has the segments "a", "", "b" and "") are literal, "{name}" (one
-- non-empty segment, bound to params.name) or a last "{name*}" (the rest of the path from
-- that segment on, slashes and all, possibly empty). Each pattern compiles to one anchored
-- Lua pattern ("/users/{id}" -> "^/users/([^/]+)$"), so a match is one string.match call;
-- a method with many patterns has them bucketed by their first segment. Parameters are
-- percent-decoded after matching (only those holding a '%'), so "%2F" never splits: each
-- route also has a plain pattern whose parameters exclude '%' ("^/users/([^/%%]+)$"), which
-- matches the commonest path alone, without a look for '%'. A path that does not start
-- with "/" (the "*" of OPTIONS *, the "host:port" of CONNECT) matches no route.
-- Knows nothing of requests or the server.
local url = require "loom.url"

local byte, find, gsub, match, sub = string.byte, string.find, string.gsub, string.match, string.sub
local decode, next = url.decode, next

-- Lua's limit on captures in one pattern (LUA_MAXCAPTURES), hence on parameters.
local MAX_PARAMS = 32

local Router = {}
Router.__index = Router

local function new()
    return setmetatable({ exact = {}, patterns = {}, methods = {} }, Router)
end

-- Raises at the level of router:add's caller.
local function bad(pattern, why, level)
    error("bad route pattern '" .. pattern .. "': " .. why, level or 4)
end

-- "/users/{id}/{rest*}" -> { pat = "^/users/([^/]+)/(.*)$", names = {"id", "rest"},
-- first = "users" (the first segment when it is literal, else false) }
local function compile(pattern)
    local out, plain, names, first = { "^" }, { "^" }, {}, nil
    local pos, len = 2, #pattern
    while true do
        local slash = find(pattern, "/", pos, true)
        local seg = sub(pattern, pos, (slash or len + 1) - 1)
        local name, star = match(seg, "^{([%w_]+)(%*?)}$")
        if name then
            if star == "*" and slash then bad(pattern, "{" .. name .. "*} must come last") end
            names[#names + 1] = name
            out[#out + 1] = star == "*" and "/(.*)" or "/([^/]+)"
            plain[#plain + 1] = star == "*" and "/([^%%]*)" or "/([^/%%]+)"
        elseif find(seg, "[{}]") then
            bad(pattern, "a segment is either {name}, {name*} or literal")
        else
            out[#out + 1] = "/" .. gsub(seg, "%W", "%%%0")
            plain[#plain + 1] = out[#out]
        end
        if first == nil then first = not name and seg end
        if not slash then break end
        pos = slash + 1
    end
    if #names > MAX_PARAMS then bad(pattern, "more than " .. MAX_PARAMS .. " parameters") end
    out[#out + 1] = "$"
    plain[#plain + 1] = "$"
    return { pat = table.concat(out), plain = table.concat(plain), names = names, first = first,
        n = #names, name1 = names[1] }
end

-- A method's patterns bucketed by first segment: by_first[s] lists, in the order added,
-- the routes whose first segment is s or a parameter; wild lists the latter alone.
local function index(list)
    local by_first, wild = {}, {}
    for _, r in ipairs(list) do
        if r.first then by_first[r.first] = by_first[r.first] or {} end
    end
    for _, r in ipairs(list) do
        if r.first then
            local b = by_first[r.first]
            b[#b + 1] = r
        else
            wild[#wild + 1] = r
            for _, b in pairs(by_first) do b[#b + 1] = r end
        end
    end
    return { by_first = by_first, wild = wild }
end

-- router:add(method, pattern, handler); method "*" matches any method. Raises on a bad
-- pattern (one that does not start with "/" included).
function Router:add(method, pattern, handler)
    if byte(pattern, 1) ~= 47 then bad(pattern, "it must start with '/'", 3) end
    self.methods[method] = true
    if not find(pattern, "[{}]") then -- a lone "}" is a bad segment, not a literal
        local t = self.exact[method]
        if not t then t = {}; self.exact[method] = t end
        t[pattern] = handler
        return
    end
    local r = compile(pattern)
    r.handler = handler
    local p = self.patterns[method]
    if not p then p = { list = {} }; self.patterns[method] = p end
    p.list[#p.list + 1] = r
    p.index = nil -- rebuilt on the next match
end

-- The params of route r for path by pattern pat (r.pat, or r.plain: no '%' in them), or nil
-- when it does not match.
local function bind(r, path, pat)
    local names = r.names
    local n = #names
    if n == 1 then
        local a = match(path, pat)
        if a then return { [names[1]] = a } end
        return nil
    elseif n == 2 then
        local a, b = match(path, pat)
        if not a then return nil end
        return { [names[1]] = a, [names[2]] = b } -- in order: a repeated name keeps the last value
    end
    local caps = { match(path, pat) }
    if caps[1] == nil then return nil end
    local params = {}
    for i = 1, n do params[names[i]] = caps[i] end -- a repeated name keeps the last value
    return params
end

-- Up to this many patterns, a method's are tried in turn: cheaper than finding the path's
-- first segment (a string call) to pick a bucket. The answer is the same either way.
local LINEAR = 4

-- The handler and params of method's route for path. Each route is tried first with its
-- plain pattern, whose parameters hold no '%' (so need no decoding): one call for the
-- commonest match; the full pattern only when the path holds a '%'.
local function find_route(self, method, path)
    local t = self.exact[method]
    local h = t and t[path]
    if h then return h end
    local p = self.patterns[method]
    if not p then return nil end
    local list = p.list
    if #list > LINEAR then
        local ix = p.index
        if not ix then ix = index(list); p.index = ix end
        list = ix.by_first[match(path, "^/([^/]*)")] or ix.wild -- nil for "*", "host:443"
    end
    local pct -- whether path holds a '%', found when first needed
    for i = 1, #list do
        local r = list[i]
        if r.n == 1 then -- the commonest route, without bind's call
            local a = match(path, r.plain)
            if a then return r.handler, { [r.name1] = a } end
        else
            local params = bind(r, path, r.plain)
            if params then return r.handler, params end
        end
        if pct == nil then pct = find(path, "%", 1, true) ~= nil end
        if pct then
            local params = bind(r, path, r.pat)
            if params then
                for k, v in next, params do params[k] = decode(v) end
                return r.handler, params
            end
        end
    end
end

-- router:find(method, path) -> handler, params | nil: the route of method itself (no HEAD
-- fallback, no "*" routes, no allowed list): app.lua's first try, one call fewer than match.
Router.find = find_route

-- router:match(method, path) -> handler, params | nil, allowed (a list of methods that
-- would match the path; empty when none does). params is nil for a route without
-- parameters, else a table holding at least one.
function Router:match(method, path)
    local t = self.exact[method]
    local h = t and t[path]
    if h then return h end
    -- a path that does not start with "/" ("*", "host:443") matches no pattern (they all
    -- start with "^/") and no exact route (they all start with "/"): no check needed
    local params
    h, params = find_route(self, method, path)
    if h then return h, params end
    if method == "HEAD" then
        h, params = find_route(self, "GET", path)
        if h then return h, params end
    end
    h, params = find_route(self, "*", path)
    if h then return h, params end
    local allowed = {}
    for m in pairs(self.methods) do
        if m ~= "*" and find_route(self, m, path) then allowed[#allowed + 1] = m end
    end
    if #allowed > 0 then
        local has_get, has_head
        for _, m in ipairs(allowed) do
            if m == "GET" then has_get = true elseif m == "HEAD" then has_head = true end
        end
        if has_get and not has_head then allowed[#allowed + 1] = "HEAD" end
        table.sort(allowed)
    end
    return nil, allowed
end

return { new = new }
