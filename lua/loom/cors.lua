-- loom.cors: Cross-Origin Resource Sharing (the Fetch standard's CORS protocol) as
-- middleware: preflight OPTIONS requests are answered here with 204, and real answers to
-- an allowed Origin get Access-Control-Allow-Origin and the rest. CORS only tells the
-- browser what it may let a page read: a request from an origin that is not allowed still
-- runs, and its answer simply carries no CORS header. Knows nothing of CSRF or cookies.
local args = require "loom.args"

local type, ipairs, pairs, tostring, concat = type, ipairs, pairs, tostring, table.concat

local OPTS = { origins = true, methods = true, headers = true, credentials = true, max_age = true, expose = true }
local DEFAULT_METHODS = { "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE" }

local function list_opt(opts, name)
    local v = opts[name]
    if v == nil then return nil end
    if type(v) == "string" then v = { v } end
    if type(v) ~= "table" then args.fail("cors", 1, "option '" .. name .. "': a list of strings expected", 2) end
    for i, s in ipairs(v) do
        if type(s) ~= "string" or s:find("[%c,]") then
            args.fail("cors", 1, "option '" .. name .. "': entry " .. i .. " is not a name", 2)
        end
    end
    return v
end

-- Adds `token` to a comma-separated Vary value unless it is there (or "*" is).
local function vary_with(v, token)
    if v == nil or v == "" then return token end
    for t in v:gmatch("[^,%s]+") do
        if t == "*" or t:lower() == token:lower() then return v end
    end
    return v .. ", " .. token
end

-- An answer's own Vary wins over req.response_headers' (app.lua's with_extra), so when the
-- answer has one, it must hold Origin too (adding it twice does nothing).
local function add_vary(res, token)
    for k, v in pairs(res.headers) do
        if type(k) == "string" and k:lower() == "vary" then
            res.headers[k] = vary_with(v, token)
            return
        end
    end
end

-- loom.cors{ origins = "*" | {"https://a.example", ...} | function(origin) -> bool,
--            methods = {GET, HEAD, PUT, PATCH, POST, DELETE}, headers = (those asked for),
--            credentials = false, max_age = nil, expose = {} }
local function new(opts)
    opts = args.known(args.opts(opts, "cors", 1), OPTS, "cors", 1)
    local origins = opts.origins
    if origins == nil then origins = "*" end
    local allowed -- origin -> true, when a list
    if type(origins) == "table" then
        allowed = {}
        for i, o in ipairs(origins) do
            if type(o) ~= "string" then args.fail("cors", 1, "option 'origins': entry " .. i .. " is not a string") end
            allowed[o] = true
        end
    elseif origins ~= "*" and type(origins) ~= "function" then
        args.fail("cors", 1, "option 'origins': \"*\", a list of origins or a function expected")
    end
    local methods = concat(list_opt(opts, "methods") or DEFAULT_METHODS, ", ")
    local headers = list_opt(opts, "headers")
    headers = headers and concat(headers, ", ")
    local expose = list_opt(opts, "expose")
    expose = expose and #expose > 0 and concat(expose, ", ") or nil
    local credentials = args.opt(opts, "credentials", "boolean", false, "cors", 1)
    local max_age = args.opt(opts, "max_age", "number", nil, "cors", 1)
    if max_age and (math.type(max_age) ~= "integer" or max_age < 0) then
        args.fail("cors", 1, "option 'max_age': a non-negative integer expected")
    end
    -- The answer depends on Origin unless every origin gets "*".
    local by_origin = origins ~= "*" or credentials

    local function permits(origin)
        if origins == "*" then return true end
        if allowed then return allowed[origin] == true end
        return origins(origin) == true
    end

    -- The Access-Control-Allow-Origin value for an allowed origin.
    local function allow_origin(origin)
        if by_origin then return origin end
        return "*"
    end

    local function preflight(req, origin)
        local h = {}
        if by_origin then h.vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers" end
        if permits(origin) then
            h["access-control-allow-origin"] = allow_origin(origin)
            h["access-control-allow-methods"] = methods
            local asked = req.headers["access-control-request-headers"]
            local allow = headers or asked
            if allow and allow ~= "" then h["access-control-allow-headers"] = allow end
            if credentials then h["access-control-allow-credentials"] = "true" end
            if max_age then h["access-control-max-age"] = tostring(max_age) end
            if not by_origin and headers == nil and asked then
                h.vary = "Access-Control-Request-Headers"
            end
        end
        return { status = 204, headers = h }
    end

    return function(req, next)
        local origin = req.headers.origin
        if origin == nil then return next(req) end
        if req.method == "OPTIONS" and req.headers["access-control-request-method"] ~= nil then
            return preflight(req, origin)
        end
        local extra = req.response_headers -- before next: streams get them too
        if by_origin then extra.vary = vary_with(extra.vary, "Origin") end
        if permits(origin) then
            extra["access-control-allow-origin"] = allow_origin(origin)
            if credentials then extra["access-control-allow-credentials"] = "true" end
            if expose then extra["access-control-expose-headers"] = expose end
        end
        local res = next(req)
        if by_origin and type(res) == "table" and not res.streamed and res.headers then
            add_vary(res, "Origin")
        end
        return res
    end
end

return new
