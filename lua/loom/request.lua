-- loom.request: the server's request object. C makes the table with this module's
-- metatable and app.lua stores method, path and the box (_box), which points at the
-- connection; everything else is computed here on first use and kept in the table:
-- headers, query, params, remote, remote_port, target, version, cookies, tls.
local core = require "loom.core"
local json = require "loom.json"
local url = require "loom.url"

local req_headers, req_target, req_peer = core.req_headers, core.req_target, core.req_peer
local req_version, req_closing = core.req_version, core.req_closing
local req_body, req_chunk, req_stream, req_write = core.req_body, core.req_chunk, core.req_stream, core.req_write
local rawset, rawget, setmetatable, type, pairs, next = rawset, rawget, setmetatable, type, pairs, next

local Request = {}

-- Header tables: keys are lowercase; any-case lookups find them too.
local headers_mt = {
    __index = function(t, k)
        if type(k) == "string" then
            local l = k:lower()
            if l ~= k then return rawget(t, l) end
        end
    end,
}
Request.headers_mt = headers_mt

local lazy = {}

local compress -- loom.compress, when the app compresses (app.lua sets req._compress)

function lazy.headers(req)
    local h = req_headers(req._box)
    if rawget(req, "_compress") then
        compress = compress or require "loom.compress"
        compress.widen_conditionals(req, h)
    end
    return setmetatable(h, headers_mt)
end
function lazy.target(req) return req_target(req._box) end
function lazy.version(req) return req_version(req._box) end
function lazy.params() return {} end
-- {name = value} from the Cookie header (loom.server_cookies.parse)
function lazy.cookies(req) return require("loom.server_cookies").parse(req.headers.cookie) end
-- true when the request came over TLS: app.lua sets it for a TLS listener's requests
function lazy.tls() return false end
-- headers for the answer, whatever it turns out to be (a middleware sets them before
-- calling next): added to every answer, req:stream's included; the answer's own win
function lazy.response_headers() return {} end

-- The query string of the target ("" when it has none); a fragment never reaches a server
-- (the parser refuses "#"), but is cut all the same.
local find, sub = string.find, string.sub
local function query_string(req)
    local t = req.target
    local i = find(t, "?", 1, true)
    if not i then return "" end
    local q = sub(t, i + 1)
    local h = find(q, "#", 1, true)
    return h and sub(q, 1, h - 1) or q
end

