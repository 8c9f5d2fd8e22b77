-- Unix-domain sockets, client side and the raw server: loom.connect{ path },
-- loom.fetch(url, { unix = path }) and sessions (a pool key of their own), against a real
-- nginx listening on a unix socket, and loom.listen{ path } (a stale socket file replaced,
-- a live one refused, the file removed on close). The sockets are uv_pipe_t streams on the
-- same loom_sock write path as TCP.
local loom = require "loom"
local run = require "support.run"

local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("a")
    p:close()
    return out
end

local function tmpdir()
    local d = sh("mktemp -d /tmp/loom-unix-XXXXXX"):gsub("%s+$", "")
    assert(d:find("^/tmp/loom%-unix%-"), "mktemp failed: " .. d)
    return d
end

local function exists(path)
    return sh("test -e '" .. path .. "' && echo yes || echo no"):find("yes") ~= nil
end

-- nginx on a unix socket in its own prefix directory, in the background (daemon, pid file),
-- stopped by its PID. Raises with the reason when it cannot start.
local NGINX_CONF = [[
worker_processes 1;
daemon on;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path tmp;
    keepalive_requests 1000;
    server {
        listen unix:%s/nginx.sock;
        location = /info { default_type text/plain; return 200 "nginx on a unix socket, host $host"; }
        location = /echo-method { default_type text/plain; return 200 "$request_method $http_x_probe"; }
    }
}
]]

local function start_nginx()
    local dir = tmpdir()
    assert(os.execute("mkdir -p " .. dir .. "/logs " .. dir .. "/tmp"))
    local f = assert(io.open(dir .. "/nginx.conf", "w"))
    f:write(NGINX_CONF:format(dir))
    f:close()
    local out = sh("nginx -p " .. dir .. " -c nginx.conf")
    local sock = dir .. "/nginx.sock"
    -- nginx daemonizes once it listens: the socket file is there when the command returns
    assert(exists(sock), "nginx did not start on a unix socket (is nginx installed? " ..
        "scripts/deps.sh): " .. out)
    return { dir = dir, sock = sock }
end

local function stop_nginx(ng)
    if not ng then return end
    local pid = sh("cat " .. ng.dir .. "/logs/nginx.pid"):match("%d+")
    if pid then os.execute("kill " .. pid) end
    -- the master removes its socket file as it exits; the directory goes after it
    os.execute("for i in $(seq 100); do kill -0 " .. (pid or 0) .. " 2>/dev/null || break; sleep 0.05; done")
    os.execute("rm -rf '" .. ng.dir .. "'")
end

