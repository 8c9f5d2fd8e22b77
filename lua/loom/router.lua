-- loom.router: method + path to handler, on the path exactly as sent. Static paths are one
-- table lookup. A pattern is a path whose segments (the runs between slashes, empty ones
-- included: "/a//b/" has the segments "a", "", "b" and "") are literal, "{name}" (one
-- non-empty segment, bound to params.name) or a last "{name*}" (the rest of the path from
-- that segment on, slashes and all, possibly empty). A method's patterns are matched in C
-- (src/lib/route.c: core.route_set compiles a list of them, core.route_match walks the path
-- once per route, in the order added); a method with many has them bucketed by their first
-- segment, each bucket a set of its own. Parameters are percent-decoded after matching
-- (only those holding a '%', as url.decode does), so "%2F" never splits. A path that does
-- not start with "/" (the "*" of OPTIONS *, the "host:port" of CONNECT) matches no route.
-- Knows nothing of requests or the server.
local core = require "loom.core"

local byte, find, match, sub = string.byte, string.find, string.match, string.sub
local route_set, route_match = core.route_set, core.route_match

-- Lua's limit on captures in one pattern (LUA_MAXCAPTURES), the router's limit on parameters
-- since it matched with Lua patterns; route.c keeps it.
local MAX_PARAMS = 32

local Router = {}
Router.__index = Router

local function new()
    -- sets[method]: the set of method's patterns while they are one (see find_pattern), for
    -- app.lua's entry to match with directly
    return setmetatable({ exact = {}, patterns = {}, methods = {}, sets = {} }, Router)
end

-- Raises at the level of router:add's caller.
local function bad(pattern, why, level)
    error("bad route pattern '" .. pattern .. "': " .. why, level or 4)
end

-- "/users/{id}/{rest*}" -> { segs = {"users", 1, 2}, names = {"id", "rest"},
-- first = "users" (the first segment when it is literal, else false) }: a segment is its
-- literal text, 1 for {name} or 2 for {name*} (what core.route_set reads).
local function compile(pattern)
    local segs, names, first = {}, {}, nil
    local pos, len = 2, #pattern
    while true do
        local slash = find(pattern, "/", pos, true)
        local seg = sub(pattern, pos, (slash or len + 1) - 1)
        local name, star = match(seg, "^{([%w_]+)(%*?)}$")
        if name then
            if star == "*" and slash then bad(pattern, "{" .. name .. "*} must come last") end
            names[#names + 1] = name
            segs[#segs + 1] = star == "*" and 2 or 1
        elseif find(seg, "[{}]") then
            bad(pattern, "a segment is either {name}, {name*} or literal")
        else
            segs[#segs + 1] = seg
        end
        if first == nil then first = not name and seg end
        if not slash then break end
        pos = slash + 1
    end
    if #names > MAX_PARAMS then bad(pattern, "more than " .. MAX_PARAMS .. " parameters") end
    return { segs = segs, names = names, first = first }
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
    p.set, p.index, self.sets[method] = nil, nil, nil -- made again on the next match
end

-- Up to this many patterns, a method's are one set, tried in turn: a route that does not
-- take the path costs a few instructions in C, less than finding the path's first segment
-- (a string call) to pick a bucket. The answer is the same either way.
local LINEAR = 16

-- A bucket's set, made when first needed.
local function bucket_set(sets, list)
    local s = route_set(list)
    sets[list] = s
    return s
end

-- The handler and params of method's pattern route for path (its exact routes aside).
local function find_pattern(self, method, path)
    local p = self.patterns[method]
    if not p then return nil end
    local set = p.set
    if not set then
        local list = p.list
        if #list <= LINEAR then
            set = route_set(list)
            p.set, self.sets[method] = set, set
        else
            local ix = p.index
            if not ix then ix = index(list); ix.sets = {}; p.index = ix end
            list = ix.by_first[match(path, "^/([^/]*)")] or ix.wild -- wild for "*", "host:443"
            set = ix.sets[list] or bucket_set(ix.sets, list)
        end
    end
    return route_match(set, path)
end

-- The handler and params of method's route for path.
local function find_route(self, method, path)
    local t = self.exact[method]
    local h = t and t[path]
    if h then return h end
    return find_pattern(self, method, path)
end

-- router:find(method, path) -> handler, params | nil: the route of method itself (no HEAD
-- fallback, no "*" routes, no allowed list): app.lua's first try, one call fewer than match.
Router.find = find_route
-- router:find_pattern(method, path) -> handler, params | nil: router:find without the look
-- at exact routes, for a caller that has just made it (app.lua's entry).
Router.find_pattern = find_pattern

-- router:match(method, path) -> handler, params | nil, allowed (a list of methods that
-- would match the path; empty when none does). params is nil for a route without
-- parameters, else a table holding at least one.
function Router:match(method, path)
    local t = self.exact[method]
    local h = t and t[path]
    if h then return h end
    -- a path that does not start with "/" ("*", "host:443") matches no pattern (route_match
    -- turns it down) and no exact route (they all start with "/"): no check needed
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
