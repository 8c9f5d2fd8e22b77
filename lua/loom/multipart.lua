-- loom.multipart: multipart/form-data in both directions.
-- Server: req:parts() (parts streamed from the body as the engine hands its pieces over, to
-- the C parser of src/http1/multipart.c through src/http1/multipart_lua.c) and the multipart half of
-- req:form(). Client: the body of fetch{ multipart = ... }, files streamed from disk, with
-- its Content-Length computed up front.
local core = require "loom.core"
local args = require "loom.args"

local mp_boundary, mp_new, req_chunk = core.mp_boundary, core.mp_new, core.req_chunk
local type, pairs, error, setmetatable, rawset, tostring = type, pairs, error, setmetatable, rawset, tostring
local concat, format = table.concat, string.format

local M = {}

local MAX_PARTS, MAX_PART_HEADER = 1000, 8192
M.MAX_PARTS, M.MAX_PART_HEADER = MAX_PARTS, MAX_PART_HEADER

-- The body is at fault: the read error is raised as a string (as req:chunks() raises its
-- own), the request remembers it, and the engine answers its status (400, 413, 415, 431)
-- rather than 500 when the handler lets it through.
local function fail(req, status, msg)
    rawset(req, "_body_error", msg)
    core.req_fault(req._box, status)
    error(msg, 0)
end
M.fail = fail

-- Part ------------------------------------------------------------------------------

local Part = {}
Part.__index = Part
Part.__name = "loom.multipart.part"

-- for piece in part:chunks() do ... end: the part's body as it arrives (never an empty
-- piece); raises as req:parts() does. Once per part.
function Part:chunks()
    if self._taken then error("chunks: the part's body was already read or skipped", 2) end
    self._taken = true
    local st = self._st
    return function()
        if not self._open then return nil end
        local ev, data = st.event()
        if ev == 2 then return data end
        self._open = false -- 3: the part ended
        return nil
    end
end

-- part:text() -> the whole body of the part
function Part:text()
    if self._taken then error("text: the part's body was already read or skipped", 2) end
    local buf, n = {}, 0
    for s in self:chunks() do
        n = n + 1
        buf[n] = s
    end
    if n == 1 then return buf[1] end
    return concat(buf)
end

-- part:save(path) -> bytes written | nil, err (the file could not be opened or written; the
-- rest of the part is then skipped). path is the caller's, never part.filename. The file is
-- opened, written and closed on libuv's thread pool, never on the loop (core.mp_save,
-- src/http1/multipart_lua.c): the body's pieces are gathered in 256 KiB batches, each written
-- in one job, so memory stays at about one batch whatever the part's size.
local mp_save = core.mp_save

function Part:save(path)
    args.check(path, "string", "save", 1)
    if self._taken then error("save: the part's body was already read or skipped", 2) end
    local sv, err = mp_save(path)
    if not sv then return nil, err end
    local _ <close> = sv -- the file closed at once when a read raises
    local n = 0
    for s in self:chunks() do
        local ok, werr = sv:write(s)
        if not ok then return nil, werr end
        n = n + #s
    end
    local ok, cerr = sv:close()
    if not ok then return nil, cerr end
    return n
end

-- Skips what is left of the part's body.
local function drain(part)
    local st = part._st
    part._taken = true
    while part._open do
        if st.event() ~= 2 then part._open = false end
    end
end

-- req:parts() ---------------------------------------------------------------------------

-- The iterator over req's parts. limits: {max_parts, max_part_header} or nil.
function M.parts(req, headers_mt, limits)
    if rawget(req, "_parts_read") then
        error("parts: the body is already being read by req:parts() or req:form()", 3)
    end
    rawset(req, "_parts_read", true)
    local ctype = req.headers["content-type"]
    local boundary, berr, bstatus = mp_boundary(ctype)
    if not boundary then
        if ctype == nil then berr = "http: multipart body expected, the request has no Content-Type" end
        fail(req, bstatus, berr)
    end
    local max_parts = limits and limits.max_parts or MAX_PARTS
    local max_head = limits and limits.max_part_header or MAX_PART_HEADER
    local p = mp_new(boundary, max_parts, max_head)
    local box = req._box
    local piece, pos = nil, 0
    local st = {}
    -- The next event: 1, headers, name, filename, type | 2, bytes | 3 | 4
    function st.event()
        while true do
            if piece == nil then
                local chunk, err = req_chunk(box)
                if chunk == nil then
                    if err then error(err, 0) end -- over max_body, the client gone: the engine's status
                    local ok, ferr, fstatus = p:finish()
                    if not ok then fail(req, fstatus, ferr) end
                    return 4
                end
                piece, pos = chunk, 0
            end
            local ev, a, b, c, d, e = p:next(piece, pos)
            if ev == nil then
                piece = nil
            elseif ev == false then
                fail(req, b, a)
            else
                pos = a
                return ev, b, c, d, e
            end
        end
    end
    local cur, done = nil, false
    return function()
        if done then return nil end
        if cur and cur._open then drain(cur) end
        cur = nil
        local ev, headers, name, filename, ptype = st.event()
        if ev == 1 then
            cur = setmetatable({ name = name, filename = filename, type = ptype,
                headers = setmetatable(headers, headers_mt), _st = st, _open = true }, Part)
            return cur
        end
        done = true -- 4: the close delimiter (what follows it is the epilogue, dropped)
        p:close()
        return nil
    end
end

