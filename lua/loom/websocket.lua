-- loom.websocket: RFC 6455 over a loom stream, for both ends: messages from fragments,
-- pings answered, the close handshake with codes and reasons, UTF-8 checked on text,
-- max_message enforced (1009). Frames are read and written by the C codec
-- (src/ws/websocket.c, the stream's frame read mode); this file is the protocol's state.
--
-- One task may receive while others send: frames of concurrent senders go out whole, one
-- after the other (a lock), and a pong owed while another task is writing is sent by that
-- task right after its frame, so a receiver never waits behind a slow sender.
--
-- A peer that stops reading: sends wait (the stream's backpressure, which also holds back a
-- send that follows one that gave up), and every close frame we send - ws:close, a protocol
-- error, the answer to the peer's close - gets close_timeout to reach the kernel, after which
-- the connection is dropped and any send still waiting gets `closed`.
local core = require "loom.core"
local args = require "loom.args"
local url = require "loom.url"
local net = require "loom.net"
local sync = require "loom.sync"
local tasks = require "loom.tasks"

local ws_read_frame, ws_frame, ws_push = core.ws_read_frame, core.ws_frame, core.ws_push
local park, ticket, wake, now, spawn, sleep = core.park, core.ticket, core.wake, core.now, core.spawn, core.sleep
local within = tasks.timeout
local concat, format, char, byte = table.concat, string.format, string.char, string.byte
local utf8len, type, tostring, setmetatable = utf8.len, type, tostring, setmetatable
local min, max = math.min, math.max

local M = {}
local WS = {}
WS.__index = WS
WS.__name = "loom.websocket"

local OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
local DEFAULT_MAX = 16 * 1024 * 1024
-- A frame may exceed what is left of max_message by a control frame's size (125 bytes of
-- payload, 6 of header): reading it must not fail before we know what it is.
local CONTROL_SLACK = 131
-- What each fragment after a message's first costs besides its payload, counted against
-- max_message: the table slot and string that hold it (about 64 bytes in Lua 5.4). Without
-- it a flood of empty or 1-byte continuations grew a message's bookkeeping without bound
-- while its size stayed near 0; with it a message has at most max_message / 64 fragments
-- (262144 by default), and the memory it holds stays about max_message.
local FRAGMENT_COST = 64
-- The head of the server's answer to the client's upgrade, as the HTTP client's max_header.
local MAX_HEAD = 64 * 1024
-- permessage-deflate: messages shorter than this go uncompressed (RFC 7692 allows either
-- per message): deflate's block header and flush cost more than they save on a few bytes.
local COMPRESS_MIN = 64
-- Control frames (pongs, heartbeat pings) go out at once, queued right after whatever the
-- stream already holds. While that is more than CONTROL_QUEUE bytes, at most
-- CONTROL_BURST of them are queued so; later pongs wait for a writer (a peer that pings
-- without reading cannot grow our memory with pongs).
local CONTROL_QUEUE, CONTROL_BURST = 64 * 1024, 16
-- What a subscriber may have queued before a publish closes it (1008): see M.publish.
local DEFAULT_MAX_QUEUE = 1024 * 1024

-- Cancels the websocket's helper tasks (heartbeat, slow-subscriber reaper), except the
-- one running this.
local function stop_tasks(self)
    local list = self.helpers
    if not list then return end
    self.helpers = nil
    for t in pairs(list) do
        if not core.is_current(t) then t:cancel() end
    end
end

local function add_helper(self, fn)
    local t = spawn(fn)
    if not t:done() then
        self.helpers = self.helpers or {}
        self.helpers[t] = true
    end
    return t
end

local unsubscribe_all, flush_out

local start_heartbeat

