-- loom.limit: rate-limiting middleware. A GCRA (generic cell rate algorithm, a token bucket
-- kept as one timestamp) per key, in a loom.shared dict so that every worker counts the same
-- requests. Over the limit: 429 with Retry-After (whole seconds, rounded up).
local runtime = require "loom.runtime"

local instances = 0

local function optnumber(opts, name, def)
    local v = opts[name]
    if v == nil then return def end
    if type(v) ~= "number" or v <= 0 or v ~= v then
        error(("bad argument #1 to 'limit' (option '%s': positive number expected, got %s)")
            :format(name, v == nil and "nil" or tostring(v)), 3)
    end
    return v
end

-- loom.limit{ rate = per second, burst = requests at once (default: rate, at least 1),
--             key = function(req) -> key (default: req.remote; nil: not limited),
--             dict = a loom.shared dict (default: loom.shared("loom_limit", 1 MiB)),
--             name = namespace of the keys (default: one per loom.limit call) }
return function(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'limit' (table expected, got " .. type(opts) .. ")", 2)
    end
    local rate = optnumber(opts, "rate", nil)
    if not rate then
        error("bad argument #1 to 'limit' (option 'rate': positive number expected, got nil)", 2)
    end
    local burst = optnumber(opts, "burst", math.max(1, rate))
    local key = opts.key or function(req) return req.remote end
    if type(key) ~= "function" then
        error("bad argument #1 to 'limit' (option 'key': function expected, got " .. type(key) .. ")", 2)
    end
    local dict = opts.dict
    if dict == nil then
        local err
        dict, err = runtime.shared("loom_limit", 1 << 20)
        if not dict then error("limit: " .. tostring(err), 2) end
    elseif type(dict) ~= "table" or not dict._gcra then
        error("bad argument #1 to 'limit' (option 'dict': loom.shared dict expected)", 2)
    end
    instances = instances + 1
    local prefix = (opts.name and tostring(opts.name) or ("limit" .. instances)) .. ":"
    local interval, tolerance = 1 / rate, burst / rate
    return function(req, next)
        local k = key(req)
        if k == nil then return next(req) end
        local ok, x = dict:_gcra(prefix .. tostring(k), interval, tolerance)
        if ok == false then
            return {
                status = 429,
                headers = { ["retry-after"] = tostring(math.max(1, math.ceil(x))) },
                body = "too many requests\n",
            }
        end
        -- ok == nil: the dict is full even after eviction: let the request through
        return next(req)
    end
end
