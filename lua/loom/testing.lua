-- loom.testing: helpers for testing loom apps from specs. testing.client(app) starts the
-- app on 127.0.0.1, port 0, and hands back a small HTTP/1.1 client bound to it. The
-- client is its own minimal implementation over loom.connect (Content-Length, chunked and
-- close-delimited bodies, keep-alive), strict about what the server sends: a malformed
-- response is an error, not something to guess around. Everything here waits, so it runs
-- inside a task (loom.run, or spec/support/run.lua in the specs).
--
--   local client, srv = testing.client(app)
--   local res = assert(client:get("/users/7", { headers = { accept = "application/json" } }))
--   assert.equal(200, res.status)
--   assert.equal("7", res:json().id)
--   client:close()
local net = require "loom.net"
local json = require "loom.json"
local url = require "loom.url"
local args = require "loom.args"
local tasks = require "loom.tasks"

local concat, format, type, tostring, pairs, ipairs, setmetatable =
    table.concat, string.format, type, tostring, pairs, ipairs, setmetatable

local M = {}

local DEFAULT_TIMEOUT = 10
local MAX_LINE = 64 * 1024

-- Header tables: lowercase keys; any-case lookups find them too (as on the server).
local headers_mt = require("loom.request").headers_mt

-- Reading --------------------------------------------------------------------------------

-- A buffered reader over a stream: exact CRLF lines, exact byte counts, or all to the end.
local Reader = {}
Reader.__index = Reader

local function reader(st)
    return setmetatable({ st = st, buf = "" }, Reader)
end

-- Reads more into the buffer; nil, err at the end of the stream.
function Reader:fill()
    local s, err = self.st:read()
    if not s then return nil, err end
    self.buf = self.buf .. s
    return true
end

-- One line ended by CRLF, without it. A bare LF is an error: a server must send CRLF.
function Reader:line()
    while true do
        local nl = self.buf:find("\n", 1, true)
        if nl then
            if nl == 1 or self.buf:byte(nl - 1) ~= 13 then
                return nil, "http: bare LF in the response head"
            end
            local line = self.buf:sub(1, nl - 2)
            self.buf = self.buf:sub(nl + 1)
            if line:find("\r", 1, true) then return nil, "http: bare CR in the response head" end
            return line
        end
        if #self.buf > MAX_LINE then return nil, "limit: response line too long" end
        local ok, err = self:fill()
        if not ok then
            return nil, #self.buf > 0 and "http: response cut short" or err
        end
    end
end

