-- loom.compress: content coding of answers for loom.app{ compress = ... }. The encoders are
-- C (src/lib/compress.c: gzip, and br when built with libbrotli); this file decides which
-- answers are coded and how their headers change:
--   - the coding is chosen from Accept-Encoding with its q-values: br before gzip at equal
--     q, q=0 refuses, "*" stands for a coding not named; no header, no coding;
--   - never for HEAD, 1xx, 204, 206, 304, an answer that already has a Content-Encoding, a
--     body under min_size, a type not in `types`, or an answer with compress = false;
--   - an answer that could be coded gets Vary: Accept-Encoding, coded or not (a cache
--     must not give the gzip body to a client that did not ask for it);
--   - a coded answer's ETag gets a suffix inside the quotes ("x" -> "x-gzip", W/"x" ->
--     W/"x-br"), and If-None-Match and If-Match get the identity tag of each suffixed one
--     added before a handler reads them, so its own check against the identity ETag still
--     answers 304; the 304 then carries the suffixed ETag the client sent;
--   - streamed answers (req:stream, SSE) are coded too, flushed at each write.
-- app.lua calls it only when the app compresses: an app without compress pays nothing.
local core = require "loom.core"
local args = require "loom.args"

local type, pairs, ipairs, tostring, rawget, rawset = type, pairs, ipairs, tostring, rawget, rawset
local math_type = math.type
local compress, compressor, codings = core.compress, core.compressor, core.compress_codings

local M = {}