-- pmd: the permessage-deflate agreed on, or nil: { header = the Sec-WebSocket-Extensions
-- value, bits = our deflater's window bits, deflate_reset, inflate_reset }.
local function wrap(st, client, opts, protocol, pmd)
    local self = setmetatable({
        st = st,
        client = client,
        -- an integer, so the frame reader's limit (max_message - size + slack) is one;
        -- math.huge means 2^53: no limit in practice
        max_message = math.floor(math.min(opts.max_message or DEFAULT_MAX, 1 << 53)),
        close_timeout = opts.close_timeout or 5,
        protocol = protocol, -- the subprotocol agreed on, or nil
        lock = sync.semaphore(1),
        sent_close = false,
        receiving = false,
        closed = nil, -- "closed: CODE REASON" once over
        extensions = pmd and pmd.header or nil, -- the Sec-WebSocket-Extensions agreed on
        pmd = pmd,
        received = 0, -- frames read: liveness for the heartbeat
        max_queue = opts.max_queue or DEFAULT_MAX_QUEUE,
        -- a frame of our own going out (write_own): its size, and the bytes pushed behind it
        sending = 0,
        behind = 0,
    }, WS)
    -- the write lock's release, which also ends a write_own that a cancel cut short
    self.unlock = setmetatable({}, { __close = function()
        self.sending = 0
        self.lock:release()
    end })
    self.recv_guard = setmetatable({}, { __close = function() self.receiving = false end })
    if opts.heartbeat then start_heartbeat(self, opts.heartbeat) end
    return self
end
M.wrap = wrap

-- Sends the pong receive() left for the holder of the write lock (see pong below).
local function flush_pongs(self)
    local ok, err = true, nil
    while ok and self.pong do
        local payload = self.pong
        self.pong = nil
        ok, err = self.st:write(ws_frame(OP_PONG, payload, true, self.client))
    end
    return ok, err
end

-- The connection's deflater, made on first use (about 256 KiB of zlib state).
local function deflater(self)
    local d = self.deflater
    if not d then
        d = core.ws_deflater(self.pmd.bits, self.pmd.deflate_reset)
        self.deflater = d
    end
    return d
end

-- Whether a data message of `size` bytes goes compressed.
local function compressing(self, op, size)
    return self.pmd ~= nil and op <= OP_BINARY and size >= COMPRESS_MIN
end

-- Writes a frame of the websocket's own (ws:send, ws:close; the caller holds the lock),
-- noting its size while it goes out: what publish queues is counted apart from it
-- (published_waiting).
local function write_own(self, frame)
    self.sending, self.behind = #frame, 0
    local ok, err = self.st:write(frame)
    self.sending = 0
    return ok, err
end

-- core.ws_push, counting what goes behind a frame of write_own still going out.
local function push(self, bytes)
    if self.sending > 0 then self.behind = self.behind + #bytes end
    return ws_push(self.st, bytes)
end

-- What waits in the socket for the peer besides the rest of a frame of write_own still
-- going out: published frames (and control frames), ahead of it and behind it. The queue
-- goes out in order, so while any of that frame is left, the `behind` bytes pushed after
-- it are all still there, and so is everything else when the whole frame is. (On TLS the
-- queue holds records, a little more than the frames: the count is then a little high.)
local function published_waiting(self)
    local q = core.stream_queued(self.st)
    local s = self.sending
    if s == 0 then return q end
    return min(q, max(self.behind, q - s))
end

-- Hands a control frame to the stream at once, right after what it already holds (never
-- after a send still waiting to queue its bytes): true, or false when the stream holds
-- more than CONTROL_QUEUE and CONTROL_BURST control frames went in since it did, or
-- nil, err when it is closed.
local function push_control(self, op, payload)
    if core.stream_queued(self.st) <= CONTROL_QUEUE then
        self.controls = 0
    elseif (self.controls or 0) >= CONTROL_BURST then
        return false
    end
    self.controls = (self.controls or 0) + 1
    local q, err = push(self, ws_frame(op, payload, true, self.client))
    if not q then return nil, err end
    return true
end

-- Data frames published while a fragmented message is being sent wait for its last
-- fragment (nothing may come between a message's fragments but control frames).
local function flush_published(self)
    local list = self.published
    if not list then return end
    self.published = nil
    push(self, concat(list))
end

-- Writes one frame, holding the write lock so frames of concurrent senders never
-- interleave; then any pong that receive() left for the lock's holder. A data message is
-- compressed inside the lock: with context takeover the peer inflates messages in the
-- order they are on the wire, which is the order we deflate them in.
local function send_frame(self, op, payload, fin)
    local frame
    if not compressing(self, op, #payload) then frame = ws_frame(op, payload, fin, self.client) end
    self.lock:acquire()
    local _ <close> = self.unlock
    -- a send that waited for the lock while a close frame went out: nothing may follow it
    if self.sent_close and op ~= OP_CLOSE then return nil, "closing" end
    if self.out then flush_out(self) end -- frames published before this send go first
    if not frame then frame = ws_frame(op, deflater(self):deflate(payload, true), fin, self.client, true) end
    if op == OP_CLOSE then -- nothing may follow a close frame (RFC 6455 5.5.1), a pong owed neither
        self.pong = nil
        return write_own(self, frame)
    end
    local ok, err = write_own(self, frame)
    if ok then return flush_pongs(self) end
    return ok, err
end

local finish

-- Writes a message as fragments (RFC 6455 5.4), holding the lock across them so no other
-- message comes between; pongs may (control frames may be injected between fragments).
-- A message cut short by a cancel (loom.timeout) can be neither finished nor followed by
-- another, so then the connection is dropped.
local function send_fragments(self, op, parts)
    self.lock:acquire()
    local _ <close> = self.unlock
    local ok, err = true, nil
    local n, begun, sent = #parts, 0, 0
    local _cut <close> = setmetatable({}, { __close = function(_, e)
        self.fragmenting = false
        if e ~= nil and begun > 0 and sent < n then finish(self, 1006, "message cut short") end
        if not self.closed then flush_published(self) end
    end })
    if self.out then flush_out(self) end
    self.fragmenting = true
    local size = 0
    for i = 1, n do size = size + #parts[i] end
    local d = compressing(self, op, size) and deflater(self)
    for i = 1, n do
        if self.sent_close then ok, err = nil, "closing"; break end -- a slow subscriber's close went out
        begun = i -- a write that waits has its bytes queued already: they will go out
        local part = d and d:deflate(parts[i], i == n) or parts[i]
        ok, err = write_own(self, ws_frame(i == 1 and op or OP_CONT, part, i == n, self.client, d and i == 1))
        if ok then sent = i; ok, err = flush_pongs(self) end
        if not ok then break end
    end
    return ok, err
end

-- Answers a ping. While another task holds the write lock (its send may be waiting on a
-- peer that reads slowly, and other sends may wait for the lock), the pong is queued at
-- once, right after what the stream holds, so it never waits for those sends; past
-- push_control's bound it is left to the lock's holder. Otherwise it is written here, and
-- this receiver waits for it like any writer: a peer that pings but reads no pongs stops
-- being read (RFC 6455 5.5.3: a pong answers the most recent ping; older ones may go
-- unanswered).
local function pong(self, payload)
    if self.lock.value > 0 then
        send_frame(self, OP_PONG, payload, true)
        return
    end
    local ok, err = push_control(self, OP_PONG, payload)
    if ok == false then
        self.pong = payload
    elseif not ok then
        finish(self, 1006, (err:gsub("^closed: ", "")))
    end
end

-- Ends the connection after a close frame went out (or could not).
finish = function(self, code, reason)
    if not self.closed then
        reason = reason or ""
        self.close_code, self.close_reason = code, reason
        self.closed = reason ~= "" and format("closed: %d %s", code, reason) or format("closed: %d", code)
    end
    if self.topics then unsubscribe_all(self) end
    stop_tasks(self)
    self.st:close()
    local waiter = self.close_waiter
    if waiter then
        self.close_waiter = nil
        wake(waiter, self.close_serial)
    end
    return nil, self.closed
end

local function close_payload(code, reason)
    return char(code >> 8, code & 255) .. reason
end

-- Sends a close frame within `secs`: true once the kernel has it, or nil, err; err is
-- "timeout" when the peer reads nothing (the frame is stuck, or waits behind a send that
-- is). The caller then drops the connection, which ends a send still waiting too.
local function send_close(self, payload, secs)
    if self.lock.value > 0 then -- nobody is writing: the stream's timeout bounds our write
        local st = self.st
        st:settimeout(secs)
        local ok, err = send_frame(self, OP_CLOSE, payload, true)
        st:settimeout(nil)
        if not ok and err:find("^timeout") then err = "timeout" end
        return ok, err
    end
    return within(secs, send_frame, self, OP_CLOSE, payload, true)
end

-- Sends a close frame (once), then drops the connection: for protocol errors, where
-- waiting for the peer's answer would only prolong talking to a broken peer.
local function fail(self, code, reason)
    if not self.sent_close then
        self.sent_close = true
        send_close(self, close_payload(code, reason), self.close_timeout)
    end
    return finish(self, code, reason)
end

-- Codes a peer may send (RFC 6455 7.4.1, the IANA registry): 1004-1006 and 1015 are
-- reserved, never on the wire; 3000-4999 are for libraries and applications.
local VALID_CLOSE = { [1000] = true, [1001] = true, [1002] = true, [1003] = true, [1007] = true,
    [1008] = true, [1009] = true, [1010] = true, [1011] = true, [1012] = true, [1013] = true, [1014] = true }

local function valid_code(code)
    return VALID_CLOSE[code] or (code >= 3000 and code <= 4999)
end

local function on_close_frame(self, payload)
    local code, reason = 1005, ""
    if #payload == 1 then return fail(self, 1002, "bad close frame") end
    if #payload >= 2 then
        code = byte(payload, 1) * 256 + byte(payload, 2)
        reason = payload:sub(3)
        if not valid_code(code) then return fail(self, 1002, "bad close code") end
        if not utf8len(reason) then return fail(self, 1007, "close reason is not UTF-8") end
    end
    if not self.sent_close then -- answer with the same code
        self.sent_close = true
        send_close(self, payload:sub(1, 2), self.close_timeout)
    end
    return finish(self, code, reason)
end

-- The inflated bytes of a compressed message's frame, inflated with a cap of what is left
-- of max_message: a compression bomb stops at the cap (1009), never inflated past it.
local function inflate(self, m, fin, payload)
    local z = self.inflater
    if not z then
        z = core.ws_inflater(self.pmd.inflate_reset)
        self.inflater = z
    end
    local out, err = z:inflate(payload, fin, self.max_message - m.size)
    if out then return out end
    if err:find("^limit") then return fail(self, 1009, "message too big") end
    return fail(self, 1007, (err:gsub("^http: ", "")))
end

-- One data frame into the message being gathered: the message when it is complete, or
-- nil (more to come); or nil, err after a protocol error. m.size counts the payload
-- (inflated, when compressed) and FRAGMENT_COST per continuation; empty fragments are
-- counted but not kept. rsv1: a compressed message's first frame (permessage-deflate).
local function on_data_frame(self, m, fin, op, payload, rsv1)
    if (op == OP_CONT) ~= (m.parts ~= nil) then
        return fail(self, 1002, op == OP_CONT and "continuation without a message" or "message inside a message")
    end
    if op ~= OP_CONT then
        m.parts, m.kind, m.size, m.compressed = {}, op == OP_TEXT and "text" or "binary", 0, rsv1
    else
        m.size = m.size + FRAGMENT_COST
    end
    if m.compressed then
        local err
        payload, err = inflate(self, m, fin, payload)
        if not payload then return nil, err end
    end
    m.size = m.size + #payload
    if m.size > self.max_message then return fail(self, 1009, "message too big") end
    local parts = m.parts
    if payload ~= "" then parts[#parts + 1] = payload end
    if not fin then return nil end
    local msg = #parts == 1 and parts[1] or concat(parts)
    if m.kind == "text" and not utf8len(msg) then return fail(self, 1007, "text is not UTF-8") end
    return msg
end

local function read_failed(self, err)
    if err and err:find("^limit") then return fail(self, 1009, "message too big") end
    if err and err:find("^http: ") then return fail(self, 1002, err:sub(7)) end -- a header refused
    if self.sent_close and err and err:find("^timeout") then -- close() waited in vain
        return finish(self, 1006, "no close frame from the peer")
    end
    return finish(self, 1006, err and err:gsub("^closed: ", "") or "connection lost")
end

-- ws:receive() -> message, "text" | "binary"; or nil, "closed: CODE REASON"
function WS:receive()
    if self.closed then return nil, self.closed end
    if self.receiving then error("receive: another task is already receiving on this websocket", 2) end
    self.receiving = true
    local _ <close> = self.recv_guard
    -- the message being gathered stays on self: a receive cancelled between its fragments
    -- (loom.timeout) leaves them for the next one
    local m = self.gathering or { size = 0 }
    self.gathering = m
    while true do
        local deadline = self.recv_deadline -- close() waiting for the peer's close frame
        if deadline then
            local left = deadline - now()
            if left <= 0 then return read_failed(self, "timeout") end
            self.st:settimeout(left)
        end
        local left = self.max_message - m.size
        -- a compressed frame may be a little larger than what it inflates to
        if self.pmd then left = left + (left >> 10) + 64 end
        local fin, rsv, op, masked, payload = ws_read_frame(self.st, left + CONTROL_SLACK)
        if fin == nil then return read_failed(self, rsv) end
        self.received = self.received + 1
        -- RSV1 is permessage-deflate's, on a data message's first frame once agreed on
        local rsv1 = rsv == 4 and self.pmd ~= nil and (op == OP_TEXT or op == OP_BINARY)
        if rsv ~= 0 and not rsv1 then return fail(self, 1002, "reserved bits set") end
        if masked == self.client then
            return fail(self, 1002, self.client and "masked frame from server" or "unmasked frame from client")
        end
        if op >= 8 then -- the frame reader refused one fragmented or over 125 bytes
            if op == OP_CLOSE then return on_close_frame(self, payload) end
            if op == OP_PING then
                if not self.sent_close then pong(self, payload) end
            elseif op == OP_PONG then
                self.last_pong = payload
            else
                return fail(self, 1002, "unknown opcode")
            end
        elseif op <= OP_BINARY then
            local msg, err = on_data_frame(self, m, fin, op, payload, rsv1)
            if msg then
                self.gathering = nil
                return msg, m.kind
            end
            if err then return nil, err end
        else
            return fail(self, 1002, "unknown opcode")
        end
        if self.closed then return nil, self.closed end -- a pong write failed and closed us
    end
end

local function check_kind(kind)
    if kind ~= nil and kind ~= "text" and kind ~= "binary" then
        args.fail("send", 2, "'text' or 'binary' expected, got " .. tostring(kind), 2)
    end
end

local function check_parts(parts)
    if #parts == 0 then args.fail("send", 1, "empty list of fragments", 3) end
    for i = 1, #parts do
        if type(parts[i]) ~= "string" then
            args.fail("send", 1, format("fragment %d: string expected, got %s", i, type(parts[i])), 3)
        end
    end
end

-- ws:send(data | {fragments...} [, "text" | "binary"]) -> true | nil, err. Waits while the
-- peer is slow (the kernel has the whole message when it returns). A list is sent as one
-- message in that many fragments.
function WS:send(data, kind)
    if type(data) == "table" then check_parts(data) else args.check(data, "string", "send", 1) end
    check_kind(kind)
    if self.closed or self.sent_close then return nil, self.closed or "closed: closing" end
    local op = kind == "binary" and OP_BINARY or OP_TEXT
    local ok, err
    if type(data) == "table" then
        ok, err = send_fragments(self, op, data)
    else
        ok, err = send_frame(self, op, data, true)
    end
    if err == "closing" then return nil, self.closed or "closed: closing" end
    if not ok then return finish(self, 1006, err:gsub("^closed: ", "")) end
    return true
end

-- ws:ping([data]) -> true | nil, err. The pong comes back to the task in receive(), which
-- keeps its payload in ws.last_pong.
function WS:ping(data)
    if data ~= nil then args.check(data, "string", "ping", 1) end
    if data and #data > 125 then args.fail("ping", 1, "at most 125 bytes") end
    if self.closed or self.sent_close then return nil, self.closed or "closed: closing" end
    local ok, err = send_frame(self, OP_PING, data or "", true)
    if err == "closing" then return nil, self.closed or "closed: closing" end
    if not ok then return finish(self, 1006, err:gsub("^closed: ", "")) end
    return true
end

local function check_close_args(code, reason)
    if math.type(code) ~= "integer" or not (code == 1000 or (code >= 3000 and code <= 4999) or
        (VALID_CLOSE[code] and code ~= 1002 and code ~= 1007 and code ~= 1009 and code ~= 1010)) then
        args.fail("close", 1, "close code 1000, 1001, 1003, 1008, 1011-1014 or 3000-4999 expected, got "
            .. tostring(code), 2)
    end
    if #reason > 123 then args.fail("close", 2, "reason longer than 123 bytes", 2) end
    if not utf8len(reason) then args.fail("close", 2, "reason is not UTF-8", 2) end -- the peer would fail 1007
end

-- Waits, until `deadline`, for the peer's close frame to end the connection.
local function await_close(self, deadline)
    if self.receiving then -- the receiving task will read the peer's answer: wait for it
        local t, serial = ticket()
        self.close_waiter, self.close_serial = t, serial
        park(math.max(0, deadline - now()))
        self.close_waiter = nil
    else
        -- what arrives meanwhile is dropped; receive() gives each frame read the time left
        -- (pings or fragments that keep coming do not extend it) and ends the connection
        -- at the deadline
        self.recv_deadline = deadline
        while not self.closed do self:receive() end
    end
end

-- ws:close([code = 1000, reason]) -> true: the close handshake, waiting up to
-- close_timeout for the peer's close frame. Harmless when already closed.
function WS:close(code, reason)
    if self.closed then return true end
    code, reason = code or 1000, reason or ""
    check_close_args(code, args.check(reason, "string", "close", 2))
    if not core.in_task() then -- no task to wait in (a finalizer): just drop the connection
        finish(self, code, reason)
        return true
    end
    local deadline = now() + self.close_timeout
    if not self.sent_close then
        self.sent_close = true
        local _, err = send_close(self, close_payload(code, reason), self.close_timeout)
        if err == "timeout" then deadline = 0 end -- the peer reads nothing: it cannot answer
    end
    if not self.closed and deadline > 0 then await_close(self, deadline) end
    if not self.closed then finish(self, 1006, "no close frame from the peer") end
    return true
end

-- for msg, kind in ws:each() do ... end: messages until the connection closes; then
-- ws.close_code and ws.close_reason tell why.
function WS:each()
    return function()
        return self:receive()
    end
end

-- Heartbeat -----------------------------------------------------------------------------

-- A ping every `secs` seconds, sent at once (queued right after what the stream holds,
-- never behind a send that waits); when nothing at all came from the peer in the `secs`
-- after a ping (its pong, or any other frame: the peer is alive), the connection is
-- dropped with 1006, without a close frame (a peer that answers nothing would not read
-- it). Frames are counted by receive(): a task must be receiving.
start_heartbeat = function(self, secs)
    add_helper(self, function()
        local seen
        while true do
            sleep(secs)
            if self.closed or self.sent_close then return end
            if seen and self.received == seen then
                return finish(self, 1006, format("no pong within %g s", secs))
            end
            seen = self.received
            local ok, err = push_control(self, OP_PING, "")
            if ok == nil then return finish(self, 1006, (err:gsub("^closed: ", ""))) end
            -- ok == false: the peer reads nothing of what we queue (push_control's bound):
            -- no ping, and if it sends nothing either, it is dropped at the next turn
        end
    end)
end

-- Topics ------------------------------------------------------------------------------

-- The apps' subscriptions, by the app's set of open websockets (server_handler's `open`):
-- registry[topic] = { subs = { [ws] = true }, n = count }.
local registries = setmetatable({}, { __mode = "k" })

unsubscribe_all = function(self)
    local reg = self.registry
    for topic in pairs(self.topics) do
        local t = reg[topic]
        if t and t.subs[self] then
            t.subs[self] = nil
            t.n = t.n - 1
            if t.n == 0 then reg[topic] = nil end
        end
    end
    self.topics = nil
end

-- ws:subscribe(topic) -> true: app:publish(topic, ...) reaches this websocket from now
-- until ws:unsubscribe(topic) or the connection ends.
function WS:subscribe(topic)
    args.check(topic, "string", "subscribe", 1)
    local reg = self.registry
    if not reg then error("subscribe: only a websocket of app:ws can subscribe to topics", 2) end
    if self.closed or self.sent_close then return nil, self.closed or "closed: closing" end
    local t = reg[topic]
    if not t then
        t = { subs = {}, n = 0 }
        reg[topic] = t
    end
    if not t.subs[self] then
        t.subs[self] = true
        t.n = t.n + 1
    end
    self.topics = self.topics or {}
    self.topics[topic] = true
    return true
end

-- ws:unsubscribe(topic) -> true
function WS:unsubscribe(topic)
    args.check(topic, "string", "unsubscribe", 1)
    local reg, topics = self.registry, self.topics
    if reg and topics and topics[topic] then
        topics[topic] = nil
        local t = reg[topic]
        if t and t.subs[self] then
            t.subs[self] = nil
            t.n = t.n - 1
            if t.n == 0 then reg[topic] = nil end
        end
    end
    return true
end

-- A subscriber with more than max_queue bytes waiting to go out: it is unsubscribed, a
-- close frame (1008 "slow subscriber") is queued after what it holds, and the connection
-- is dropped close_timeout later unless the peer answers the close first.
local function drop_slow(self)
    unsubscribe_all(self)
    if self.sent_close or self.closed then return end
    self.sent_close = true
    if not self.fragmenting then
        push(self, ws_frame(OP_CLOSE, close_payload(1008, "slow subscriber"), true, false))
    end
    add_helper(self, function()
        sleep(self.close_timeout)
        finish(self, 1008, "slow subscriber")
    end)
end

-- Published frames are corked: each subscriber gathers them in ws.out, and one task,
-- spawned by the first publish and run when the publisher next waits, hands each
-- subscriber's frames to its socket in one write. A burst of publishes thus costs one
-- system call per subscriber rather than one per message and subscriber.
local corked, cork_task = {}, nil

-- Hands ws.out to the stream (or, while a fragmented message is going out, to the list
-- sent after its last fragment).
flush_out = function(self)
    local out = self.out
    if not out then return end
    self.out = nil
    if self.closed then return end
    if self.fragmenting then
        local list = self.published or {}
        self.published = list
        for i = 1, #out do list[#list + 1] = out[i] end
        list.bytes = (list.bytes or 0) + out.bytes
        return
    end
    local ok, err = push(self, #out == 1 and out[1] or concat(out))
    if not ok then finish(self, 1006, (err:gsub("^closed: ", ""))) end
end

local function flush_corked()
    while next(corked) do
        local list = corked
        corked = {}
        for ws in pairs(list) do flush_out(ws) end
    end
    cork_task = nil
end

-- Queues a published frame for one subscriber: true, or false when it was dropped
-- because what waits for it (in the socket, in ws.out and after a fragmented message)
-- would pass max_queue. The rest of a ws:send still going out does not count: the sender
-- waits for it, so it is bounded already, and how much of it the kernel has taken by now
-- says nothing about a slow subscriber (published_waiting).
local function deliver(self, frame)
    if self.closed or self.sent_close then return false end
    local out = self.out
    if not out then
        local published = self.published
        out = { base = published_waiting(self) + (published and published.bytes or 0), bytes = 0 }
        self.out = out
        corked[self] = true
        if not cork_task then cork_task = spawn(flush_corked) end
    end
    local bytes = out.bytes + #frame
    if out.base + bytes > self.max_queue then
        self.out = nil
        drop_slow(self)
        return false
    end
    out.bytes = bytes
    out[#out + 1] = frame
    return true
end

-- app:publish(topic, msg [, kind]) -> receivers: the message to every websocket subscribed
-- to topic, as one frame built once (uncompressed, whatever each connection agreed on)
-- and queued for each socket without waiting (corked: written when the publisher next
-- waits). A subscriber that has more than max_queue bytes (1 MiB) waiting besides its own
-- send going out is dropped (drop_slow); receivers counts those that got it.
function M.publish(app, topic, msg, kind)
    args.check(topic, "string", "publish", 1)
    args.check(msg, "string", "publish", 2)
    if kind ~= nil and kind ~= "text" and kind ~= "binary" then
        args.fail("publish", 3, "'text' or 'binary' expected, got " .. tostring(kind), 3)
    end
    local reg = registries[app.websockets]
    local t = reg and reg[topic]
    if not t then return 0 end
    if kind ~= "binary" and not utf8len(msg) then args.fail("publish", 2, "text is not UTF-8", 3) end
    local frame = ws_frame(kind == "binary" and OP_BINARY or OP_TEXT, msg, true, false)
    local n = 0
    for ws in pairs(t.subs) do
        if deliver(ws, frame) then n = n + 1 end
    end
    return n
end

function WS:__tostring()
    return format("loom.websocket (%s%s)", self.client and "client" or "server",
        self.closed and (", " .. self.closed) or "")
end

WS.__close = function(self) if not self.closed then self:close() end end
WS.__gc = function(self) if not self.closed then self.st:close() end end

-- Server side ---------------------------------------------------------------------------

local function split_list(s)
    local out = {}
    for item in (s or ""):gmatch("[^,%s]+") do out[#out + 1] = item end
    return out
end

-- The first of the client's subprotocols (in its order of preference) that we speak.
local function choose_protocol(ours, offered)
    if not ours then return nil end
    for _, p in ipairs(split_list(offered)) do
        for _, q in ipairs(ours) do
            if p == q then return p end
        end
    end
    return nil
end

local function upgrade_error(req, method, upgrade, conn, key)
    if method ~= "GET" or upgrade ~= "websocket" or not conn:find("upgrade", 1, true) or not key then
        return { status = 426, headers = { upgrade = "websocket", ["content-type"] = "text/plain; charset=utf-8" },
            body = "Upgrade Required" }
    end
    if #key ~= 24 or not key:find("^[%w+/]+=*$") then -- base64 of 16 bytes (RFC 6455 4.1)
        return { status = 400, text = "bad Sec-WebSocket-Key" }
    end
    if req.headers["sec-websocket-version"] ~= "13" then
        return { status = 426, headers = { ["sec-websocket-version"] = "13" }, text = "unsupported version" }
    end
    return nil
end

-- permessage-deflate (RFC 7692) ---------------------------------------------------------

-- s without the blanks around it, in time linear in #s ("^(.-)%s*$" is quadratic in a run
-- of blanks inside s, which a server could send to stall the client).
local function trim(s)
    local first = s:find("%S")
    if not first then return "" end
    return s:sub(first, (s:find("%S%s*$", first)))
end

-- The offers (or the answer) in a Sec-WebSocket-Extensions value: a list of { name, params
-- = { name = value | true }, bad = true when a parameter repeats or is malformed }.
local function parse_extensions(value)
    local list = {}
    for item in (value or ""):gmatch("[^,]+") do
        local ext
        for part in item:gmatch("[^;]+") do
            part = trim(part)
            if not ext then
                ext = { name = part:lower(), params = {} }
            else
                local k, v = part:match("^([^=%s]+)%s*=%s*(.-)$")
                if not k then k, v = part, true end
                if type(v) == "string" then v = v:match('^"(.*)"$') or v end
                k = k:lower()
                if ext.params[k] ~= nil or k == "" then ext.bad = true end
                ext.params[k] = v
            end
        end
        if ext and ext.name ~= "" then list[#list + 1] = ext end
    end
    return list
end

-- A window_bits value 8..15 (RFC 7692 7.1.2: 1*DIGIT, no leading zero): the number, or nil.
local function window_bits(v)
    if type(v) ~= "string" or not v:find("^[1-9]%d?$") then return nil end
    local n = tonumber(v)
    return n >= 8 and n <= 15 and n or nil
end

local PMD_PARAMS = { server_no_context_takeover = true, client_no_context_takeover = true,
    server_max_window_bits = true, client_max_window_bits = true }

-- Whether an offer's (or an answer's) parameters are all known and well-formed; `answer`:
-- client_max_window_bits needs a value there (7.1.2.2).
local function pmd_valid(ext, answer)
    if ext.name ~= "permessage-deflate" or ext.bad then return false end
    for k, v in pairs(ext.params) do
        if not PMD_PARAMS[k] then return false end
        if k:find("no_context") and v ~= true then return false end
        if k == "server_max_window_bits" and not window_bits(v) then return false end
        if k == "client_max_window_bits" and not (window_bits(v) or (v == true and not answer)) then return false end
    end
    return true
end

-- The server's choice among the client's offers: the first permessage-deflate offer it
-- can honour, as the pmd state wrap takes; nil when none. Any valid offer can be: our
-- inflater's window is 15 bits, enough for any client_max_window_bits, and a
-- server_max_window_bits of 8 is served with 9, as zlib's raw deflate does.
local function pmd_accept(value)
    for _, ext in ipairs(parse_extensions(value)) do
        if pmd_valid(ext, false) then
            local p = ext.params
            local header = { "permessage-deflate" }
            if p.server_no_context_takeover then header[#header + 1] = "server_no_context_takeover" end
            if p.client_no_context_takeover then header[#header + 1] = "client_no_context_takeover" end
            if p.server_max_window_bits then
                header[#header + 1] = "server_max_window_bits=" .. p.server_max_window_bits
            end
            return { header = concat(header, "; "), bits = window_bits(p.server_max_window_bits) or 15,
                deflate_reset = p.server_no_context_takeover == true,
                inflate_reset = p.client_no_context_takeover == true }
        end
    end
    return nil
end

-- What the client offers (what every browser offers).
local PMD_OFFER = "permessage-deflate; client_max_window_bits"

-- The client's reading of the server's Sec-WebSocket-Extensions: pmd state, or false for
-- none, or nil, err when the server answered what we did not offer (RFC 6455 9.1).
local function pmd_answer(value, offered)
    if value == nil then return false end
    local list = parse_extensions(value)
    if #list == 0 then return false end
    if not offered or #list > 1 or not pmd_valid(list[1], true) then
        return nil, "http: the server chose an extension we did not offer: " .. value
    end
    local p = list[1].params
    return { header = value, bits = window_bits(p.client_max_window_bits) or 15,
        deflate_reset = p.client_no_context_takeover == true,
        inflate_reset = p.server_no_context_takeover == true }
end

-- Keeps errors' tracebacks, but leaves "cancelled" as it is so the task still unwinds.
local function traceback(e)
    if e == "cancelled" then return e end
    return debug.traceback(tostring(e), 2)
end

local function log_error(req, e)
    io.stderr:write(format("loom: error in websocket handler for %s: %s\n", req.path, tostring(e)))
    io.stderr:flush()
end

-- A header name, and a subprotocol (RFC 6455 4.1: "each ... a token"): what no caller's
-- string can use to add a header line or split the list (RFC 9110 5.6.2).
local TOKEN = "^[%w!#$%%&'*+%-.^_`|~]+$"

-- Raises unless opts.protocols is a list of tokens.
local function check_protocols(list, fname, n)
    for i, v in ipairs(list) do
        if type(v) ~= "string" or not v:find(TOKEN) then
            args.fail(fname, n, format("option 'protocols': entry %d is not a token (%s)", i,
                type(v) == "string" and "'" .. v:gsub("[%c\\\127-\255]", function(c)
                    return format("\\x%02X", c:byte())
                end) .. "'" or type(v)), 2)
        end
    end
end

local SERVER_OPTS = { max_message = true, close_timeout = true, protocols = true, compress = true,
    heartbeat = true, max_queue = true }

-- heartbeat: seconds between pings, > 0; max_queue: bytes, >= 0.
local function check_extras(opts, fname, n)
    args.opt(opts, "compress", "boolean", nil, fname, n)
    local hb = args.opt(opts, "heartbeat", "number", nil, fname, n)
    if hb ~= nil and not (hb > 0 and hb < math.huge) then
        args.fail(fname, n, "option 'heartbeat': positive number of seconds expected, got " .. tostring(hb), 2)
    end
    local mq = args.opt(opts, "max_queue", "number", nil, fname, n)
    if mq ~= nil and not (mq >= 0) then
        args.fail(fname, n, "option 'max_queue': non-negative number expected, got " .. tostring(mq), 2)
    end
end

-- max_message: a number of bytes, >= 0.
local function check_max(opts, fname, n)
    local v = args.opt(opts, "max_message", "number", nil, fname, n)
    if v ~= nil and not (v >= 0) then
        args.fail(fname, n, "option 'max_message': non-negative number expected, got " .. tostring(v), 2)
    end
end

local function check_opts(opts, fname, n)
    opts = args.known(args.opts(opts, fname, n), SERVER_OPTS, fname, n)
    check_max(opts, fname, n)
    check_extras(opts, fname, n)
    args.timeout(opts, "close_timeout", nil, fname, n)
    check_protocols(args.opt(opts, "protocols", "table", {}, fname, n), fname, n)
    return opts
end

-- The handler run by app:ws for an upgrade request: checks the request, answers 101,
-- runs fn(ws, req) and closes the websocket after it (1000, or 1011 when fn raised; the
-- error and its traceback go to stderr). `open` is a set that holds the websocket while
-- fn runs.
function M.server_handler(fn, opts, open)
    opts = check_opts(opts, "ws", 3)
    open = open or {} -- the app's set of open websockets (app:close_websockets)
    return function(req)
        local h = req.headers
        local key = h["sec-websocket-key"]
        local bad = upgrade_error(req, req.method, (h.upgrade or ""):lower(), (h.connection or ""):lower(), key)
        if bad then return bad end
        local _ = req.query, req.remote, req.remote_port -- the request object empties with the upgrade
        local protocol = choose_protocol(opts.protocols, h["sec-websocket-protocol"])
        local pmd = opts.compress and pmd_accept(h["sec-websocket-extensions"]) or nil
        local head = {
            upgrade = "websocket",
            ["sec-websocket-accept"] = core.ws_accept(key),
            ["sec-websocket-protocol"] = protocol,
            ["sec-websocket-extensions"] = pmd and pmd.header or nil,
        }
        local st, err = core.req_upgrade(req._box, head)
        if not st then
            return { status = 503, headers = { ["content-type"] = "text/plain; charset=utf-8" }, body = err }
        end
        rawset(req, "_streamed", { status = 101, headers = head }) -- what middleware's next() gives
        local ws = wrap(st, false, opts, protocol, pmd)
        local reg = registries[open]
        if not reg then
            reg = {}
            registries[open] = reg
        end
        ws.registry = reg
        open[ws] = true
        local ok, e = xpcall(fn, traceback, ws, req)
        open[ws] = nil
        if not ws.closed then
            if ok then ws:close(1000) else fail(ws, 1011, "server error") end
        end
        if not ok then
            if e == "cancelled" then error(e, 0) end
            log_error(req, e)
        end
    end
end
M.check_opts = check_opts

-- Client side ---------------------------------------------------------------------------

-- The handshake's single deadline (nil: none) as the stream's timeout for its next read or
-- write; false once it has passed.
local function time_left(st, deadline)
    if not deadline then return true end
    local left = deadline - now()
    if left <= 0 then return false end
    st:settimeout(left)
    return true
end

local function head_too_big()
    return nil, format("limit: response head over %d bytes", MAX_HEAD)
end

-- One line of the server's answer before `deadline`, `size` bytes of the head read so far:
-- line, size | nil, err.
local function head_line(st, deadline, size, where)
    if not time_left(st, deadline) then return nil, "timeout: websocket handshake with " .. where end
    local line, err = st:read_line()
    if not line then
        if err:find("^limit") then return head_too_big() end -- a line over 64 KiB
        if err:find("^timeout") then err = "timeout: websocket handshake with " .. where end
        return nil, err
    end
    size = size + #line + 2
    if size > MAX_HEAD then return head_too_big() end
    return line, size
end

-- The status line and headers of the server's answer: at most MAX_HEAD bytes, all before
-- `deadline`, however slowly they come.
local function read_head(st, deadline, where)
    local status_line, size = head_line(st, deadline, 0, where)
    if not status_line then return nil, size end
    local headers = {}
    while true do
        local line
        line, size = head_line(st, deadline, size, where)
        if not line then return nil, size end
        if line == "" then break end
        local colon = line:find(":", 1, true)
        if colon and colon > 1 then headers[line:sub(1, colon - 1):lower()] = trim(line:sub(colon + 1)) end
    end
    return status_line, headers
end

local function request_head(p, key, opts)
    local host = p.host:find(":", 1, true) and ("[" .. p.host .. "]") or p.host
    if (p.scheme == "ws" and p.port ~= 80) or (p.scheme == "wss" and p.port ~= 443) then
        host = host .. ":" .. p.port
    end
    local lines = { format("GET %s%s HTTP/1.1", p.path, p.query and ("?" .. p.query) or ""),
        "Host: " .. host, "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " .. key, "Sec-WebSocket-Version: 13" }
    if opts.protocols and #opts.protocols > 0 then
        lines[#lines + 1] = "Sec-WebSocket-Protocol: " .. concat(opts.protocols, ", ")
    end
    if opts.compress then lines[#lines + 1] = "Sec-WebSocket-Extensions: " .. PMD_OFFER end
    for k, v in pairs(opts.headers or {}) do
        k, v = tostring(k), tostring(v)
        if not k:find(TOKEN) or v:find("[\r\n%z]") then args.fail("websocket", 2, "invalid header " .. k, 3) end
        lines[#lines + 1] = k .. ": " .. v
    end
    return concat(lines, "\r\n") .. "\r\n\r\n"
end

-- Checks the server's answer to our upgrade request; returns the agreed subprotocol (or
-- false) or nil, err.
local function check_answer(status, headers, key, opts)
    local code = tonumber(status:match("^HTTP/1%.%d (%d%d%d)"))
    if code ~= 101 then
        return nil, format("http: the server answered %s instead of switching to websocket", code or status)
    end
    if (headers.upgrade or ""):lower() ~= "websocket" then
        return nil, "http: no 'Upgrade: websocket' in the server's answer"
    end
    if headers["sec-websocket-accept"] ~= core.ws_accept(key) then
        return nil, "http: bad Sec-WebSocket-Accept from the server"
    end
    local proto = headers["sec-websocket-protocol"]
    if proto and not choose_protocol(opts.protocols, proto) then
        return nil, "http: the server chose a subprotocol we did not offer: " .. proto
    end
    local pmd, err = pmd_answer(headers["sec-websocket-extensions"], opts.compress)
    if pmd == nil then return nil, err end
    return proto or false, pmd or nil
end

local CLIENT_OPTS = { headers = true, timeout = true, tls = true, max_message = true, close_timeout = true,
    protocols = true, compress = true, heartbeat = true }

-- loom.websocket(url [, opts]) -> ws | nil, err
-- opts: headers, timeout (one deadline for connect, TLS and the upgrade; 10), tls {...},
--       max_message (16 MiB), close_timeout (5), protocols {...}, compress (false: offer
--       permessage-deflate), heartbeat (seconds between pings; none)
function M.connect(u, opts)
    args.check(u, "string", "websocket", 1)
    opts = args.known(args.opts(opts, "websocket", 2), CLIENT_OPTS, "websocket", 2)
    local timeout = args.timeout(opts, "timeout", 10, "websocket", 2)
    args.opt(opts, "headers", "table", nil, "websocket", 2)
    check_max(opts, "websocket", 2)
    check_extras(opts, "websocket", 2)
    args.opt(opts, "tls", "table", nil, "websocket", 2)
    check_protocols(args.opt(opts, "protocols", "table", {}, "websocket", 2), "websocket", 2)
    args.timeout(opts, "close_timeout", nil, "websocket", 2)
    local p, perr = url.split(u)
    if not p or (p.scheme ~= "ws" and p.scheme ~= "wss") then
        args.fail("websocket", 1, "ws:// or wss:// URL expected" .. (perr and (", " .. perr) or ""))
    end
    local key = core.ws_key()
    local head = request_head(p, key, opts)
    local deadline = timeout and now() + timeout
    local st, err = net.connect(p.host, p.port, { timeout = timeout,
        tls = p.scheme == "wss" and (opts.tls or {}) or nil })
    if not st then return nil, err end
    local where = format(p.host:find(":", 1, true) and "[%s]:%d" or "%s:%d", p.host, p.port)
    local ok = time_left(st, deadline)
    if ok then ok, err = st:write(head) else err = "timeout: websocket handshake with " .. where end
    if not ok then st:close(); return nil, err end
    local status, headers = read_head(st, deadline, where)
    if not status then st:close(); return nil, headers end
    local proto, pmd
    proto, pmd = check_answer(status, headers, key, opts)
    if proto == nil then st:close(); return nil, pmd end
    st:settimeout(nil)
    return wrap(st, true, opts, proto or nil, pmd)
end

return M
