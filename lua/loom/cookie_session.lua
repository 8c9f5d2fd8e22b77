-- loom.cookie_session: middleware that gives each request `req.session`, a plain table
-- kept in a cookie signed with HMAC-SHA256 (or sealed with AES-256-GCM), or with `store`
-- kept server-side under a signed random id. It knows the cookie's wire shape and the
-- store hook; Set-Cookie lines are written by app.lua from the answer's `cookies` field.
--
-- Cookie value, signed:    base64url(json) "." base64url(HMAC-SHA256(k_sign, name "=" b64))
--          sealed:         base64url(nonce(12) .. AES-GCM(k_seal, nonce, json, aad = name))
--          with a store:   id "." base64url(HMAC-SHA256(k_sign, name "=" id))
-- json = {"d": the session, "e": expiry (Unix seconds)}. Keys come from each secret:
-- k_sign = HMAC-SHA256(secret, "loom.cookie_session.sign"), k_seal likewise with ".seal",
-- so one secret never serves two purposes and every secret length gives a 32-byte key.
local core = require "loom.core"
local args = require "loom.args"
local json = require "loom.json"
local server_cookies = require "loom.server_cookies"

local crypto = core.crypto
local hmac, b64, unb64, equal, random = crypto.hmac, crypto.base64url, crypto.unbase64url, crypto.equal, crypto.random
local type, pairs, ipairs, tostring, error, pcall, sort, concat, format =
    type, pairs, ipairs, tostring, error, pcall, table.sort, table.concat, string.format

local MAX_COOKIE = 4096 -- bytes of name=value, the least a browser must keep (RFC 6265 6.1)
local OPTS = { secret = true, name = true, max_age = true, encrypt = true, store = true, path = true,
    domain = true, secure = true, same_site = true }