-- Exactly n bytes. The pieces are joined once, not one by one (a large body read that way
-- copied the whole buffer on every read).
function Reader:bytes(n)
    if #self.buf < n then
        local parts, have = { self.buf }, #self.buf
        while have < n do
            local piece = self.st:read()
            if not piece then
                self.buf = concat(parts)
                return nil, "http: response body cut short"
            end
            parts[#parts + 1] = piece
            have = have + #piece
        end
        self.buf = concat(parts)
    end
    local s = self.buf:sub(1, n)
    self.buf = self.buf:sub(n + 1)
    return s
end

-- Everything until the peer closes.
function Reader:rest()
    local parts = { self.buf }
    self.buf = ""
    while true do
        local s = self.st:read()
        if not s then break end
        parts[#parts + 1] = s
    end
    return concat(parts)
end

-- A header value without the spaces and tabs around it (RFC 9110 5.5's OWS), in time
-- linear in #v. The pattern way, ":[ \t]*(.-)[ \t]*$", retries "[ \t]*$" from each byte of
-- a run of blanks inside the value: quadratic in its length (a 60 KB run took seconds).
local function trim_ows(v)
    local first = v:find("[^ \t]")
    if not first then return "" end
    return v:sub(first, (v:find("[^ \t][ \t]*$", first)))
end

local function read_head(r)
    local line, err = r:line()
    if not line then return nil, err end
    local minor, status, reason = line:match("^HTTP/1%.([01]) (%d%d%d) ?(.*)$")
    if not minor then return nil, "http: bad status line: " .. line end
    local res = {
        status = tonumber(status), reason = reason, version = "1." .. minor,
        headers = setmetatable({}, headers_mt), raw_headers = {},
    }
    while true do
        line, err = r:line()
        if not line then return nil, err end
        if line == "" then break end
        local name, value = line:match("^([!#$%%&'*+%-.^_`|~%w]+):(.*)$")
        if not name then return nil, "http: bad header line: " .. line end
        value = trim_ows(value)
        res.raw_headers[#res.raw_headers + 1] = { name, value }
        local l = name:lower()
        local old = rawget(res.headers, l)
        res.headers[l] = old and (old .. ", " .. value) or value
    end
    return res
end

local function read_chunked(r)
    local parts = {}
    while true do
        local line, err = r:line()
        if not line then
            return nil, err:find("^closed") and "http: response body cut short (" .. err .. ")" or err
        end
        local hex = line:match("^(%x+)[ \t]*;?.*$")
        if not hex or #hex > 15 then return nil, "http: bad chunk size line: " .. line end
        local n = tonumber(hex, 16)
        if n == 0 then break end
        local data
        data, err = r:bytes(n + 2)
        if not data then return nil, err end
        if data:sub(-2) ~= "\r\n" then return nil, "http: chunk not followed by CRLF" end
        parts[#parts + 1] = data:sub(1, -3)
    end
    while true do -- trailers, then the empty line
        local line, err = r:line()
        if not line then
            return nil, err:find("^closed") and "http: response body cut short (" .. err .. ")" or err
        end
        if line == "" then break end
    end
    return concat(parts)
end

local function has_token(v, token)
    if not v then return false end
    for t in v:gmatch("[^,%s]+") do
        if t:lower() == token then return true end
    end
    return false
end

-- Reads one response (after any 1xx interim ones, which go to res.interim). `method` is
-- the request's: HEAD answers have no body. Returns res, reusable (the connection may
-- carry another request) | nil, err.
local function read_response(r, method)
    local interim = {}
    local res, err
    while true do
        res, err = read_head(r)
        if not res then return nil, err end
        if res.status >= 200 or res.status == 101 then break end
        interim[#interim + 1] = res
    end
    res.interim = interim
    local h = res.headers
    local reusable = not has_token(h.connection, "close")
    if res.version == "1.0" and not has_token(h.connection, "keep-alive") then reusable = false end
    local te, cl = h["transfer-encoding"], h["content-length"]
    if method == "HEAD" or res.status < 200 or res.status == 204 or res.status == 304 then
        res.body = ""
    elseif te then
        if te:lower() ~= "chunked" then return nil, "http: unsupported transfer-encoding " .. te end
        if cl then return nil, "http: both content-length and transfer-encoding" end
        res.body, err = read_chunked(r)
        if not res.body then return nil, err end
    elseif cl then
        if not cl:match("^%d+$") then return nil, "http: bad content-length " .. cl end
        res.body, err = r:bytes(tonumber(cl))
        if not res.body then return nil, err end
    else
        res.body = r:rest()
        reusable = false
    end
    return res, reusable
end

-- testing.reader(stream) -> a reader for raw protocol tests over loom.connect:
--   r:response([method]) -> res, reusable | nil, err (one response; method "HEAD": no body)
--   r:line() -> one CRLF-ended line | nil, err;  r:bytes(n);  r:rest() (all until the end)
function Reader:response(method)
    return read_response(self, method)
end
M.reader = reader

-- Responses ------------------------------------------------------------------------------

local Response = {}
Response.__index = Response

-- res:json() -> the decoded body; raises when it is not JSON.
function Response:json()
    return json.decode(self.body)
end

-- Requests -------------------------------------------------------------------------------

local Client = {}
Client.__index = Client
Client.__name = "loom.testing.client"

local function build_request(self, method, path, opts)
    local headers = {}
    local names = {}
    local function set(name, value)
        local l = name:lower()
        if names[l] == nil then headers[#headers + 1] = { name, value }; names[l] = #headers end
    end
    for k, v in pairs(opts.headers or {}) do
        args.check(k, "string", "request", 3)
        if type(v) == "table" then
            for _, x in ipairs(v) do headers[#headers + 1] = { k, tostring(x) } end
            names[k:lower()] = true
        else
            set(k, tostring(v))
        end
    end
    local body = opts.body
    if opts.json ~= nil then
        body = json.encode(opts.json)
        set("Content-Type", "application/json")
    elseif opts.form ~= nil then
        body = url.encode_query(opts.form)
        set("Content-Type", "application/x-www-form-urlencoded")
    elseif type(body) == "string" then
        set("Content-Type", "text/plain; charset=utf-8")
    end
    if opts.query then
        local q = url.encode_query(opts.query)
        if q ~= "" then path = path .. (path:find("?", 1, true) and "&" or "?") .. q end
    end
    set("Host", "127.0.0.1:" .. self.port)
    local out = { format("%s %s HTTP/1.1\r\n", method, path) }
    local chunks
    if type(body) == "table" then -- a list of strings: sent chunked, one chunk each
        chunks = body
        set("Transfer-Encoding", "chunked")
    elseif body ~= nil then
        set("Content-Length", tostring(#body))
    end
    for _, h in ipairs(headers) do out[#out + 1] = h[1] .. ": " .. h[2] .. "\r\n" end
    out[#out + 1] = "\r\n"
    if chunks then
        for _, c in ipairs(chunks) do
            if #c > 0 then out[#out + 1] = format("%x\r\n%s\r\n", #c, c) end
        end
        out[#out + 1] = "0\r\n\r\n"
    elseif body then
        out[#out + 1] = body
    end
    return concat(out)
end

local function check_opts(opts)
    opts = args.opts(opts, "request", 3)
    args.opt(opts, "headers", "table", nil, "request", 3)
    args.opt(opts, "body", { "string", "table" }, nil, "request", 3)
    args.opt(opts, "form", "table", nil, "request", 3)
    args.opt(opts, "query", "table", nil, "request", 3)
    args.timeout(opts, "timeout", nil, "request", 3)
    return opts
end

-- A kept-alive connection, or a new one. `fresh` says whether it carried nothing yet.
local function take_conn(self)
    local c = table.remove(self.idle)
    if c then return c, false end
    local st, err = net.connect("127.0.0.1", self.port)
    if not st then return nil, err end
    return { st = st, r = reader(st) }, true
end

local function exchange(self, method, wire)
    local c, fresh = take_conn(self)
    if not c then return nil, fresh end
    local ok, err = c.st:write(wire)
    local res, reusable
    if ok then
        res, reusable = read_response(c.r, method)
        if not res then err = reusable end
    end
    if not res then
        c.st:close()
        -- a kept-alive connection the server had just closed: once more on a new one
        if not fresh and c.r.buf == "" and err and err:find("^closed") then
            return exchange(self, method, wire)
        end
        return nil, err
    end
    if reusable and c.r.buf == "" and not self.closed then
        self.idle[#self.idle + 1] = c
    else
        c.st:close()
    end
    return setmetatable(res, Response)
end

-- client:request(method, path, opts) -> res | nil, err
-- opts: headers {name = value | {values}}, body (string; or a list of strings, sent
-- chunked), json (value), form (table), query (table), timeout (seconds; the client's).
-- res: status, reason, version, headers (lowercase keys), raw_headers, body, interim (1xx
-- answers), res:json().
function Client:request(method, path, opts)
    args.check(method, "string", "request", 1)
    args.check(path, "string", "request", 2)
    opts = check_opts(opts)
    if self.closed then return nil, "closed: the test client is closed" end
    method = method:upper()
    local wire = build_request(self, method, path, opts)
    local limit = self.timeout
    if opts.timeout ~= nil then limit = args.timeout(opts, "timeout", nil, "request", 3) end
    if not limit then return exchange(self, method, wire) end
    local res, err = tasks.timeout(limit, exchange, self, method, wire)
    if res == nil and err == "timeout" then
        return nil, format("timeout: %s %s took over %gs", method, path, limit)
    end
    return res, err
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head", "options" }) do
    local method = m:upper()
    Client[m] = function(self, path, opts)
        return self:request(method, path, opts)
    end
end

-- client:close([grace]): closes the kept-alive connections and the server (srv:close with
-- `grace` seconds for requests in flight, default 0).
function Client:close(grace)
    if self.closed then return end
    self.closed = true
    for _, c in ipairs(self.idle) do c.st:close() end
    self.idle = {}
    if self.srv then self.srv:close(grace or 0) end
end

Client.__close = function(self) self:close() end -- not close(self, err): err is no grace
Client.__gc = function(self) for _, c in ipairs(self.idle) do c.st:close() end end

-- testing.client(app [, opts]) -> client, srv
-- Starts app on 127.0.0.1, port 0 (app:listen; opts are passed on, host and port aside;
-- access_log is off unless asked for), or binds to a running server (`app` may be a port
-- number). opts.timeout bounds each request (10 seconds).
function M.client(app, opts)
    opts = args.opts(opts, "client", 2)
    local timeout = args.timeout(opts, "timeout", DEFAULT_TIMEOUT, "client", 2)
    local port, srv
    if math.type(app) == "integer" then
        port = app
    else
        if type(app) ~= "table" or type(app.listen) ~= "function" then
            args.fail("client", 1, "loom.app or port expected, got " .. type(app))
        end
        local o = { access_log = false }
        for k, v in pairs(opts) do if k ~= "timeout" then o[k] = v end end
        o.host, o.port = "127.0.0.1", 0
        local err
        srv, err = app:listen(o)
        if not srv then error("client: " .. tostring(err), 2) end
        port = srv.port
    end
    local client = setmetatable({ port = port, srv = srv, idle = {}, timeout = timeout }, Client)
    return client, srv
end

M.Client = Client
return M
