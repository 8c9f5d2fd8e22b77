-- loom.json: JSON through lua-cjson, loaded on first use so loom works without it until a
-- script needs JSON. loom.json.null is the JSON null.
local M = {}
local cjson

local function lib()
    if not cjson then
        local ok, mod = pcall(require, "cjson")
        if not ok then
            error("loom.json needs lua-cjson (Debian: apt-get install lua-cjson)", 3)
        end
        cjson = mod.new()
        cjson.encode_sparse_array(true)
        cjson.decode_array_with_array_mt(true)
        M.null = cjson.null
    end
    return cjson
end

-- loom.json.encode(v) -> string; raises on values JSON cannot hold.
function M.encode(v)
    return lib().encode(v)
end

-- loom.json.decode(s) -> value; raises on malformed JSON.
function M.decode(s)
    if type(s) ~= "string" then
        error("bad argument #1 to 'decode' (string expected, got " .. type(s) .. ")", 2)
    end
    return lib().decode(s)
end

pcall(lib) -- sets M.null when cjson is there
return M
