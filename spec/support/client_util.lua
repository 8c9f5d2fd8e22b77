-- spec/support/client_util.lua: helpers for the client specs.
--   raw_server(fn) -> listener, base URL: a TCP server on 127.0.0.1 whose connections run
--     fn(st, req, n) for each request read off them (req: method, target, headers, body;
--     n counts requests on that connection); fn writes raw bytes and returns "close" to
--     end the connection.
--   warm_default(): makes loom.fetch's default session exist, so its pool timer is part of
--     the counts that support.run compares against.
--   tmpdir(): a fresh temporary directory, removed at exit by the caller (rm -rf).
--   start_process(cmd, port) / stop_process(pid): a helper process on a loopback port.
local loom = require "loom"
local run = require "support.run"

local M = {}

-- Reads one request head and body off st; nil at the end of the stream.
local function read_request(st)
    local line = st:read_line()
    if not line then return nil end
    local method, target = line:match("^(%u+) (%S+) HTTP/1%.%d$")
    local req = { method = method, target = target, headers = {} }
    while true do
        local h = st:read_line()
        if not h then return nil end
        if h == "" then break end
        local k, v = h:match("^([^:]+):%s*(.-)%s*$")
        req.headers[k:lower()] = v
    end
    local n = tonumber(req.headers["content-length"] or "0")
    if n > 0 then req.body = st:read(n) end
    if req.headers["transfer-encoding"] == "chunked" then
        local parts = {}
        while true do
            local size = tonumber(st:read_line(), 16)
            if not size or size == 0 then st:read_line(); break end
            parts[#parts + 1] = st:read(size)
            st:read_line()
        end
        req.body = table.concat(parts)
    end
    return req
end
M.read_request = read_request

function M.raw_server(fn)
    local srv = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
        local n = 0
        while true do
            local req = read_request(st)
            if not req then break end
            n = n + 1
            if fn(st, req, n) == "close" then break end
        end
        st:close()
    end })
    return srv, "http://127.0.0.1:" .. srv.port
end

-- A complete response with a body.
function M.respond(st, status, body, headers)
    local out = { ("HTTP/1.1 %d X\r\n"):format(status) }
    for k, v in pairs(headers or {}) do out[#out + 1] = k .. ": " .. v .. "\r\n" end
    out[#out + 1] = "Content-Length: " .. #body .. "\r\n\r\n" .. body
    return st:write(table.concat(out))
end

-- A proxy on 127.0.0.1 that logs each request in `log`: CONNECT opens a tunnel to the
-- target; any other request is answered "proxied TARGET auth=PROXY-AUTHORIZATION".
function M.proxy(log)
    local function pipe(from, to)
        while true do
            local d = from:read()
            if not d or not to:write(d) then break end
        end
        from:close()
        to:close()
    end
    local srv = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
        local req = read_request(st)
        if not req then return st:close() end
        log[#log + 1] = req
        if req.method == "CONNECT" then
            local host, port = req.target:match("^(.*):(%d+)$")
            local up = loom.connect(host, tonumber(port))
            if not up then
                st:write("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return st:close()
            end
            st:write("HTTP/1.1 200 Connection established\r\n\r\n")
            local back = loom.spawn(pipe, up, st)
            pipe(st, up)
            back:join()
            return
        end
        M.respond(st, 200, "proxied " .. req.target .. " auth=" .. (req.headers["proxy-authorization"] or "none"))
        st:close()
    end })
    return srv, "http://127.0.0.1:" .. srv.port
end

function M.warm_default()
    run(function() loom.fetch("http://127.0.0.1:1/") end, { leftovers = true })
end

function M.tmpdir()
    local p = io.popen("mktemp -d")
    local d = p:read("l")
    p:close()
    return d
end

function M.free_port()
    local p = io.popen([[python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])']])
    local port = tonumber(p:read("l"))
    p:close()
    return port
end

-- Starts `cmd` (a shell command line) in the background; waits until 127.0.0.1:port
-- accepts. Returns its pid. The wait is a hang guard (30 s): python3 can take seconds to
-- start on a loaded machine. A process that never listens is stopped before the error.
function M.start_process(cmd, port)
    local p = io.popen(cmd .. " >/dev/null 2>&1 & echo $!")
    local pid = tonumber(p:read("l"))
    p:close()
    local ok = run(function()
        local deadline = loom.now() + 30
        repeat
            local st = loom.connect("127.0.0.1", port, { timeout = 1 })
            if st then st:close(); return true end
            loom.sleep(0.025)
        until loom.now() > deadline
        return false
    end, { timeout = 40 })
    if not ok then M.stop_process(pid) end
    assert(ok, "process did not start listening on " .. port .. ": " .. cmd)
    return pid
end

function M.stop_process(pid)
    if pid then os.execute("kill " .. pid .. " 2>/dev/null; wait " .. pid .. " 2>/dev/null") end
end

return M