-- The types coded by default: text/*, and what nginx's gzip_types lists are usually set to
-- (JSON, JavaScript, XML, SVG, web fonts without their own compression, wasm); any
-- "+json" or "+xml" type too. Images, audio, video and archives are compressed already.
local DEFAULT_TYPES = {
    "text/*", "application/json", "application/javascript", "application/x-javascript",
    "application/ecmascript", "application/xml", "application/xhtml+xml", "application/rss+xml",
    "application/atom+xml", "application/ld+json", "application/manifest+json",
    "application/geo+json", "application/problem+json", "application/x-ndjson",
    "application/graphql-response+json", "application/wasm", "application/x-www-form-urlencoded",
    "application/vnd.ms-fontobject", "application/x-font-ttf", "font/ttf", "font/otf",
    "font/eot", "image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp",
}

local OPTS = { level = true, br_level = true, min_size = true, types = true, br = true }

local function fail(msg)
    args.fail("app", 1, "option 'compress': " .. msg, 3)
end

local function int_in(v, name, lo, hi)
    if v == nil then return nil end
    if math_type(v) ~= "integer" or v < lo or v > hi then
        fail(("%s: integer from %d to %d expected, got %s"):format(name, lo, hi, tostring(v)))
    end
    return v
end

-- The set of types from a list: exact media types, and "major/*" prefixes.
local function type_set(list)
    local exact, prefix = {}, {}
    for i, t in ipairs(list) do
        if type(t) ~= "string" then fail(("types[%d]: string expected, got %s"):format(i, type(t))) end
        t = t:lower()
        local major = t:match("^([^/]+)/%*$")
        if major then prefix[major .. "/"] = true else exact[t] = true end
    end
    return exact, prefix
end

-- loom.app{ compress = true | { level = 6, br_level = 4, min_size = 1024, types = {...},
-- br = true } } -> the configuration, or nil when off. Raises naming the option.
function M.config(v)
    if v == nil or v == false then return nil end
    if v == true then v = {} end
    if type(v) ~= "table" then fail("boolean or table expected, got " .. type(v)) end
    for k in pairs(v) do
        if not OPTS[k] then fail("unknown option '" .. tostring(k) .. "'") end
    end
    if v.types ~= nil and type(v.types) ~= "table" then
        fail("types: list of strings expected, got " .. type(v.types))
    end
    if v.br ~= nil and type(v.br) ~= "boolean" then fail("br: boolean expected, got " .. type(v.br)) end
    local cfg = {
        level = int_in(v.level, "level", 1, 9) or 6,
        br_level = int_in(v.br_level, "br_level", 0, 11) or 4,
        min_size = int_in(v.min_size, "min_size", 0, math.maxinteger) or 1024,
        br = codings.br == true and v.br ~= false,
        accept = {}, naccept = 0, -- Accept-Encoding value -> coding or false
        typed = {}, ntyped = 0,   -- Content-Type value -> codable or not
    }
    cfg.exact, cfg.prefix = type_set(v.types or DEFAULT_TYPES)
    return cfg
end

-- Accept-Encoding ----------------------------------------------------------------------

-- The coding for an Accept-Encoding value: "br", "gzip" or false. RFC 9110 12.5.3: a
-- coding's weight is its own q, else that of "*"; q=0 is "not acceptable"; the highest
-- weight wins, and br wins a tie.
local function negotiate(value, br)
    local q = {}
    for item in value:gmatch("[^,]+") do
        local name, params = item:match("^[ \t]*([^ \t;]+)[ \t]*(.*)$")
        if name then
            name = name:lower()
            if name == "x-gzip" then name = "gzip" end
            local w = 1
            local qv = params:match(";[ \t]*[qQ][ \t]*=[ \t]*([0-9.]+)")
            if qv then w = tonumber(qv) or 0 end
            if w > 1 then w = 1 end
            if q[name] == nil or w > q[name] then q[name] = w end
        end
    end
    local star = q["*"] or 0
    local gz = q.gzip or star
    local b = br and (q.br or star) or 0
    if b > 0 and b >= gz then return "br" end
    if gz > 0 then return "gzip" end
    return false
end

local CACHE_MAX = 64 -- distinct header values remembered (browsers send a handful)

local function coding_for(cfg, value)
    if value == nil then return false end
    local c = cfg.accept[value]
    if c == nil then
        c = negotiate(value, cfg.br)
        if cfg.naccept >= CACHE_MAX then cfg.accept, cfg.naccept = {}, 0 end
        cfg.accept[value], cfg.naccept = c, cfg.naccept + 1
    end
    return c
end
M.negotiate = negotiate

-- Headers ------------------------------------------------------------------------------

-- The key and value of header lname (lower case) in h, whatever case the key has.
local function hget(h, lname)
    if not h then return nil end
    local v = h[lname]
    if v ~= nil then return lname, v end
    for k, val in pairs(h) do
        if type(k) == "string" and k:lower() == lname then return k, val end
    end
end

local function codable_type(cfg, ct)
    if type(ct) ~= "string" then return false end
    local ok = cfg.typed[ct]
    if ok == nil then
        local media = (ct:match("^[ \t]*([^; \t]*)") or ""):lower()
        local major = media:match("^[^/]+/")
        ok = cfg.exact[media] == true or (major ~= nil and cfg.prefix[major] == true)
            or media:find("%+json$") ~= nil or media:find("%+xml$") ~= nil
        if cfg.ntyped >= CACHE_MAX then cfg.typed, cfg.ntyped = {}, 0 end
        cfg.typed[ct], cfg.ntyped = ok, cfg.ntyped + 1
    end
    return ok
end

local function no_coding_status(status)
    return status < 200 or status == 204 or status == 206 or status == 304
end

-- Whether an answer may be coded at all, whatever the client accepts.
local function eligible(cfg, req, status, headers)
    if no_coding_status(status) or req.method == "HEAD" then return false end
    if hget(headers, "content-encoding") then return false end
    local _, ct = hget(headers, "content-type")
    return codable_type(cfg, ct)
end

-- A copy of h with Vary: Accept-Encoding added (unless Vary already says so, or "*").
local function with_vary(h)
    local out = {}
    for k, v in pairs(h) do out[k] = v end
    local k, v = hget(out, "vary")
    if v == nil then
        out.vary = "Accept-Encoding"
    elseif type(v) == "table" then
        local list = {}
        for i, x in ipairs(v) do
            list[i] = x
            if tostring(x):lower():find("accept%-encoding") or x == "*" then return out end
        end
        list[#list + 1] = "Accept-Encoding"
        out[k] = list
    elseif not (tostring(v):lower():find("accept%-encoding") or v:match("^%s*%*%s*$")) then
        out[k] = v .. ", Accept-Encoding"
    end
    return out
end

-- "x" -> "x-gzip", W/"x" -> W/"x-gzip"; anything unquoted is left as it is.
local function coded_etag(etag, coding)
    if type(etag) ~= "string" then return etag end
    return (etag:gsub('"$', "-" .. coding .. '"', 1))
end

-- The headers of a coded answer: Content-Encoding, Vary, the ETag suffixed, no
-- Content-Length (the engine writes the coded one, or chunks a stream).
local function coded_headers(h, coding)
    h = with_vary(h)
    h["content-encoding"] = coding
    local ek, ev = hget(h, "etag")
    if ev ~= nil then h[ek] = coded_etag(ev, coding) end
    local lk = hget(h, "content-length")
    if lk then h[lk] = nil end
    return h
end

-- Conditional requests -----------------------------------------------------------------

-- Called on the request's header table as it is made (request.lua): each tag of
-- If-None-Match and If-Match with a coding suffix ("v1-gzip") gets its identity tag ("v1")
-- added after the list, so a handler that compares the list with its own (identity) ETag
-- finds it, while one that tags its coded files itself (app:static's precompressed
-- siblings) still finds the suffixed one; the coding of the client's copy is remembered
-- for the 304.
function M.widen_conditionals(req, h)
    for _, name in ipairs({ "if-none-match", "if-match" }) do
        local v = h[name]
        if v and (v:find('-gzip"', 1, true) or v:find('-br"', 1, true)) then
            local seen, have, add = nil, {}, {}
            for tag in v:gmatch("[^,]+") do
                tag = tag:match("^%s*(.-)%s*$")
                have[tag] = true
                local base, c = tag:match('^(.*)%-(%w+)"$')
                if base and (c == "gzip" or c == "br") then
                    seen = seen or c
                    add[#add + 1] = base .. '"'
                end
            end
            for _, tag in ipairs(add) do
                if not have[tag] then
                    have[tag] = true
                    v = v .. ", " .. tag
                end
            end
            h[name] = v
            if seen and name == "if-none-match" then rawset(req, "_inm_coding", seen) end
        end
    end
    return h
end

-- Whole answers ------------------------------------------------------------------------

-- What emit gave (a string, or status, headers, body, or nothing for a stream or a file)
-- through the coder: the same shapes back, coded where it applies.
function M.answer(cfg, req, status, headers, body)
    if status == nil then -- a stream (or a file sent as one): its coder ends here
        local enc = rawget(req, "_encoder")
        if enc then
            rawset(req, "_encoder", nil)
            core.req_write(req._box, enc:finish())
        end
        return
    end
    if type(status) == "string" then -- 200 text/plain
        body, status = status, 200
        if #body < cfg.min_size then return body end
        headers = { ["content-type"] = "text/plain; charset=utf-8" }
    end
    if status == 304 then
        local coding = rawget(req, "_inm_coding")
        if coding and headers then
            local ek, ev = hget(headers, "etag")
            -- the handler's identity tag matched: the client's copy is the coded one (a tag
            -- already suffixed, a precompressed file's, stays as it is)
            if type(ev) == "string" and not ev:find("%-" .. coding .. '"$') then
                headers = with_vary(headers)
                headers[ek] = coded_etag(ev, coding)
            end
        end
        return status, headers, body
    end
    if type(body) ~= "string" or #body < cfg.min_size or rawget(req, "_no_compress")
        or not eligible(cfg, req, status, headers) then
        return status, headers, body
    end
    local coding = coding_for(cfg, req.headers["accept-encoding"])
    if not coding then return status, with_vary(headers), body end
    local level = coding == "br" and cfg.br_level or cfg.level
    return status, coded_headers(headers, coding), compress(coding, body, level)
end

-- Streams ------------------------------------------------------------------------------

-- req:stream's head through the coder: the headers to send, and the encoder for the
-- writes (nil: sent as they are). A Content-Length under min_size is left alone.
function M.stream(cfg, req, status, headers, opts)
    if opts.compress == false or not eligible(cfg, req, status, headers or {}) then
        return headers
    end
    local _, cl = hget(headers, "content-length")
    if cl ~= nil and (tonumber(cl) or 0) < cfg.min_size then return headers end
    local coding = coding_for(cfg, req.headers["accept-encoding"])
    if not coding then return with_vary(headers) end
    local enc = compressor(coding, coding == "br" and cfg.br_level or cfg.level)
    rawset(req, "_encoder", enc)
    return coded_headers(headers, coding), enc
end

M.DEFAULT_TYPES = DEFAULT_TYPES
M.has_br = codings.br == true
return M
