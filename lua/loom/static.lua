-- loom.static: files from a directory: content types, index.html, ETag and Last-Modified
-- with 304, single byte ranges with 206/416, and no path outside the directory. A file
-- answer is prepared first (status and headers, for middleware to see and change) and
-- streamed once the middleware is done, in 64 KiB pieces, never read whole into memory.
local core = require "loom.core"
local url = require "loom.url"

local M = {}

-- The file answers M.prepare made, with what to send: {path, first, last}
local prepared = setmetatable({}, { __mode = "k" })

local TYPES = {
    html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
    css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
    mjs = "text/javascript; charset=utf-8", json = "application/json",
    txt = "text/plain; charset=utf-8", md = "text/markdown; charset=utf-8",
    csv = "text/csv; charset=utf-8", xml = "application/xml", svg = "image/svg+xml",
    png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
    webp = "image/webp", avif = "image/avif", ico = "image/x-icon", wasm = "application/wasm",
    pdf = "application/pdf", zip = "application/zip", gz = "application/gzip",
    woff = "font/woff", woff2 = "font/woff2", ttf = "font/ttf", otf = "font/otf",
    mp3 = "audio/mpeg", ogg = "audio/ogg", wav = "audio/wav", mp4 = "video/mp4",
    webm = "video/webm", map = "application/json", lua = "text/plain; charset=utf-8",
}
M.types = TYPES

local function content_type(path)
    local ext = path:match("%.([%w]+)$")
    return ext and TYPES[ext:lower()] or "application/octet-stream"
end

local function plain(status, text, headers)
    headers = headers or {}
    headers["content-type"] = "text/plain; charset=utf-8"
    return { status = status, headers = headers, body = text }
end

