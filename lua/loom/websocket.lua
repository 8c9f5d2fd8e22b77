-- loom.websocket: RFC 6455 over a loom stream, for both ends: messages from fragments,
-- pings answered, the close handshake with codes and reasons, UTF-8 checked on text,
-- max_message enforced (1009). Frames are read and written by the C codec
-- (src/websocket.c, the stream's frame read mode); this file is the protocol's state.
local core = require "loom.core"
local args = require "loom.args"
local url = require "loom.url"
local net = require "loom.net"

local ws_read_frame, ws_frame = core.ws_read_frame, core.ws_frame
local concat, format, char, byte = table.concat, string.format, string.char, string.byte
local utf8len = utf8.len

local M = {}
local WS = {}
WS.__index = WS
WS.__name = "loom.websocket"

local OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
local DEFAULT_MAX = 16 * 1024 * 1024

local function wrap(st, client, opts)
    return setmetatable({
        st = st,
        client = client,
        max_message = opts.max_message or DEFAULT_MAX,
        close_timeout = opts.close_timeout or 5,
        sent_close = false,
        closed = nil, -- "closed: CODE REASON" once over
    }, WS)
end
M.wrap = wrap

local function send_frame(self, op, payload, fin)
    return self.st:write(ws_frame(op, payload, fin, self.client))
end

-- Ends the connection after a close frame went out (or could not).
local function finish(self, code, reason)
    if not self.closed then
        self.closed = format("closed: %d %s", code, reason or "")
        self.closed = self.closed:gsub(" $", "")
    end
    self.st:close()
    return nil, self.closed
end

-- Sends a close frame (once), then drops the connection: for protocol errors, where
-- waiting for the peer's answer would only prolong talking to a broken peer.
local function fail(self, code, reason)
    if not self.sent_close then
        self.sent_close = true
        send_frame(self, OP_CLOSE, char(code >> 8, code & 255) .. reason, true)
    end
    return finish(self, code, reason)
end

local VALID_CLOSE = { [1000] = true, [1001] = true, [1002] = true, [1003] = true, [1007] = true,
    [1008] = true, [1009] = true, [1010] = true, [1011] = true, [1012] = true, [1013] = true, [1014] = true }

local function on_close_frame(self, payload)
    local code, reason = 1005, ""
    if #payload == 1 then return fail(self, 1002, "bad close frame") end
    if #payload >= 2 then
        code = byte(payload, 1) * 256 + byte(payload, 2)
        reason = payload:sub(3)
        if not (VALID_CLOSE[code] or (code >= 3000 and code <= 4999)) then
            return fail(self, 1002, "bad close code")
        end
        if not utf8len(reason) then return fail(self, 1007, "close reason is not UTF-8") end
    end
    if not self.sent_close then -- answer with the same code
        self.sent_close = true
        send_frame(self, OP_CLOSE, payload:sub(1, 2), true)
    end
    return finish(self, code, reason)
end

-- ws:receive() -> message, "text" | "binary"; or nil, "closed: CODE REASON"
function WS:receive()
    if self.closed then return nil, self.closed end
    local parts, kind, size = nil, nil, 0
    while true do
        local fin, rsv, op, masked, payload = ws_read_frame(self.st, self.max_message - size + 131)
        if fin == nil then
            if rsv and rsv:find("^limit") then return fail(self, 1009, "message too big") end
            return finish(self, 1006, rsv and rsv:gsub("^closed: ", "") or "connection lost")
        end
        if rsv ~= 0 then return fail(self, 1002, "reserved bits set") end
        if masked == self.client then
            return fail(self, 1002, self.client and "masked frame from server" or "unmasked frame from client")
        end
        if op >= 8 then
            if not fin or #payload > 125 then return fail(self, 1002, "bad control frame") end
            if op == OP_CLOSE then return on_close_frame(self, payload) end
            if op == OP_PING then
                if not self.sent_close then send_frame(self, OP_PONG, payload, true) end
            elseif op ~= OP_PONG then
                return fail(self, 1002, "unknown opcode")
            end
        elseif op == OP_TEXT or op == OP_BINARY or op == OP_CONT then
            if (op == OP_CONT) ~= (parts ~= nil) then
                return fail(self, 1002, op == OP_CONT and "continuation without a message" or "message inside a message")
            end
            if op ~= OP_CONT then parts, kind = {}, op == OP_TEXT and "text" or "binary" end
            size = size + #payload
            if size > self.max_message then return fail(self, 1009, "message too big") end
            parts[#parts + 1] = payload
            if fin then
                local msg = #parts == 1 and parts[1] or concat(parts)
                if kind == "text" and not utf8len(msg) then return fail(self, 1007, "text is not UTF-8") end
                return msg, kind
            end
        else
            return fail(self, 1002, "unknown opcode")
        end
    end
end

-- ws:send(data [, "text" | "binary"]) -> true | nil, err (waits while the peer is slow)
function WS:send(data, kind)
    args.check(data, "string", "send", 1)
    if kind ~= nil and kind ~= "text" and kind ~= "binary" then
        args.fail("send", 2, "'text' or 'binary' expected, got " .. tostring(kind))
    end
    if self.closed or self.sent_close then return nil, self.closed or "closed: closing" end
    return send_frame(self, kind == "binary" and OP_BINARY or OP_TEXT, data, true)
end

-- ws:ping([data]) -> true | nil, err
function WS:ping(data)
    if self.closed or self.sent_close then return nil, self.closed or "closed: closing" end
    return send_frame(self, OP_PING, data or "", true)
end

-- ws:close([code = 1000, reason]): the close handshake, waiting up to close_timeout for
-- the peer's close frame. Harmless when already closed.
function WS:close(code, reason)
    if self.closed then return true end
    code, reason = code or 1000, reason or ""
    if not self.sent_close then
        self.sent_close = true
        send_frame(self, OP_CLOSE, char(code >> 8, code & 255) .. reason, true)
    end
    if core.current() then
        self.st:settimeout(self.close_timeout)
        while not self.closed do self:receive() end
    end
    return finish(self, code, reason) and true or true
end

-- for msg, kind in ws:each() do ... end: messages until the connection closes.
function WS:each()
    return function()
        return self:receive()
    end
end

WS.__close = function(self) if not self.closed then self:close() end end
WS.__gc = function(self) if not self.closed then self.st:close() end end

-- Server side: the handler run by app:ws for an upgrade request.
function M.server_handler(fn, opts)
    opts = opts or {}
    return function(req)
        local h = req.headers
        local key = h["sec-websocket-key"]
        local upgrade = (h.upgrade or ""):lower()
        local conn = (h.connection or ""):lower()
        if req.method ~= "GET" or upgrade ~= "websocket" or not conn:find("upgrade", 1, true) or not key then
            return { status = 426, headers = { upgrade = "websocket", ["content-type"] = "text/plain; charset=utf-8" },
                body = "Upgrade Required" }
        end
        if h["sec-websocket-version"] ~= "13" then
            return { status = 400, headers = { ["sec-websocket-version"] = "13" }, text = "unsupported version" }
        end
        local _ = req.query, req.remote, req.remote_port -- keep what the handler may read later
        local st, err = core.req_upgrade(req._box, {
            upgrade = "websocket", connection = "Upgrade",
            ["sec-websocket-accept"] = core.ws_accept(key),
        })
        if not st then return nil, err end
        local ws = wrap(st, false, opts)
        local ok, e = pcall(fn, ws, req)
        if not ws.closed then
            if ok then ws:close(1000) else fail(ws, 1011, "server error") end
        end
        if not ok then error(e, 0) end
    end
end

local function read_head(st)
    local status_line, err = st:read_line()
    if not status_line then return nil, err end
    local headers = {}
    while true do
        local line
        line, err = st:read_line()
        if not line then return nil, err end
        if line == "" then break end
        local k, v = line:match("^([^:]+):%s*(.-)%s*$")
        if k then headers[k:lower()] = v end
    end
    return status_line, headers
end

-- loom.websocket(url [, opts]) -> ws | nil, err
-- opts: headers, timeout (connect + handshake, 10), tls {...}, max_message (16 MiB)
function M.connect(u, opts)
    args.check(u, "string", "websocket", 1)
    opts = args.opts(opts, "websocket", 2)
    local timeout = args.timeout(opts, "timeout", 10, "websocket", 2)
    args.opt(opts, "headers", "table", nil, "websocket", 2)
    args.opt(opts, "max_message", "number", nil, "websocket", 2)
    local p, perr = url.split(u)
    if not p or (p.scheme ~= "ws" and p.scheme ~= "wss") then
        args.fail("websocket", 1, "ws:// or wss:// URL expected" .. (perr and (", " .. perr) or ""))
    end
    local st, err = net.connect(p.host, p.port, { timeout = timeout,
        tls = p.scheme == "wss" and (opts.tls or {}) or nil })
    if not st then return nil, err end
    if timeout then st:settimeout(timeout) end
    local key = core.ws_key()
    local host = p.host:find(":", 1, true) and ("[" .. p.host .. "]") or p.host
    if (p.scheme == "ws" and p.port ~= 80) or (p.scheme == "wss" and p.port ~= 443) then
        host = host .. ":" .. p.port
    end
    local lines = { format("GET %s%s HTTP/1.1", p.path, p.query and ("?" .. p.query) or ""),
        "Host: " .. host, "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " .. key, "Sec-WebSocket-Version: 13" }
    for k, v in pairs(opts.headers or {}) do lines[#lines + 1] = k .. ": " .. tostring(v) end
    local ok
    ok, err = st:write(concat(lines, "\r\n") .. "\r\n\r\n")
    if not ok then st:close(); return nil, err end
    local status, headers = read_head(st)
    if not status then st:close(); return nil, headers end
    local code = tonumber(status:match("^HTTP/1%.%d (%d%d%d)"))
    if code ~= 101 then
        st:close()
        return nil, format("http: the server answered %s instead of switching to websocket", code or status)
    end
    if headers["sec-websocket-accept"] ~= core.ws_accept(key) then
        st:close()
        return nil, "http: bad Sec-WebSocket-Accept from the server"
    end
    st:settimeout(nil)
    return wrap(st, true, opts)
end

return M
