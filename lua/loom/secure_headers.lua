-- loom.secure_headers: middleware that puts the usual browser-hardening headers on every
-- answer (streams and files included, through req.response_headers): an answer's own
-- header of the same name wins. Knows nothing of what the app serves.
local args = require "loom.args"

local type, pairs, tostring = type, pairs, tostring

local OPTS = { content_type_options = true, referrer_policy = true, frame_options = true, csp = true,
    hsts = true, cross_origin_opener_policy = true }
local FRAME = { DENY = "'none'", SAMEORIGIN = "'self'" }

local function str_or_false(opts, name, default)
    local v = opts[name]
    if v == nil then return default end
    if v == false then return nil end
    if type(v) ~= "string" or v:find("%c") then
        args.fail("secure_headers", 1, "option '" .. name .. "': a string or false expected", 2)
    end
    return v
end

-- The Strict-Transport-Security value: true gives a year with subdomains.
local function hsts_value(v)
    if v == nil or v == false then return nil end
    if v == true then v = {} end
    if type(v) ~= "table" then
        args.fail("secure_headers", 1, "option 'hsts': true, false or { max_age, include_subdomains, preload }", 2)
    end
    local age = v.max_age or 31536000
    if math.type(age) ~= "integer" or age < 0 then
        args.fail("secure_headers", 1, "option 'hsts': max_age must be a non-negative integer", 2)
    end
    local s = "max-age=" .. age
    if v.include_subdomains ~= false then s = s .. "; includeSubDomains" end
    if v.preload then s = s .. "; preload" end
    return s
end

-- loom.secure_headers{ content_type_options = "nosniff", referrer_policy = "strict-origin-when-cross-origin",
--   frame_options = "DENY" | "SAMEORIGIN" | false, csp = nil, hsts = false | true | {...},
--   cross_origin_opener_policy = "same-origin" }
local function new(opts)
    opts = args.known(args.opts(opts, "secure_headers", 1), OPTS, "secure_headers", 1)
    local plain = {}
    plain["x-content-type-options"] = str_or_false(opts, "content_type_options", "nosniff")
    plain["referrer-policy"] = str_or_false(opts, "referrer_policy", "strict-origin-when-cross-origin")
    plain["cross-origin-opener-policy"] = str_or_false(opts, "cross_origin_opener_policy", "same-origin")
    local frame = str_or_false(opts, "frame_options", "DENY")
    if frame then
        frame = frame:upper()
        if not FRAME[frame] then
            args.fail("secure_headers", 1, "option 'frame_options': \"DENY\", \"SAMEORIGIN\" or false expected")
        end
        plain["x-frame-options"] = frame
    end
    local csp = str_or_false(opts, "csp", nil)
    -- frame-ancestors is X-Frame-Options' successor: said in both unless the CSP says it
    if frame and not (csp and csp:find("frame%-ancestors")) then
        csp = (csp and csp:gsub("[;%s]*$", "") .. "; " or "") .. "frame-ancestors " .. FRAME[frame]
    end
    plain["content-security-policy"] = csp
    local hsts = hsts_value(opts.hsts)

    return function(req, next)
        local extra = req.response_headers
        for k, v in pairs(plain) do
            if extra[k] == nil then extra[k] = v end
        end
        -- RFC 6797 7.2: sent over plain HTTP, it would be ignored
        if hsts and req.tls and extra["strict-transport-security"] == nil then
            extra["strict-transport-security"] = hsts
        end
        return next(req)
    end
end

return new