-- A canonical text of a session table (keys sorted), to tell whether a handler changed it:
-- nested tables are compared too, and a rehash that reorders keys is not a change.
local function canon(v, out, depth)
    local t = type(v)
    if t == "table" then
        if depth > 64 then error("session: tables nested over 64 deep (a cycle?)", 0) end
        local keys = {}
        for k in pairs(v) do keys[#keys + 1] = k end
        sort(keys, function(a, b)
            local ta, tb = type(a), type(b)
            if ta ~= tb then return ta < tb end
            if ta == "number" or ta == "string" then return a < b end
            return tostring(a) < tostring(b)
        end)
        out[#out + 1] = "{"
        for _, k in ipairs(keys) do
            canon(k, out, depth + 1)
            out[#out + 1] = "="
            canon(v[k], out, depth + 1)
            out[#out + 1] = ","
        end
        out[#out + 1] = "}"
    elseif t == "string" then
        out[#out + 1] = format("%q", v)
    else
        out[#out + 1] = t:sub(1, 1) .. tostring(v)
    end
    return out
end

local function snapshot(session)
    return concat(canon(session, {}, 0))
end

local function derive(secret, purpose)
    return hmac("sha256", secret, "loom.cookie_session." .. purpose)
end

local function check_store(store)
    if store == nil then return nil end
    -- an object whose metatable has __session_store gives its own adapter (loom.redis: its
    -- r:get/r:set are Redis commands; the adapter keeps "loom:session:<id>" with SET EX)
    local smt = getmetatable(store)
    if type(smt) == "table" and type(rawget(smt, "__session_store")) == "function" then
        store = smt.__session_store(store)
    end
    if type(store) ~= "table" and type(store) ~= "userdata" then
        args.fail("cookie_session", 1, "option 'store': a table with get, set and delete expected", 2)
    end
    for _, m in ipairs({ "get", "set", "delete" }) do
        if type(store[m]) ~= "function" then
            local mt = getmetatable(store)
            local idx = type(mt) == "table" and mt.__index
            if not (type(idx) == "table" and type(idx[m]) == "function") then
                args.fail("cookie_session", 1, "option 'store': method '" .. m .. "' missing", 2)
            end
        end
    end
    return store
end

-- The decoded {d, e} of a JSON text, or nil when it is not one or has expired.
local function payload(text, now)
    if not text then return nil end
    local ok, v = pcall(json.decode, text)
    if not ok or type(v) ~= "table" or type(v.d) ~= "table" or math.type(v.e) ~= "integer" then return nil end
    if v.e <= now then return nil end
    return v
end

-- loom.cookie_session{ secret = "s" | {"new", "old", ...}, name = "loom_session",
-- max_age = 1209600, encrypt = false, store = nil, path = "/", domain, secure, same_site = "Lax" }
local function new(opts)
    opts = args.known(args.opts(opts, "cookie_session", 1), OPTS, "cookie_session", 1)
    local secrets = opts.secret
    if type(secrets) == "string" then secrets = { secrets } end
    if type(secrets) ~= "table" or #secrets == 0 then
        args.fail("cookie_session", 1, "option 'secret': a string or a list of strings expected")
    end
    local sign, seal = {}, {}
    for i, s in ipairs(secrets) do
        if type(s) ~= "string" or #s == 0 then
            args.fail("cookie_session", 1, "option 'secret': entry " .. i .. " is not a non-empty string")
        end
        sign[i], seal[i] = derive(s, "sign"), derive(s, "seal")
    end
    local name = args.opt(opts, "name", "string", "loom_session", "cookie_session", 1)
    if not server_cookies.is_token(name) then
        args.fail("cookie_session", 1, "option 'name': a token expected")
    end
    local max_age = args.opt(opts, "max_age", "number", 1209600, "cookie_session", 1)
    if math.type(max_age) ~= "integer" or max_age <= 0 then
        args.fail("cookie_session", 1, "option 'max_age': a positive integer expected")
    end
    local encrypt = args.opt(opts, "encrypt", "boolean", false, "cookie_session", 1)
    local store = check_store(opts.store)
    local attrs = {
        path = args.opt(opts, "path", "string", "/", "cookie_session", 1),
        domain = args.opt(opts, "domain", "string", nil, "cookie_session", 1),
        secure = args.opt(opts, "secure", "boolean", nil, "cookie_session", 1),
        same_site = opts.same_site,
    }
    -- the attributes are checked now, not on the first answer
    server_cookies.serialize(name, { value = "", path = attrs.path, domain = attrs.domain,
        secure = attrs.secure == nil and true or attrs.secure, same_site = attrs.same_site }, true, 2)

    local mac_for = function(key, text) return b64(hmac("sha256", key, name .. "=" .. text)) end
    -- text "." its MAC with the first (current) key
    local function signed(text) return text .. "." .. mac_for(sign[1], text) end

    -- text, key index | nil: what a signed value carries, when a key's MAC matches
    local function verify(value)
        local dot = value:find(".", 1, true)
        if not dot then return nil end
        local text, mac = value:sub(1, dot - 1), value:sub(dot + 1)
        for i, key in ipairs(sign) do
            if equal(mac_for(key, text), mac) then return text, i end
        end
        return nil
    end

    local function unseal(value)
        local raw = unb64(value)
        if not raw or #raw < 12 + 16 then return nil end
        local nonce, sealed = raw:sub(1, 12), raw:sub(13)
        for i, key in ipairs(seal) do
            local text = core.aes_gcm_open(key, nonce, sealed, name)
            if text then return text, i end
        end
        return nil
    end

    -- The session in cookie `value`: data, expiry, key index, store id; nil for anything bad.
    local function load(value, now)
        if store then
            local id, ki = verify(value)
            if not id then return nil end
            local v = payload(store:get(id), now)
            if not v then return nil end
            return v.d, v.e, ki, id
        end
        local text, ki
        if encrypt then
            text, ki = unseal(value)
        else
            local b, k = verify(value)
            if b then text, ki = unb64(b), k end
        end
        local v = payload(text, now)
        if not v then return nil end
        return v.d, v.e, ki
    end

    local function cookie(value, age)
        return { value = value, max_age = age, path = attrs.path, domain = attrs.domain, secure = attrs.secure,
            same_site = attrs.same_site }
    end

    -- The cookie value for `data` expiring at `e` (the store written when there is one).
    local function save(data, e, id)
        local text = json.encode({ d = data, e = e })
        if store then
            -- a new id for every change: an id known before a login is worthless after it
            local new_id = b64(random(24))
            store:set(new_id, text, e - os.time())
            if id then store:delete(id) end
            return signed(new_id), new_id
        end
        if encrypt then
            local nonce = random(12)
            return b64(nonce .. core.aes_gcm_seal(seal[1], nonce, text, name))
        end
        return signed(b64(text))
    end

    local function with_cookie(res, spec)
        local cookies = {}
        if type(res.cookies) == "table" then
            for k, v in pairs(res.cookies) do cookies[k] = v end
        end
        cookies[name] = spec
        res.cookies = cookies
        return res
    end

    local function too_big(req, n)
        io.stderr:write(("loom: cookie_session: the session cookie of %s %s is %d bytes, over %d: "
            .. "not sent, the answer is a 500 (keep less in req.session, or use a store)\n")
            :format(req.method, req.target, n, MAX_COOKIE))
        io.stderr:flush()
        return { status = 500, text = "Internal Server Error" }
    end

    return function(req, next)
        local value = req.cookies[name]
        local now = os.time()
        local data, e, ki, id
        if value then data, e, ki, id = load(value, now) end
        local session = data or {}
        local before = snapshot(session)
        req.session = session
        local res = next(req)
        if type(res) ~= "table" then return res end
        session = req.session
        if res.streamed then
            if type(session) ~= "table" or snapshot(session) ~= before then
                io.stderr:write(("loom: cookie_session: %s %s changed the session in a streamed answer, "
                    .. "whose head was already out: not saved\n"):format(req.method, req.target))
                io.stderr:flush()
            end
            return res
        end
        if type(session) ~= "table" then session = {} end
        local after = snapshot(session)
        local changed = after ~= before
        if after == "{}" then
            if value == nil then return res end
            if id then store:delete(id) end
            return with_cookie(res, cookie("", 0))
        end
        if not changed and ki == 1 then return res end
        -- changed, or read with an old key (rotation: signed again with the first)
        if changed or not e then e = now + max_age end
        local v
        if store and not changed then
            v = signed(id) -- the same record, its id signed again
        else
            v = save(session, e, id)
        end
        local spec = cookie(v, e - now)
        local n = #name + 1 + #server_cookies.encode_value(v)
        if n > MAX_COOKIE then return too_big(req, n) end
        return with_cookie(res, spec)
    end
end

return new