-- req.query is url.parse_query's first table only, made in C (core.req_query, one call):
-- query_all (every value of each key) is made when asked for.
local req_query = core.req_query
-- (req.target when it has one, else the box's, which it keeps: req.query_all reads it);
-- the C function itself, no Lua call around it
lazy.query = req_query

function lazy.query_all(req)
    local _, all = url.parse_query(query_string(req))
    return all
end

function lazy.remote(req)
    local ip, port = req_peer(req._box)
    rawset(req, "remote_port", port)
    return ip
end

function lazy.remote_port(req)
    local ip, port = req_peer(req._box)
    rawset(req, "remote", ip)
    return port
end

-- req:text() -> the whole body | nil, err ("limit: ..." over max_body, "closed: ...")
function Request:text()
    return req_body(self._box)
end

-- req:json() -> the decoded body | nil, err ("http: invalid JSON body: ..." when malformed)
function Request:json()
    local s, err = req_body(self._box)
    if not s then return nil, err end
    local ok, v = pcall(json.decode, s)
    if not ok then return nil, "http: invalid JSON body: " .. tostring(v):gsub("^.-: ", "") end
    return v
end

local multipart -- loom.multipart, loaded on first use

-- req:form() -> fields, all | nil, err: {name = value} from an urlencoded or a
-- multipart/form-data body (a file part is {filename = s, type = s, body = s}; a repeated
-- name keeps its last value), and {name = {every value}}. A body without Content-Type is
-- read as urlencoded; another type is nil, "http: unsupported form content type ...".
function Request:form()
    local ctype = self.headers["content-type"]
    local media = ctype and ctype:match("^[ \t]*([^;]*)"):gsub("[ \t]+$", ""):lower()
    if media == "multipart/form-data" then
        multipart = multipart or require "loom.multipart"
        return multipart.form(self, headers_mt, rawget(self, "_form_limits"))
    end
    if media ~= nil and media ~= "application/x-www-form-urlencoded" then
        local msg = "http: unsupported form content type '" .. media .. "'"
        rawset(self, "_body_error", msg)
        core.req_fault(self._box, 415)
        return nil, msg
    end
    local s, err = req_body(self._box)
    if not s then return nil, err end
    return url.parse_query(s)
end

-- for part in req:parts() do ... end: the parts of a multipart/form-data body as they
-- arrive (part.name, part.filename, part.type, part.headers; part:text(), part:chunks(),
-- part:save(path)); a part the loop leaves unread is skipped. Raises as req:chunks() does.
function Request:parts()
    multipart = multipart or require "loom.multipart"
    return multipart.parts(self, headers_mt, rawget(self, "_form_limits"))
end

-- for chunk in req:chunks() do ... end: the body piece by piece as it arrives; raises on
-- a failure (over max_body, the client gone), so a loop never mistakes it for the end.
function Request:chunks()
    local box = self._box
    return function()
        local chunk, err = req_chunk(box)
        if chunk == nil and err then error(err, 0) end -- the kind stays the first word
        return chunk
    end
end

local Out = {}
Out.__index = Out

-- out:write(s) -> true once sent on | nil, err when the client has gone. Waits while the
-- client is slow.
function Out:write(s)
    local enc = self.enc
    if enc then -- a coded stream (loom.app{ compress }): each write is flushed
        if type(s) ~= "string" then
            error("bad argument #1 to 'write' (string expected, got " .. type(s) .. ")", 2)
        end
        if s == "" then return true end
        s = enc:write(s)
    end
    return req_write(self.box, s)
end

-- req:shutting_down() -> true once the server has begun to close (srv:close, or app:run
-- on SIGTERM/SIGINT), or the request is over: a handler that streams for ever polls it
-- to end its stream in good order before the grace period cuts it.
function Request:shutting_down()
    return req_closing(self._box)
end

-- The headers of an answer with req.response_headers added (the answer's own win).
local function with_extra(req, headers)
    local extra = rawget(req, "response_headers")
    if not extra or next(extra) == nil then return headers end
    local h = {}
    for k, v in pairs(extra) do h[type(k) == "string" and k:lower() or k] = v end
    if headers then
        for k in pairs(headers) do
            if type(k) == "string" then h[k:lower()] = nil end
        end
        for k, v in pairs(headers) do h[k] = v end
    end
    return h
end

-- local out = req:stream{ status = 200, headers = {...} }: starts a streaming response
-- (chunked unless headers give content-length); it ends when the handler returns. The
-- head goes out now, with req.response_headers added; what was sent is kept for the
-- middleware, whose next() gives {status, headers, streamed = true}. In an app with
-- compress, a codable stream is gzip or br coded, each write flushed (compress = false in
-- opts sends it as it is).
function Request:stream(opts)
    opts = opts or {}
    if type(opts) ~= "table" then
        error("bad argument #1 to 'stream' (table expected, got " .. type(opts) .. ")", 2)
    end
    local status, headers = opts.status or 200, with_extra(self, opts.headers)
    local cfg, enc = rawget(self, "_compress"), nil
    if cfg then
        compress = compress or require "loom.compress"
        headers, enc = compress.stream(cfg, self, status, headers, opts)
    end
    local ok, err = req_stream(self._box, status, headers)
    if not ok then
        if enc then
            rawset(self, "_encoder", nil)
            enc:close()
        end
        return nil, err
    end
    rawset(self, "_streamed", { status = status, headers = headers or {} })
    return setmetatable({ box = self._box, enc = enc }, Out)
end

-- A method, or a lazy field computed on first use and kept in the table (raw: the metatable
-- has no __newindex). In C (core.req_index): no Lua call around req.query's own.
local mt = {
    __name = "loom.request",
    __index = core.req_index(Request, lazy),
}

return { mt = mt, methods = Request, headers_mt = headers_mt, with_extra = with_extra }
