-- loom.static: files from a directory: content types, index.html, ETag and Last-Modified
-- with 304, single byte ranges with 206/416, precompressed .br/.gz siblings, and no path
-- outside the directory. A file answer is prepared first (status and headers, for
-- middleware to see and change) and sent once the middleware is done.
--
-- No file operation runs on the loop: stats, opens and reads are thread-pool jobs
-- (src/http1/http_static.c), and the body of a large file goes out with sendfile on plain
-- HTTP (through the socket layer on HTTPS), never through Lua. As nginx's open_file_cache
-- does, what a path is (its stat) is remembered for FRESH seconds, and the contents of a
-- file of at most SMALL bytes with it: such a file is then answered from memory, with no
-- thread-pool round trip, until the next look at its stat (once FRESH seconds have
-- passed) finds it changed. At most MAX_ENTRIES paths and MAX_BYTES of contents are kept;
-- past either the cache starts again empty.
local core = require "loom.core"
local url = require "loom.url"
local sync = require "loom.sync"

local M = {}

-- A file answer M.prepare made holds what to send in its field _static: {path, first, last,
-- e (the cache entry), sem (open files), mount, enc, ctype, vary} (a field rather than a
-- weak table: weak keys cost the collector on every request).

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

-- The cache of stats and small contents ------------------------------------------------

M.SMALL = 16 * 1024       -- files up to this size are answered from memory
M.FRESH = 1               -- seconds a remembered stat is trusted before it is looked at again
M.MAX_ENTRIES = 4096      -- paths remembered (found or not)
M.MAX_BYTES = 8 * 1024 * 1024 -- contents kept in memory, in all
M.MAX_FILES = 256         -- larger files kept open (their descriptors), in all
M.NOWAIT = 64 * 1024      -- bodies up to this size are read on the loop when their pages are
                          -- cached (preadv2 RWF_NOWAIT: never waits for the disk); 0: never

local now, static_load, static_open, static_plain = core.now, core.static_load, core.static_open,
    core.static_plain
local cache, entries, bytes, files = {}, 0, 0, 0

-- An entry: {type = "file" | "directory" | "other" | "none", size, mtime, mtime_ns, ino,
-- data (the contents, for a small file), file (the open file, for a larger one), etag,
-- lm (Last-Modified), checked (when)}.
local function entry_of(path, st, data, file, t)
    if not st then return { type = "none", checked = t } end
    return { type = st.type, size = st.size, mtime = st.mtime, mtime_ns = st.mtime_ns, ino = st.ino,
        data = data, file = file, etag = ('"%x-%x"'):format(st.size, st.mtime), lm = http_date(st.mtime),
        clen = tostring(st.size), ctype = content_type(path), checked = t }
end

-- Whether a stat st still describes entry e.
local function same(e, st)
    if not st then return e.type == "none" end
    return e.type == st.type and e.size == st.size and e.mtime == st.mtime
        and e.mtime_ns == st.mtime_ns and e.ino == st.ino
end

-- Lets go of what entry e holds (senders keep their own descriptors: closing is safe).
local function drop(e)
    if e.data then bytes = bytes - #e.data end
    if e.file then
        e.file:close()
        files = files - 1
    end
    entries = entries - 1
end

local function clear()
    for _, e in pairs(cache) do
        if e.file then e.file:close() end
    end
    cache, entries, bytes, files = {}, 0, 0, 0
end