-- Joins a request path below dir, or nil when it would leave dir (or holds a NUL).
local function safe_join(dir, rel)
    if rel:find("%z") or rel:find("\\", 1, true) then return nil end
    local parts = {}
    for seg in rel:gmatch("[^/]+") do
        if seg == ".." then return nil end
        if seg ~= "." then parts[#parts + 1] = seg end
    end
    return dir .. "/" .. table.concat(parts, "/")
end

local function http_date(t)
    return os.date("!%a, %d %b %Y %H:%M:%S GMT", t)
end

-- s without the blanks around it, in time linear in #s: a pattern such as
-- "^%s*bytes%s*=%s*([^,]*)%s*$" backtracks over a run of blanks, cubic in its length
-- ("bytes=", 4000 spaces and a comma took a minute of the server's one thread).
local function trim(s)
    local first = s:find("%S")
    if not first then return "" end
    return s:sub(first, (s:find("%S%s*$", first)))
end

-- "bytes=a-b" -> first, last (0-based, inclusive) | "bad" | nil (no usable range)
local function parse_range(h, size)
    if not h then return nil end
    local eq = h:find("=", 1, true)
    -- several ranges or another unit: send it all
    if not eq or trim(h:sub(1, eq - 1)) ~= "bytes" or h:find(",", eq, true) then return nil end
    local spec = trim(h:sub(eq + 1))
    local dash = spec:find("-", 1, true)
    if not dash then return "bad" end
    local a, b = trim(spec:sub(1, dash - 1)), trim(spec:sub(dash + 1))
    if a:find("%D") or b:find("%D") or (a == "" and b == "") then return "bad" end
    local first, last
    if a == "" then
        local n = tonumber(b)
        if n == 0 then return "bad" end
        first, last = math.max(size - n, 0), size - 1
    else
        first = tonumber(a)
        last = b ~= "" and math.min(tonumber(b), size - 1) or size - 1
    end
    if first > last or first >= size then return "bad" end
    return first, last
end

local function not_modified(req, etag, mtime)
    local inm = req.headers["if-none-match"]
    if inm then
        for tag in inm:gmatch("[^,%s]+") do
            if tag == etag or tag == "*" or tag:gsub("^W/", "") == etag:gsub("^W/", "") then return true end
        end
        return false
    end
    local ims = req.headers["if-modified-since"]
    return ims ~= nil and ims == http_date(mtime)
end

-- RFC 9110 13.1.5: with If-Range, the range holds only while the validator it names is
-- the file's current one (an entity-tag compared strongly, or the exact Last-Modified);
-- otherwise the whole file is sent, so a resumed download never mixes two versions.
local function range_applies(req, etag, last_modified)
    local ir = req.headers["if-range"]
    if not ir then return true end
    if ir:sub(1, 1) == '"' then return ir == etag end
    return ir == last_modified
end

-- What a file answer becomes before it is sent, so middleware sees its real status and
-- headers: res = {file = path, status, headers}. Returns {status = 200 or 206, headers
-- (content type, length, ETag, Last-Modified...), file = path, ...} for emit to send with
-- M.stream, or a plain answer for 304, 404 and 416. `st` is the file's stat, if known.
function M.prepare(req, res, st)
    local path, status, headers = res.file, res.status or 200, res.headers
    if type(path) ~= "string" then error("response file must be a path (string), got " .. type(path), 0) end
    st = st or core.stat(path)
    if not st or st.type ~= "file" then return plain(404, "Not Found") end
    local h = {}
    if headers then for k, v in pairs(headers) do h[type(k) == "string" and k:lower() or k] = v end end
    local etag = ('"%x-%x"'):format(st.size, st.mtime)
    h["etag"] = h["etag"] or etag
    h["last-modified"] = h["last-modified"] or http_date(st.mtime)
    h["content-type"] = h["content-type"] or content_type(path)
    h["accept-ranges"] = "bytes"
    if status == 200 and not_modified(req, etag, st.mtime) then
        return { status = 304, headers = { etag = h.etag, ["last-modified"] = h["last-modified"] } }
    end
    local first, last = 0, st.size - 1
    if status == 200 and range_applies(req, h.etag, h["last-modified"]) then
        local a, b = parse_range(req.headers.range, st.size)
        if a == "bad" then
            return plain(416, "Range Not Satisfiable", { ["content-range"] = "bytes */" .. st.size })
        elseif a then
            first, last, status = a, b, 206
            h["content-range"] = ("bytes %d-%d/%d"):format(first, last, st.size)
        end
    end
    h["content-length"] = tostring(last - first + 1)
    local out = { status = status, headers = h, file = path }
    prepared[out] = { path = path, first = first, last = last }
    return out
end

-- Whether res is a file answer M.prepare made (and its file is still the one prepared).
function M.is_prepared(res)
    local p = prepared[res]
    return p ~= nil and p.path == res.file
end

-- Sends a file answer M.prepare made (prepared again if a middleware changed its file),
-- with `headers` (its own, after middleware). Returns nothing once the file is streamed,
-- or a plain answer to send instead (the file went in the meantime).
function M.stream(req, res, headers)
    local p = prepared[res]
    if not M.is_prepared(res) then
        local again = M.prepare(req, res)
        p = prepared[again]
        if not p then return again end
        res, headers = again, again.headers
    end
    local f = io.open(p.path, "rb")
    if not f then return plain(404, "Not Found") end
    local _ <close> = f
    local out, err = req:stream{ status = res.status or 200, headers = headers }
    if not out then return nil, err end
    if req.method == "HEAD" then return end
    f:seek("set", p.first)
    local left = p.last - p.first + 1
    while left > 0 do
        local chunk = f:read(math.min(left, 65536))
        if not chunk then break end
        left = left - #chunk
        if not out:write(chunk) then break end
    end
end

-- The answer for rel (a decoded path below dir): a file answer to send, a 301 for a
-- directory without its slash ("/x/" serves x/index.html), or a plain 404.
local function lookup(req, dir, rel)
    local path = safe_join(dir, rel)
    if not path then return plain(404, "Not Found") end
    local st = core.stat(path)
    if st and st.type == "directory" then
        if req.path:sub(-1) ~= "/" then
            -- one leading slash: "//host/dir" would send the browser to another site
            local location = "/" .. req.path:gsub("^/+", "") .. "/"
            return { status = 301, headers = { location = location }, text = "Moved Permanently" }
        end
        path = path:gsub("/$", "") .. "/index.html"
        st = core.stat(path)
    end
    if not st or st.type ~= "file" then return plain(404, "Not Found") end
    return M.prepare(req, { file = path }, st)
end

-- A GET handler serving dir, routed at prefix/{path*}.
function M.handler(dir)
    dir = dir:gsub("/+$", "")
    return function(req)
        return lookup(req, dir, req.params and req.params.path or "")
    end
end

-- For app:static(prefix, dir, { fallthrough = true }): a function the app calls before its
-- routes; it gives the answer for a GET or HEAD of a file (or directory) under prefix, or
-- nil when there is none, so that the routes are tried next.
function M.fallthrough(prefix, dir)
    dir = dir:gsub("/+$", "")
    local n = #prefix
    return function(req)
        local m, path = req.method, req.path
        if m ~= "GET" and m ~= "HEAD" then return nil end
        if n > 0 and path ~= prefix and path:sub(1, n + 1) ~= prefix .. "/" then return nil end
        local res = lookup(req, dir, url.decode(path:sub(n + 2)))
        if res.status == 404 then return nil end
        return res
    end
end

return M
