-- fuzz_ws_ext.lua: the driver of fuzz_ws_ext (see lua_fuzz.h and docs/fuzzing.md): the
-- Sec-WebSocket-Extensions parser of lua/loom/websocket.lua and permessage-deflate's
-- negotiation (RFC 7692) on both ends. The functions are the module's locals
-- (parse_extensions, pmd_accept: the server's choice among the client's offers;
-- pmd_answer: the client's reading of the server's answer), reached through the upvalues
-- of websocket.server_handler and websocket.connect; a renamed one fails the target at
-- its first input, loudly.
--
-- The first byte picks the mode. Text mode (even): the rest is lines; the first is the
-- client's offer as the server reads it, the second a server's answer as the client
-- reads it, the others messages. Structured mode (odd): the bytes build offers (names,
-- parameters, values, case, blanks, quoting, repeats) whose outcome the driver knows from
-- how it built them, not from parsing.
--
-- Properties: nothing raises; the parsed list has non-empty lower-case names without a
-- blank at either end, "," or ";", parameter names likewise and values true or strings;
-- the server accepts the first offer that is valid (known parameters, each once, the
-- no_context ones without a value, window bits 8..15 written as RFC 7692 7.1.2 says,
-- quoted or not) and only that one, and answers a header with no control byte that names
-- exactly what it agreed; the client takes that answer back with the ends' settings
-- mirrored (never a deflater keeping its context while the peer's inflater resets), refuses
-- an answer when it offered nothing, and takes one only as a single valid extension;
-- messages (text mode) sent both ways with the agreed settings, core.ws_deflater and
-- core.ws_inflater as websocket.lua makes them, come back whole, twice over (context
-- takeover).
local F = require "lua_fuzz"
local core = require "loom.core"
local websocket = require "loom.websocket"

local check = F.check

-- The local `name` among fn's upvalues.
local function upvalue(fn, name)
    for i = 1, 255 do
        local n, v = debug.getupvalue(fn, i)
        if n == nil then break end
        if n == name then return v end
    end
    error("fuzz_ws_ext: no upvalue " .. name .. " (renamed in lua/loom/websocket.lua?)")
end

local pmd_accept = upvalue(websocket.server_handler, "pmd_accept")
local parse_extensions = upvalue(pmd_accept, "parse_extensions")
local pmd_answer = upvalue(upvalue(websocket.connect, "check_answer"), "pmd_answer")

local PARAMS = { "server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits",
    "client_max_window_bits" }
local KNOWN = {}
for _, p in ipairs(PARAMS) do KNOWN[p] = true end

local function bits_ok(v)
    return type(v) == "string" and v:find("^[1-9]%d?$") ~= nil and tonumber(v) >= 8 and tonumber(v) <= 15
end

local function check_list(list, value)
    check(type(list) == "table", "parse_extensions(%s) gave %s", value, list)
    for _, ext in ipairs(list) do
        local name = ext.name
        check(type(name) == "string" and name ~= "" and name == name:lower(), "name %s from %s", name, value)
        check(not name:find("[,;]") and not name:find("^%s") and not name:find("%s$"), "name %s from %s", name,
            value)
        for k, v in pairs(ext.params) do
            check(type(k) == "string" and k == k:lower() and not k:find("[,;]"), "param %s from %s", k, value)
            check(ext.bad or (k ~= "" and not k:find("^%s") and not k:find("%s$")), "param %s from %s", k, value)
            check(v == true or type(v) == "string", "param %s = %s from %s", k, v, value)
        end
    end
end

-- The RFC's rule on a parsed offer (or answer), written again: what pmd_accept must take.
local function valid(ext, answer)
    if ext.name ~= "permessage-deflate" or ext.bad then return false end
    for k, v in pairs(ext.params) do
        if not KNOWN[k] then return false end
        if k:find("no_context", 1, true) then
            if v ~= true then return false end
        elseif k == "server_max_window_bits" then
            if not bits_ok(v) then return false end
        elseif not (bits_ok(v) or (v == true and not answer)) then
            return false
        end
    end
    return true
end

-- The server's state for an offer's parameters, as the contract says (docs/websocket.md).
local function expected_state(p)
    return { bits = p.server_max_window_bits and tonumber(p.server_max_window_bits) or 15,
        deflate_reset = p.server_no_context_takeover == true, inflate_reset = p.client_no_context_takeover == true }
end

-- Messages both ways with the agreed settings: each sent twice, the second a back-reference
-- to the first when the context is kept.
local function exchange(server, client, messages)
    local sd = core.ws_deflater(server.bits, server.deflate_reset)
    local ci = core.ws_inflater(client.inflate_reset)
    local cd = core.ws_deflater(client.bits, client.deflate_reset)
    local si = core.ws_inflater(server.inflate_reset)
    for _, m in ipairs(messages) do
        for _ = 1, 2 do
            local got, err = ci:inflate(sd:deflate(m, true), true, #m)
            check(got == m, "server to client: %s, %s for %s (server %s, client %s)", got, err, m, server, client)
            got, err = si:inflate(cd:deflate(m, true), true, #m)
            check(got == m, "client to server: %s, %s for %s (server %s, client %s)", got, err, m, server, client)
        end
    end
end

-- The server's answer to `offer`; expect: the parsed offer it must take, or nil.
local function check_accept(offer, expect, messages)
    local state = pmd_accept(offer)
    if not expect then
        check(state == nil, "pmd_accept(%s) agreed %s; no offer is valid", offer, state)
        return
    end
    check(type(state) == "table", "pmd_accept(%s) agreed nothing; %s is valid", offer, expect)
    local want = expected_state(expect.params)
    check(state.bits == want.bits and state.deflate_reset == want.deflate_reset
        and state.inflate_reset == want.inflate_reset, "pmd_accept(%s) gave %s, not %s", offer, state, want)
    local header = state.header
    check(type(header) == "string" and not header:find("[%c\127]"), "answer header %s", header)
    local answer = parse_extensions(header)
    check(#answer == 1 and valid(answer[1], true), "answer %s is not one valid extension", header)
    for k, v in pairs(answer[1].params) do
        check(k ~= "client_max_window_bits", "answer %s limits the client's window", header)
        check(expect.params[k] == v or (k == "server_max_window_bits" and tonumber(v) == want.bits),
            "answer %s has %s=%s, the offer %s", header, k, v, offer)
    end
    local client = pmd_answer(header, true)
    check(type(client) == "table", "the client refused our answer %s", header)
    check(client.bits == 15 and client.deflate_reset == state.inflate_reset and client.inflate_reset ==
        state.deflate_reset, "client %s for server %s", client, state)
    check(client.header == header, "client header %s, sent %s", client.header, header)
    if messages then exchange(state, client, messages) end
end

-- The client reads `value` as the server's answer.
local function check_answer(value)
    local r, err = pmd_answer(value, false)
    check(r == false or (r == nil and type(err) == "string" and err:find("^http: ")),
        "pmd_answer(%s) with nothing offered: %s, %s", value, r, err)
    local list = parse_extensions(value)
    r, err = pmd_answer(value, true)
    if #list == 0 then
        check(r == false, "pmd_answer(%s): %s for no extension", value, r)
    elseif #list == 1 and valid(list[1], true) then
        local p = list[1].params
        check(type(r) == "table" and r.header == value, "pmd_answer(%s): %s, %s", value, r, err)
        check(r.bits == (p.client_max_window_bits and tonumber(p.client_max_window_bits) or 15)
            and r.deflate_reset == (p.client_no_context_takeover == true)
            and r.inflate_reset == (p.server_no_context_takeover == true), "pmd_answer(%s): %s", value, r)
    else
        check(r == nil and type(err) == "string" and err:find("^http: "), "pmd_answer(%s): %s, %s", value, r, err)
    end
end

local function text_mode(data)
    local lines = F.lines(data, 8)
    local offer, answer = lines[1], lines[2] or ""
    local list = parse_extensions(offer)
    check_list(list, offer)
    local first
    for _, ext in ipairs(list) do
        if valid(ext, false) then first = ext break end
    end
    local messages = {}
    for i = 3, #lines do messages[#messages + 1] = lines[i] end
    check_accept(offer, first, messages)
    check_list(parse_extensions(answer), answer)
    check_answer(answer)
    check_answer(nil)
end

-- Structured mode ------------------------------------------------------------------------

local NAMES = { "permessage-deflate", "PerMessage-Deflate", "x-webkit-deflate-frame", "permessage-deflat",
    "deflate-frame", "permessage-deflate" }
local NAMES_OK = { true, true, false, false, false, true }
local EXTRA = { "foo", "server_max_window", "SERVER_NO_CONTEXT_TAKEOVER", "client_max_window_bits" }
-- values: the written form, and what it reads as (true: none; a string: unquoted)
local VALUES = { { "", true }, { "=8", "8" }, { "=15", "15" }, { "=9", "9" }, { "=16", "16" }, { "=08", "08" },
    { "=7", "7" }, { '="10"', "10" }, { "=abc", "abc" }, { " = 12", "12" }, { "=", "" }, { '=""', "" } }
local BLANKS = { "", " ", "  ", "\t" }

-- Reads bytes from the input, 0 once it runs out.
local function reader(data)
    local pos = 1
    return function(n)
        local b = data:byte(pos) or 0
        pos = pos + 1
        return b % n + 1
    end
end

-- One offer built from the bytes: its text, and what it reads as ({ name, params, bad }).
local function build_offer(next_byte)
    local ni = next_byte(#NAMES)
    local text = { BLANKS[next_byte(#BLANKS)] .. NAMES[ni] }
    local ext = { name = NAMES_OK[ni] and "permessage-deflate" or NAMES[ni]:lower(), params = {} }
    for _ = 1, next_byte(5) - 1 do
        local pi = next_byte(#PARAMS + #EXTRA)
        local name = PARAMS[pi] or EXTRA[pi - #PARAMS]
        local v = VALUES[next_byte(#VALUES)]
        local key = name:lower()
        if ext.params[key] ~= nil then ext.bad = true end
        ext.params[key] = v[2]
        text[#text + 1] = BLANKS[next_byte(#BLANKS)] .. name .. v[1] .. BLANKS[next_byte(#BLANKS)]
    end
    return table.concat(text, ";"), ext
end

local function structured_mode(data)
    local next_byte = reader(data)
    local texts, first = {}, nil
    for i = 1, next_byte(4) do
        local text, ext = build_offer(next_byte)
        texts[i] = text
        if not first and valid(ext, false) then first = ext end
    end
    local offer = table.concat(texts, ",")
    local list = parse_extensions(offer)
    check_list(list, offer)
    check(#list == #texts, "parse_extensions(%s) gave %d offers, not %d: %s", offer, #list, #texts, list)
    check_accept(offer, first, nil)
    check_answer(offer)
end

return function(data)
    if #data == 0 then return end
    local mode = data:byte(1)
    if mode % 2 == 0 then text_mode(data:sub(2)) else structured_mode(data:sub(2)) end
end