local function remember(path, old, e)
    if old then drop(old) end
    if entries + 1 > M.MAX_ENTRIES or (e.data and bytes + #e.data > M.MAX_BYTES) then clear() end
    entries = entries + 1
    if e.data then bytes = bytes + #e.data end
    if e.file then files = files + 1 end
    cache[path] = e
end

-- What path is: the remembered entry while it is fresh; else a stat in the thread pool
-- (the entry is marked fresh first, so requests meanwhile keep using it rather than each
-- looking again), and a new entry when the path changed: a small file read, or a larger
-- one opened, in the same job as its stat.
local function info(path)
    local e = cache[path]
    local t = now()
    if e then
        if t - e.checked < M.FRESH then return e end
        e.checked = t
        local st = static_load(path, -1)
        if same(e, st) then return e end
    end
    local st, data, file = static_load(path, M.SMALL, files < M.MAX_FILES)
    local ne = entry_of(path, st, data, file, t)
    if cache[path] == e then
        remember(path, e, ne)
    end -- else another request put a newer entry meanwhile: this one's file goes with it (gc)
    return ne
end

-- Forgets path (it changed under an answer).
local function forget(path)
    local e = cache[path]
    if e then
        drop(e)
        cache[path] = nil
    end
end

-- Empties the cache (tests, or a deploy that replaced files and cannot wait FRESH s).
function M.flush()
    clear()
end

-- Answers ---------------------------------------------------------------------------------

local default_sem -- open files of file answers that come from handlers

local function semaphore(n)
    return sync.semaphore(n)
end

-- The answer for path, known as entry e: {status = 200 or 206, headers (content type,
-- length, ETag, Last-Modified...), file = path} for M.stream to send, or a plain answer for
-- 304, 404 and 416. enc: the coding of a precompressed sibling ("br" or "gzip"), with
-- ctype the original's type; vary: the mount serves siblings (Vary: Accept-Encoding).
local function prepare_file(req, path, e, status, headers, mount, enc, ctype, vary)
    if e.type ~= "file" then return plain(404, "Not Found") end
    if status == 200 and not headers and not enc and not vary then
        -- the commonest answer (a whole file, no validators to check): its head in one
        -- table, and the sending state shared by the entry's answers (nothing changes it)
        local rh = rawget(req, "headers") -- a middleware may have changed them: as they are
        if (rh == nil and static_plain(req._box))
            or (rh and not rh["if-none-match"] and not rh["if-modified-since"] and not rh.range) then
            local p = e.whole
            local sem = mount and mount.sem
            if not sem then
                default_sem = default_sem or semaphore(1024)
                sem = default_sem
            end
            if not p or p.sem ~= sem or p.mount ~= mount then
                p = { path = path, first = 0, last = e.size - 1, e = e, sem = sem, mount = mount }
                e.whole = p
            end
            return { status = 200, file = path, _static = p, headers = { etag = e.etag,
                ["last-modified"] = e.lm, ["content-type"] = ctype or e.ctype,
                ["accept-ranges"] = "bytes", ["content-length"] = e.clen } }
        end
    end
    local h = {}
    if headers then for k, v in pairs(headers) do h[type(k) == "string" and k:lower() or k] = v end end
    local etag = e.etag
    if enc then
        etag = etag:sub(1, -2) .. "-" .. enc .. '"' -- one tag per coding (RFC 9110 8.8.3)
        h["content-encoding"] = enc
    end
    if vary and h.vary == nil then h.vary = "Accept-Encoding" end
    h["etag"] = h["etag"] or etag
    h["last-modified"] = h["last-modified"] or e.lm
    h["content-type"] = h["content-type"] or ctype or e.ctype
    h["accept-ranges"] = "bytes"
    local size = e.size
    if status == 200 and not_modified(req, etag, e.mtime) then
        return { status = 304, headers = { etag = h.etag, ["last-modified"] = h["last-modified"], vary = h.vary } }
    end
    local first, last = 0, size - 1
    if status == 200 and range_applies(req, h.etag, h["last-modified"]) then
        local a, b = parse_range(req.headers.range, size)
        if a == "bad" then
            return plain(416, "Range Not Satisfiable", { ["content-range"] = "bytes */" .. size, vary = h.vary })
        elseif a then
            first, last, status = a, b, 206
            h["content-range"] = ("bytes %d-%d/%d"):format(first, last, size)
        end
    end
    h["content-length"] = tostring(last - first + 1)
    local out = { status = status, headers = h, file = path }
    local sem = mount and mount.sem
    if not sem then
        default_sem = default_sem or semaphore(1024)
        sem = default_sem
    end
    out._static = { path = path, first = first, last = last, e = e, sem = sem, mount = mount,
        enc = enc, ctype = ctype, vary = vary }
    return out
end

-- What a file answer becomes before it is sent, so middleware sees its real status and
-- headers: res = {file = path, status, headers}. Returns {status = 200 or 206, headers
-- (content type, length, ETag, Last-Modified...), file = path, ...} for emit to send with
-- M.stream, or a plain answer for 304, 404 and 416.
function M.prepare(req, res)
    local path = res.file
    if type(path) ~= "string" then error("response file must be a path (string), got " .. type(path), 0) end
    return prepare_file(req, path, info(path), res.status or 200, res.headers)
end

-- Whether res is a file answer M.prepare made (and its file is still the one prepared).
function M.is_prepared(res)
    local p = rawget(res, "_static")
    return p ~= nil and p.path == res.file
end

-- The body through req:stream's writer (a coder of lua/loom/compress.lua sits in it).
local function write_through(out, f, first, count)
    while count > 0 do
        local s = f:read(first, math.min(count, 65536))
        if not s or #s == 0 then return end -- shrank: the answer ends short
        if not out:write(s) then return end
        first, count = first + #s, count - #s
    end
end

-- The headers of answer `again` (the file was prepared anew) over those middleware saw.
local function merged(headers, again)
    local h = {}
    for k, v in pairs(headers or {}) do h[k] = v end
    for _, k in ipairs({ "etag", "last-modified", "content-length", "content-range" }) do
        h[k] = again.headers[k]
    end
    return h
end

-- Sends the body of prepared answer p from disk, through a sender of its own (a duplicate
-- descriptor of the file the cache keeps open, else of one opened for it), holding one of
-- its mount's open files. Returns "body", contents for a range of at most NOWAIT bytes of a
-- kept file whose pages are cached (sent by emit, with the head, in one write; or sent
-- here: nothing); "changed" when the file opened is not the one p was prepared from; a
-- plain answer (404); nothing once the body is sent.
local function send_file(req, p, status, headers, again)
    local file, first, count = p.e.file, p.first, p.last - p.first + 1
    if file and count <= M.NOWAIT and req.method ~= "HEAD" then
        -- a small range whose pages are cached: read on the loop (never waiting for the
        -- disk), and sent with the head in one write as a whole answer: on HTTP/1 without a
        -- coder, by the engine from a C buffer (no 64 KiB string of garbage per answer)
        local sent
        if not rawget(req, "_compress") then sent = file:respond(req._box, status, headers, first, count) end
        if sent then return end
        local body = sent == nil and file:cached(first, count)
        if body then return "body", body end
    end
    local sem = p.sem
    sem:acquire() -- max_open_files: past it, requests wait here for a file to close
    local _ <close> = sem.releaser
    local file = p.e.file
    local f = file and file:sender() -- nil when the cache let the file go meanwhile
    if not f then
        local st, _, opened = static_open(p.path)
        if not st then
            forget(p.path)
            return plain(404, "Not Found")
        end
        if not again and not same(p.e, st) then
            opened:close()
            return "changed"
        end
        f = opened:sender()
        opened:close()
        if not f then return plain(404, "Not Found") end
    end
    local _ <close> = f
    local out = req:stream{ status = status, headers = headers }
    if not out or req.method == "HEAD" then return end
    if out.enc then return write_through(out, f, first, count) end
    -- nil, err: the client went, or the file shrank (the answer is then short of its
    -- Content-Length, and the engine closes the connection after it)
    local box = req._box
    local ok, err = f:send(box, first, count, M.NOWAIT)
    if ok == nil and err == "other" then return write_through(out, f, first, count) end
    while ok == false do ok = f:send(box) end
end

-- Sends a file answer M.prepare made (prepared again if a middleware changed its file),
-- with `headers` (its own, after middleware). Returns nothing once the file is sent,
-- status, headers, body for an answer from memory (a small file), or a plain answer to send
-- instead (the file went in the meantime).
function M.stream(req, res, headers, again)
    local p = rawget(res, "_static")
    if not M.is_prepared(res) then
        local fresh = M.prepare(req, res)
        p = rawget(fresh, "_static")
        if not p then return fresh end
        res, headers = fresh, fresh.headers
    end
    local status = res.status or 200
    local data = p.e.data
    if data then
        if p.first ~= 0 or p.last ~= #data - 1 then data = data:sub(p.first + 1, p.last + 1) end
        return status, headers, data
    end
    local r, b = send_file(req, p, status, headers, again)
    if r == "body" then return status, headers, b end
    if r ~= "changed" then return r end
    -- the file changed since its stat was remembered: prepared again as it is now
    forget(p.path)
    local fresh = prepare_file(req, p.path, info(p.path), status == 206 and 200 or status, nil,
        p.mount, p.enc, p.ctype, p.vary)
    if not rawget(fresh, "_static") then return fresh end
    return M.stream(req, fresh, merged(headers, fresh), true)
end

-- Accept-Encoding -> the q-values of br and gzip (0: not acceptable).
local function codings(ae)
    if not ae then return 0, 0 end
    local q = {}
    for item in ae:gmatch("[^,]+") do
        local name, params = item:match("^%s*([^;%s]+)%s*(.*)$")
        if name then
            local v = params:match("[qQ]%s*=%s*([%d.]+)")
            q[name:lower()] = v and (tonumber(v) or 0) or 1
        end
    end
    local star = q["*"] or 0
    return q.br or star, q.gzip or q["x-gzip"] or star
end

local SIBLING = { br = ".br", gzip = ".gz" }

-- The precompressed sibling of path the request accepts (br preferred, by q-value), as
-- path, entry, coding; nil when there is none.
local function sibling(req, path)
    local br, gz = codings(req.headers["accept-encoding"])
    if br <= 0 and gz <= 0 then return nil end
    local order = br >= gz and { "br", "gzip" } or { "gzip", "br" }
    for i = 1, 2 do
        local enc = order[i]
        if (enc == "br" and br > 0) or (enc == "gzip" and gz > 0) then
            local sp = path .. SIBLING[enc]
            local se = info(sp)
            if se.type == "file" then return sp, se, enc end
        end
    end
end

-- The answer for rel (a decoded path below dir): a file answer to send, a 301 for a
-- directory without its slash ("/x/" serves x/index.html), or a plain 404.
local function lookup(req, dir, rel, mount)
    local paths = mount.paths -- rel -> its path below dir (or false), remembered
    local path = paths[rel]
    if path == nil then
        path = safe_join(dir, rel) or false
        if mount.npaths >= M.MAX_ENTRIES then mount.paths, mount.npaths = {}, 0 end
        mount.paths[rel], mount.npaths = path, mount.npaths + 1
    end
    if not path then return plain(404, "Not Found") end
    local e = info(path)
    if e.type == "directory" then
        if req.path:sub(-1) ~= "/" then
            -- one leading slash: "//host/dir" would send the browser to another site
            local location = "/" .. req.path:gsub("^/+", "") .. "/"
            return { status = 301, headers = { location = location }, text = "Moved Permanently" }
        end
        path = path:gsub("/$", "") .. "/index.html"
        e = info(path)
    end
    if e.type ~= "file" then return plain(404, "Not Found") end
    if mount.precompressed and not path:find("%.br$") and not path:find("%.gz$") then
        local sp, se, enc = sibling(req, path)
        if sp then return prepare_file(req, sp, se, 200, nil, mount, enc, content_type(path), true) end
        return prepare_file(req, path, e, 200, nil, mount, nil, nil, true)
    end
    return prepare_file(req, path, e, 200, nil, mount)
end

-- The options of app:static, checked by app.lua: {precompressed, max_open_files}.
local function mount_of(opts)
    opts = opts or {}
    return { precompressed = opts.precompressed == true, sem = semaphore(opts.max_open_files or 1024),
        paths = {}, npaths = 0 }
end

-- A GET handler serving dir, routed at prefix/{path*}.
function M.handler(dir, opts)
    dir = dir:gsub("/+$", "")
    local mount = mount_of(opts)
    return function(req)
        return lookup(req, dir, req.params and req.params.path or "", mount)
    end
end

-- For app:static(prefix, dir, { fallthrough = true }): a function the app calls before its
-- routes; it gives the answer for a GET or HEAD of a file (or directory) under prefix, or
-- nil when there is none, so that the routes are tried next.
function M.fallthrough(prefix, dir, opts)
    dir = dir:gsub("/+$", "")
    local n = #prefix
    local mount = mount_of(opts)
    return function(req)
        local m, path = req.method, req.path
        if m ~= "GET" and m ~= "HEAD" then return nil end
        if n > 0 and path ~= prefix and path:sub(1, n + 1) ~= prefix .. "/" then return nil end
        local res = lookup(req, dir, url.decode(path:sub(n + 2)), mount)
        if res.status == 404 then return nil end
        return res
    end
end

return M
