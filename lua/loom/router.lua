-- loom.router: method + path to handler. Static paths are one table lookup; patterns
-- match segment by segment: "/users/{id}" binds params.id, "/files/{path*}" binds the rest
-- of the path. Parameter values are percent-decoded after matching, so "%2F" never splits.
local url = require "loom.url"

local Router = {}
Router.__index = Router

local function new()
    return setmetatable({ exact = {}, patterns = {}, methods = {} }, Router)
end

local function compile(pattern)
    local segs = {}
    for seg in pattern:gmatch("[^/]+") do
        local name, rest = seg:match("^{([%w_]+)(%*?)}$")
        if name then
            segs[#segs + 1] = { name = name, rest = rest == "*" }
        elseif seg:find("[{}]") then
            error("bad route pattern '" .. pattern .. "': a segment is either {name}, {name*} or literal", 3)
        else
            segs[#segs + 1] = seg
        end
    end
    for i, s in ipairs(segs) do
        if type(s) == "table" and s.rest and i ~= #segs then
            error("bad route pattern '" .. pattern .. "': {" .. s.name .. "*} must come last", 3)
        end
    end
    return segs
end

-- router:add(method, pattern, handler); method "*" matches any method.
function Router:add(method, pattern, handler)
    self.methods[method] = true
    if not pattern:find("[{}]") then -- a lone "}" is a bad segment, not a literal
        local t = self.exact[method]
        if not t then t = {}; self.exact[method] = t end
        t[pattern] = handler
        return
    end
    local list = self.patterns[method]
    if not list then list = {}; self.patterns[method] = list end
    list[#list + 1] = { segs = compile(pattern), handler = handler }
end

local function split_path(path)
    local parts = {}
    for seg in path:gmatch("[^/]+") do parts[#parts + 1] = seg end
    return parts
end

local function match_segs(segs, parts, path)
    local params
    local n = #segs
    for i = 1, n do
        local s, p = segs[i], parts[i]
        if type(s) == "string" then
            if s ~= p then return nil end
        elseif s.rest then
            -- the rest of the path from this segment on, as sent (with its slashes)
            local pos = 1
            for _ = 1, i - 1 do pos = path:find("/", path:find("[^/]", pos)) or #path + 1 end
            local rest = path:sub(pos):gsub("^/+", "")
            params = params or {}
            params[s.name] = url.decode(rest)
            return params
        else
            if p == nil then return nil end
            params = params or {}
            params[s.name] = url.decode(p)
        end
    end
    if #parts ~= n then return nil end
    return params or {}
end

local function find(self, method, path, parts)
    local t = self.exact[method]
    local h = t and t[path]
    if h then return h end
    local list = self.patterns[method]
    if not list then return nil end
    parts = parts or split_path(path)
    for i = 1, #list do
        local r = list[i]
        local params = match_segs(r.segs, parts, path)
        if params then return r.handler, params end
    end
end

-- router:match(method, path) -> handler, params | nil, allowed (a list of methods that
-- would match the path; empty when none does)
function Router:match(method, path)
    local h, params = find(self, method, path)
    if h then return h, params end
    if method == "HEAD" then
        h, params = find(self, "GET", path)
        if h then return h, params end
    end
    h, params = find(self, "*", path)
    if h then return h, params end
    local allowed = {}
    local parts = split_path(path)
    for m in pairs(self.methods) do
        if m ~= "*" and find(self, m, path, parts) then allowed[#allowed + 1] = m end
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