describe("unix sockets: a real nginx", function()
    local ng
    setup(function() ng = start_nginx() end)
    teardown(function() stop_nginx(ng) end)

    it("loom.fetch(url, { unix = path }) talks HTTP to it, the URL's host in Host", function()
        run(function()
            local res = assert(loom.fetch("http://localhost/info", { unix = ng.sock }))
            assert.equal(200, res.status)
            assert.equal("nginx on a unix socket, host localhost", res:text())
            res = assert(loom.fetch("http://docker.local/echo-method",
                { unix = ng.sock, method = "POST", body = "x", headers = { ["x-probe"] = "p1" } }))
            assert.equal("POST p1", res:text())
        end)
    end)

    it("a session reuses its unix connection, under a pool key of its own", function()
        run(function()
            -- a TCP server answering the same origin: its answers must never come back
            -- through the unix pool, nor nginx's through the TCP one
            local app = loom.app()
            app:get("/info", function() return "loom over TCP" end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local origin = "http://127.0.0.1:" .. srv.port
            local s <close> = loom.session()
            assert.equal("loom over TCP", assert(s:get(origin .. "/info")):text())
            for _ = 1, 3 do
                local res = assert(s:get(origin .. "/info", { unix = ng.sock }))
                assert.equal("nginx on a unix socket, host 127.0.0.1", res:text())
            end
            assert.equal("loom over TCP", assert(s:get(origin .. "/info")):text())
            local st = s.pool:stats()
            assert.equal(2, st.opened) -- one TCP connection, one unix connection
            assert.equal(3, st.reused)
            -- a session whose every request goes to the socket
            local d <close> = loom.session{ unix = ng.sock }
            assert.equal("nginx on a unix socket, host example.org", assert(d:get("http://example.org/info")):text())
            assert.equal("nginx on a unix socket, host example.org", assert(d:get("http://example.org/info")):text())
            assert.equal(1, d.pool:stats().opened)
        end)
    end)

    it("loom.connect{ path } is a stream to it", function()
        run(function()
            local st <close> = assert(loom.connect{ path = ng.sock, timeout = 5, read_timeout = 5 })
            assert.matches("nginx%.sock", tostring(st))
            assert(st:write("GET /info HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n\r\n"))
            local all = assert(st:read("a"))
            assert.matches("^HTTP/1%.1 200 OK\r\n", all)
            assert.matches("\r\n\r\nnginx on a unix socket, host raw$", all)
        end)
    end)
end)

describe("unix sockets: loom.listen{ path }", function()
    it("serves streams; the file goes when the listener closes", function()
        run(function()
            local dir = tmpdir()
            local path = dir .. "/echo.sock"
            local ln = assert(loom.listen{ path = path, handler = function(st)
                while true do
                    local line = st:read_line()
                    if not line then break end
                    st:write("echo: " .. line .. "\n")
                end
                st:close()
            end })
            assert.equal(path, ln.path)
            assert.is_nil(ln.port)
            assert.is_true(exists(path))
            local c <close> = assert(loom.connect{ path = path })
            assert(c:write("one\ntwo\n"))
            assert.equal("echo: one", c:read_line())
            assert.equal("echo: two", c:read_line())
            assert(c:shutdown()) -- the half-close reaches the server as the end of its stream
            assert.same({ nil, "closed: end of stream" }, { c:read_line() })
            ln:close()
            assert.is_false(exists(path))
            os.execute("rmdir " .. dir)
        end)
    end)

    it("replaces a stale socket file, refuses a live one and a file of another kind", function()
        run(function()
            local dir = tmpdir()
            local path = dir .. "/s.sock"
            -- a stale socket: bound by a process that is gone, nobody accepting on it
            local out = sh("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.bind('" .. path .. "')\"")
            assert.is_true(exists(path), "python3 could not leave a stale socket: " .. out)
            local ln <close> = assert(loom.listen{ path = path, mode = "0600", handler = function(st) st:close() end })
            assert.equal("600", sh("stat -c %a " .. path):match("%d+"))
            local again, err = loom.listen{ path = path, handler = function() end }
            assert.is_nil(again)
            assert.matches("^listen: .*address already in use.*s%.sock", err)
            ln:close()
            local f = assert(io.open(dir .. "/plain", "w"))
            f:close()
            again, err = loom.listen{ path = dir .. "/plain", handler = function() end }
            assert.is_nil(again)
            assert.matches("^listen: .*exists", err)
            assert.is_true(exists(dir .. "/plain")) -- never removed
            os.execute("rm -rf " .. dir)
        end)
    end)

    it("a connection to a missing socket fails with connect: ...; misuse raises", function()
        run(function()
            local st, err = loom.connect{ path = "/nonexistent/loom.sock" }
            assert.is_nil(st)
            assert.matches("^connect: .*no such file or directory.*/nonexistent/loom%.sock", err)
            assert.has_error(function() loom.connect{ path = 5 } end,
                "bad argument #1 to 'connect' (option 'path': non-empty string expected, got number)")
            assert.has_error(function() loom.connect{ path = "/x", port = 1 } end)
            assert.has_error(function() loom.fetch("http://x/", { unix = 1 }) end)
            assert.has_error(function() loom.listen{ path = "/tmp/x.sock", mode = "rw", handler = print } end)
        end)
    end)

    it("loom.socket.tcp connects to \"unix:/path\" and pools it by that name", function()
        run(function()
            local dir = tmpdir()
            local path = dir .. "/co.sock"
            local served = 0
            local ln <close> = assert(loom.listen{ path = path, handler = function(st)
                served = served + 1
                while true do
                    local line = st:read_line()
                    if not line then break end
                    st:write(line:upper() .. "\n")
                end
                st:close()
            end })
            for i = 1, 2 do
                local sock = loom.socket.tcp()
                assert.equal(1, sock:connect("unix:" .. path))
                assert.equal(i - 1, sock:getreusedtimes())
                assert(sock:send("hi\n"))
                assert.equal("HI", sock:receive())
                assert.equal(1, sock:setkeepalive())
            end
            assert.equal(1, served) -- the second connect took the pooled one
            local last = loom.socket.tcp()
            assert.equal(1, last:connect("unix:" .. path))
            assert.equal(2, last:getreusedtimes())
            last:close() -- the server's handler sees the end
            local sock = loom.socket.tcp()
            local ok, err = sock:connect("unix:" .. dir .. "/none.sock")
            assert.is_nil(ok)
            assert.matches("no such file", err)
            assert.has_error(function() sock:connect("localhost") end, "bad argument #2 to 'connect' (port expected)")
            os.execute("rm -rf " .. dir)
        end)
    end)

    it("a stream on a unix socket ends and breaks as a TCP one does", function()
        run(function()
            local dir = tmpdir()
            local path = dir .. "/peer.sock"
            local ln <close> = assert(loom.listen{ path = path, handler = function(st)
                st:write("last words")
                st:close()
            end })
            local c <close> = assert(loom.connect{ path = path })
            assert.equal("last words", c:read("a"))
            assert.same({ nil, "closed: end of stream" }, { c:read() })
            -- the peer is gone: writing fails (EPIPE, never a SIGPIPE) with closed: ...
            local ok, err
            for _ = 1, 50 do
                ok, err = c:write(string.rep("x", 65536))
                if not ok then break end
            end
            assert.is_nil(ok)
            assert.matches("^closed: ", err)
            os.execute("rm -rf " .. dir)
        end)
    end)
end)
