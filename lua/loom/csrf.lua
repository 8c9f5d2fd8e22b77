-- loom.csrf: cross-site request forgery protection as Go 1.25's
-- net/http.CrossOriginProtection does it, with no token: browsers say where a request
-- comes from (Sec-Fetch-Site, else Origin), and an unsafe request from another origin
-- is refused with 403 before the handler runs. Knows nothing of sessions or cookies.
--
-- The rules, in order (Go's Check):
--   1. GET, HEAD and OPTIONS pass (they must not change state).
--   2. Sec-Fetch-Site "same-origin" or "none" passes; any other value is refused unless
--      the request is exempt (a bypass path, or an Origin among trusted_origins).
--   3. Without Sec-Fetch-Site (an old browser, or not a browser): no Origin passes; an
--      Origin whose host[:port] is the Host header passes; anything else ("null", another
--      host) is refused unless exempt.
local args = require "loom.args"
local router = require "loom.router"

local type, ipairs, error = type, ipairs, error

local OPTS = { trusted_origins = true, bypass = true, deny = true }
local SAFE = { GET = true, HEAD = true, OPTIONS = true }

local CROSS = "cross-origin request detected from Sec-Fetch-Site header"
local OLD = "cross-origin request detected, and/or browser is out of date: Sec-Fetch-Site is missing, "
    .. "and Origin does not match Host"

-- The host[:port] of an origin "scheme://host[:port]" (as Go's url.Parse(origin).Host),
-- or nil for "null" and anything without a scheme.
local function origin_host(origin)
    local rest = origin:match("^%a[%w+.-]*://(.*)$")
    if not rest then return nil end
    local host = rest:match("^[^/?#]*")
    return (host:gsub("^.*@", ""))
end

-- A trusted origin is scheme://host[:port] and nothing else (Go's AddTrustedOrigin).
local function check_origin(o, i)
    if type(o) ~= "string" then
        args.fail("csrf", 1, "option 'trusted_origins': entry " .. i .. " is not a string", 2)
    end
    local scheme, rest = o:match("^(%a[%w+.-]*)://(.*)$")
    if not scheme then
        args.fail("csrf", 1, "option 'trusted_origins': " .. o .. ": scheme://host[:port] expected", 2)
    end
    if rest == "" or rest:find("[/?#]") then
        args.fail("csrf", 1, "option 'trusted_origins': " .. o .. ": a host and no path, query or fragment", 2)
    end
end

-- A router of the bypass patterns: "/path/{x}" (every method) or "METHOD /path".
local function bypass_router(list)
    if list == nil then return nil end
    if type(list) ~= "table" then args.fail("csrf", 1, "option 'bypass': a list of patterns expected", 2) end
    local r = router.new()
    for i, p in ipairs(list) do
        if type(p) ~= "string" then args.fail("csrf", 1, "option 'bypass': entry " .. i .. " is not a string", 2) end
        local method, path = p:match("^(%u+) +(/.*)$")
        if not method then method, path = "*", p end
        if path:sub(1, 1) ~= "/" then
            args.fail("csrf", 1, "option 'bypass': " .. p .. ": '/path' or 'METHOD /path' expected", 2)
        end
        r:add(method, path, true)
    end
    return r
end

-- loom.csrf{ trusted_origins = {}, bypass = {}, deny = function(req, reason) ... end }
local function new(opts)
    opts = args.known(args.opts(opts, "csrf", 1), OPTS, "csrf", 1)
    local trusted = {}
    local list = args.opt(opts, "trusted_origins", "table", {}, "csrf", 1)
    for i, o in ipairs(list) do
        check_origin(o, i)
        trusted[o] = true
    end
    local bypass = bypass_router(opts.bypass)
    local deny = args.opt(opts, "deny", "function", nil, "csrf", 1)

    local function exempt(req, origin)
        if bypass and bypass:match(req.method, req.path) then return true end
        return origin ~= nil and trusted[origin] == true
    end

    -- nil when the request may go on, else why not
    local function check(req)
        if SAFE[req.method] then return nil end
        local h = req.headers
        local site = h["sec-fetch-site"]
        if site ~= nil and site ~= "" then -- Go's Header.Get: empty is absent
            if site == "same-origin" or site == "none" then return nil end
            if exempt(req, h.origin) then return nil end
            return CROSS
        end
        local origin = h.origin
        if origin == nil or origin == "" then return nil end
        local host = origin_host(origin)
        if host ~= nil and host == h.host then return nil end
        if exempt(req, origin) then return nil end
        return OLD
    end

    return function(req, next)
        local why = check(req)
        if why == nil then return next(req) end
        if deny then return deny(req, why) end
        return { status = 403, text = "Forbidden: " .. why .. "\n" }
    end
end

return new