-- The multipart half of req:form(): fields, all | nil, err
function M.form(req, headers_mt, limits)
    if rawget(req, "_parts_read") then
        error("form: the body is already being read by req:parts() or req:form()", 3)
    end
    local fields, all = {}, {}
    local ok, err = pcall(function()
        for part in M.parts(req, headers_mt, limits) do
            local v = part:text()
            if part.filename then v = { filename = part.filename, type = part.type, body = v } end
            fields[part.name] = v
            local list = all[part.name]
            if list then list[#list + 1] = v else all[part.name] = { v } end
        end
    end)
    if not ok then
        if type(err) ~= "string" or err == "cancelled" or not err:find("^%l+: ") then
            error(err, 0) -- not a read error: a bug, or a cancel
        end
        return nil, err
    end
    return fields, all
end

-- The client's encoder ---------------------------------------------------------------

-- HTML's multipart/form-data encoding of names and filenames: " as %22, CR as %0D, LF as %0A.
local ESC = { ['"'] = "%22", ["\r"] = "%0D", ["\n"] = "%0A" }
local function quoted(s) return '"' .. s:gsub('["\r\n]', ESC) .. '"' end

local function basename(path) return path:match("([^/]*)$") end

local CHUNK = 64 * 1024

-- A part's value: a string (or number), or {path = s, type = s, filename = s} or
-- {body = s, type = s, filename = s}; a list of such values repeats the name.
local function add_part(parts, name, v, fname, n)
    local opt = "option 'multipart'"
    local t = type(v)
    if t == "number" then v, t = tostring(v), "string" end
    if t == "string" then
        parts[#parts + 1] = { name = name, body = v }
        return
    end
    if t ~= "table" then
        args.fail(fname, n, format("%s: value of '%s' must be a string or a table, got %s", opt, name, t), 3)
    end
    if v.path == nil and v.body == nil then
        if #v == 0 then
            args.fail(fname, n, format("%s: '%s' needs a path or a body", opt, name), 3)
        end
        for _, x in ipairs(v) do add_part(parts, name, x, fname, n) end
        return
    end
    for k in pairs(v) do
        if k ~= "path" and k ~= "body" and k ~= "type" and k ~= "filename" then
            args.fail(fname, n, format("%s: unknown field '%s' in '%s'", opt, tostring(k), name), 3)
        end
    end
    if v.path ~= nil and v.body ~= nil then
        args.fail(fname, n, format("%s: '%s' has both a path and a body", opt, name), 3)
    end
    for _, k in ipairs({ "path", "body", "type", "filename" }) do
        if v[k] ~= nil and type(v[k]) ~= "string" then
            args.fail(fname, n, format("%s: field '%s' of '%s' must be a string, got %s", opt, k, name,
                type(v[k])), 3)
        end
    end
    if v.type and v.type:find("[%c]") then
        args.fail(fname, n, format("%s: type of '%s' holds a control character", opt, name), 3)
    end
    local part = { name = name, type = v.type, filename = v.filename, body = v.body, path = v.path }
    if v.path then
        part.filename = part.filename or basename(v.path)
        part.type = part.type or "application/octet-stream"
    end
    parts[#parts + 1] = part
end

-- M.encode(spec, fname, n) -> content_type, length, body function | nil, err (a file that
-- cannot be opened: "fs: ..."). Misuse raises naming the option.
function M.encode(spec, fname, n)
    local names = {}
    for k in pairs(spec) do
        if type(k) ~= "string" then
            args.fail(fname, n, "option 'multipart': names must be strings, got " .. type(k), 2)
        end
        names[#names + 1] = k
    end
    table.sort(names)
    local parts = {}
    for _, name in ipairs(names) do add_part(parts, name, spec[name], fname, n) end
    -- sizes, and a boundary found in no string part
    local boundary
    repeat
        boundary = "loom-" .. core.crypto.hex(core.crypto.random(16))
        local clash = false
        for _, part in ipairs(parts) do
            if part.body and part.body:find(boundary, 1, true) then clash = true end
        end
    until not clash
    local segs, length = {}, 0
    local function add(s)
        segs[#segs + 1] = s
        length = length + #s
    end
    for _, part in ipairs(parts) do
        local head = { "--", boundary, "\r\nContent-Disposition: form-data; name=", quoted(part.name) }
        if part.filename then head[#head + 1] = "; filename=" .. quoted(part.filename) end
        if part.type then head[#head + 1] = "\r\nContent-Type: " .. part.type end
        head[#head + 1] = "\r\n\r\n"
        add(concat(head))
        if part.path then
            local f, err = io.open(part.path, "rb")
            if not f then return nil, "fs: " .. tostring(err) end
            local size = f:seek("end")
            f:close()
            if not size then return nil, "fs: " .. part.path .. ": cannot find its size" end
            segs[#segs + 1] = { path = part.path, size = size }
            length = length + size
        else
            add(part.body)
        end
        add("\r\n")
    end
    add("--" .. boundary .. "--\r\n")
    -- The body function: strings as they are, files in pieces of 64 KiB; a file that has
    -- shrunk meanwhile ends short (the client then fails the request: the length is wrong),
    -- one that has grown is cut at the size announced.
    local i, f, left = 0, nil, 0
    local function body()
        while true do
            if f then
                if left > 0 then
                    local s = f:read(left < CHUNK and left or CHUNK)
                    if s and #s > 0 then
                        left = left - #s
                        return s
                    end
                end
                f:close()
                f = nil
            end
            i = i + 1
            local seg = segs[i]
            if seg == nil then return nil end
            if type(seg) == "string" then
                if #seg > 0 then return seg end
            else
                local err
                f, err = io.open(seg.path, "rb")
                if not f then
                    i = #segs -- nothing more: the request fails short of its length
                    return nil
                end
                left = seg.size
            end
        end
    end
    return "multipart/form-data; boundary=" .. boundary, length, body
end

return M
