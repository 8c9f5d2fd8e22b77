-- loom.runtime: the batteries beside HTTP: loom.every (a periodic task), loom.fs (files on
-- libuv's thread pool, src/io/fs.c), loom.process (src/io/process.c), loom.signal
-- (src/io/signal.c), loom.udp (src/io/udp.c, names resolved here through loom.resolver) and
-- loom.shared (src/lib/shared.c). Each wait parks the
-- calling task and cancels cleanly: what the C side started is finished or freed there.
local core = require "loom.core"
local resolver = require "loom.resolver"

local M = {}

local function argerror(n, fname, msg)
    error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

-- ---------------------------------------------------------------- loom.every

-- A handler keeping a cancellation as it is (the task must still end), and giving any
-- other error its traceback.
local function keep_cancel(e)
    if e == "cancelled" then return e end
    return debug.traceback(tostring(e), 2)
end

-- loom.every(seconds, fn) -> task. Calls fn every `seconds` on deadlines start + k*period
-- (no drift; a call that overruns skips the deadlines it missed). An error in fn is printed
-- with its traceback and the loop goes on. Cancel the task to stop.
function M.every(seconds, fn)
    if type(seconds) ~= "number" or seconds <= 0 or seconds ~= seconds then
        argerror(1, "every", "positive number of seconds expected, got " .. tostring(seconds))
    end
    if type(fn) ~= "function" then
        argerror(2, "every", "function expected, got " .. type(fn))
    end
    local now, sleep = core.now, core.sleep
    return core.spawn(function()
        local start = now()
        local k = 1
        while true do
            local wait = start + k * seconds - now()
            if wait > 0 then sleep(wait) end
            local ok, err = xpcall(fn, keep_cancel)
            if not ok then
                if err == "cancelled" then error(err, 0) end
                io.stderr:write("loom.every: ", tostring(err), "\n")
            end
            -- the next deadline still ahead (those missed while fn ran are skipped)
            k = math.max(k + 1, math.floor((now() - start) / seconds) + 1)
        end
    end)
end

-- ---------------------------------------------------------------- loom.fs

local fs = {}
M.fs = fs

-- f:read()'s default size. 1 MiB strings were mapped and faulted in afresh each time: a
-- 100 MB file read in 1 MiB pieces took 1.8x the CPU of 128 KiB ones (bench/fs/run.py).
local READ_CHUNK = 1 << 17

local function check_path(path, n, fname)
    if type(path) ~= "string" then argerror(n, fname, "string expected, got " .. type(path)) end
end

-- Closes fd at once when a task lets go of it early (an error or a cancel).
local function closer(fd)
    return setmetatable({ fd = fd }, { __close = function(c)
        if c.fd then core.fs_close_now(c.fd) end
    end })
end

local function read_all(fd, size)
    local parts, n = {}, 0
    local ask = size > 0 and size + 1 or 65536
    while true do
        local data, err = core.fs_read(fd, math.min(ask, 1 << 30))
        if not data then return nil, err end
        if data == "" then break end
        n = n + 1
        parts[n] = data
        ask = READ_CHUNK
    end
    return n == 1 and parts[1] or table.concat(parts)
end

-- fs.read(path) -> contents | nil, "fs: ENOENT no such file or directory (path)"
function fs.read(path)
    check_path(path, 1, "read")
    local fd, err = core.fs_open(path, "r")
    if not fd then return nil, err end
    local c <close> = closer(fd)
    local st
    st, err = core.fs_fstat(fd)
    if not st then return nil, err end
    local data
    data, err = read_all(fd, st.size)
    c.fd = nil
    core.fs_close(fd)
    if not data then return nil, err end
    return data
end

local function write_all(fd, data)
    local off = 1
    while off <= #data do
        local n, err = core.fs_write(fd, off == 1 and data or data:sub(off))
        if not n then return nil, err end
        off = off + n
    end
    return true
end

-- fs.write(path, data) -> true | nil, err (creates or truncates; mode 0644)
function fs.write(path, data)
    check_path(path, 1, "write")
    if type(data) ~= "string" then argerror(2, "write", "string expected, got " .. type(data)) end
    local fd, err = core.fs_open(path, "w")
    if not fd then return nil, err end
    local c <close> = closer(fd)
    local ok
    ok, err = write_all(fd, data)
    c.fd = nil
    local closed, cerr = core.fs_close(fd)
    if not ok then return nil, err end
    if not closed then return nil, cerr end
    return true
end

-- fs.stat(path) -> {type = "file"|"directory"|"link"|"other", size, mtime, mode} | nil, err
function fs.stat(path)
    check_path(path, 1, "stat")
    return core.fs_stat(path)
end

-- fs.list(dir) -> {names, sorted} | nil, err
function fs.list(dir)
    check_path(dir, 1, "list")
    local names, err = core.fs_scandir(dir)
    if not names then return nil, err end
    table.sort(names)
    return names
end

-- fs.mkdir(path [, mode = 0777 before umask]) -> true | nil, err
function fs.mkdir(path, mode)
    check_path(path, 1, "mkdir")
    if mode ~= nil and math.type(mode) ~= "integer" then
        argerror(2, "mkdir", "integer mode expected, got " .. type(mode))
    end
    return core.fs_mkdir(path, mode)
end

-- fs.remove(path) -> true | nil, err: a file, or an empty directory
function fs.remove(path)
    check_path(path, 1, "remove")
    local ok, err = core.fs_unlink(path)
    if not ok and (err:find("^fs: EISDIR") or err:find("^fs: EPERM")) then
        return core.fs_rmdir(path)
    end
    return ok, err
end

-- fs.rename(from, to) -> true | nil, err
function fs.rename(from, to)
    check_path(from, 1, "rename")
    check_path(to, 2, "rename")
    return core.fs_rename(from, to)
end

local File = {}
File.__index = File

local function file_gc(f)
    if f.fd then
        core.fs_close_now(f.fd)
        f.fd = nil
    end
end
File.__gc = file_gc
File.__close = file_gc

local function check_open(f, fname)
    if getmetatable(f) ~= File then argerror(1, fname, "file expected") end
    if not f.fd then return nil, "closed: file closed" end
    return true
end

-- f:read([n = 128 KiB]) -> up to n bytes | nil at the end | nil, err
function File:read(n)
    local ok, err = check_open(self, "read")
    if not ok then return nil, err end
    if n ~= nil and (math.type(n) ~= "integer" or n < 1) then
        argerror(1, "read", "positive integer expected, got " .. tostring(n))
    end
    local data
    data, err = core.fs_read(self.fd, n or READ_CHUNK)
    if data == "" then return nil end
    return data, err
end

-- f:write(data) -> true | nil, err
function File:write(data)
    local ok, err = check_open(self, "write")
    if not ok then return nil, err end
    if type(data) ~= "string" then argerror(1, "write", "string expected, got " .. type(data)) end
    return write_all(self.fd, data)
end

-- f:stat() -> as fs.stat
function File:stat()
    local ok, err = check_open(self, "stat")
    if not ok then return nil, err end
    return core.fs_fstat(self.fd)
end

-- f:close() -> true | nil, err (again: true)
function File:close()
    if getmetatable(self) ~= File then argerror(1, "close", "file expected") end
    local fd = self.fd
    if not fd then return true end
    self.fd = nil
    return core.fs_close(fd)
end

-- fs.open(path [, mode = "r"]) -> file | nil, err. Modes as io.open: r, r+, w, w+, a, a+,
-- and wx (create, failing if it exists).
function fs.open(path, mode)
    check_path(path, 1, "open")
    if mode ~= nil and type(mode) ~= "string" then
        argerror(2, "open", "string expected, got " .. type(mode))
    end
    local fd, err = core.fs_open(path, mode or "r")
    if not fd then return nil, err end
    return setmetatable({ fd = fd, path = path }, File)
end

-- ---------------------------------------------------------------- loom.signal

-- loom.signal("SIGHUP") -> listener: l:wait([timeout]) -> "SIGHUP" | nil, "closed: ..." |
-- nil, "timeout: ...", l:close()
M.signal = core.signal_open

-- ---------------------------------------------------------------- loom.udp

local udp_mt = debug.getregistry()["loom.udp"]
local raw = udp_mt.__index
local udp = setmetatable({}, { __index = raw })
udp_mt.__index = udp

local function is_ip(host)
    return host:match("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true)
end

-- The address of `host` to use from socket u: one of the family it is bound to, if any.
local function address(u, host, fname)
    if type(host) ~= "string" then argerror(2, fname, "string expected, got " .. type(host)) end
    if is_ip(host) then return host end
    local addrs, err = resolver.resolve(host, 10)
    if not addrs then return nil, err end
    local bound = raw.getsockname(u)
    if bound then
        local v6 = bound:find(":", 1, true) ~= nil
        for _, a in ipairs(addrs) do
            if (a:find(":", 1, true) ~= nil) == v6 then return a end
        end
    end
    return addrs[1]
end

-- u:bind(host, port) -> true | nil, "listen: ..." | nil, "dns: ..."
function udp:bind(host, port)
    local ip, err = address(self, host, "bind")
    if not ip then return nil, err end
    return raw.bind(self, ip, port)
end

-- u:send(data, host, port) -> true | nil, "connect: ..." | nil, "dns: ..."
function udp:send(data, host, port)
    if type(data) ~= "string" then argerror(1, "send", "string expected, got " .. type(data)) end
    local ip, err = address(self, host, "send")
    if not ip then return nil, err end
    return raw.send(self, data, ip, port)
end

-- loom.udp() -> socket: bind, send, receive([timeout]) -> data, ip, port, getsockname,
-- dropped() (datagrams dropped while the queue was full), close
M.udp = core.udp_new

-- ---------------------------------------------------------------- loom.process

local STDIO = { pipe = true, inherit = true, ignore = true }
local STDIO_KEYS = { stdin = true, stdout = true, stderr = true }

-- loom.process{ "cmd", "arg", ..., cwd = dir, env = { NAME = "value" }, stdin = "pipe",
-- stdout = "pipe", stderr = "pipe" } -> process | nil, "process: ENOENT ... (cmd)".
-- cmd is looked up in PATH when it has no slash. env replaces the whole environment.
-- Each of stdin, stdout, stderr is "inherit" (the default), "ignore" (/dev/null) or "pipe":
-- then p.stdin (written), p.stdout, p.stderr (read) are streams. p.pid, p:wait() -> exit
-- status, signal name or nil; p:kill([signal name = "SIGTERM"]) -> true | nil, err.
function M.process(t)
    if type(t) ~= "table" then argerror(1, "process", "table expected, got " .. type(t)) end
    local cmd = t[1]
    if type(cmd) ~= "string" or cmd == "" then
        argerror(1, "process", "command (t[1]) expected, got " .. tostring(cmd))
    end
    local args = {}
    for i = 2, #t do
        local a = t[i]
        if type(a) ~= "string" and type(a) ~= "number" then
            argerror(1, "process", ("argument t[%d]: string expected, got %s"):format(i, type(a)))
        end
        args[i - 1] = tostring(a)
    end
    local env
    if t.env ~= nil then
        if type(t.env) ~= "table" then
            argerror(1, "process", "option 'env': table expected, got " .. type(t.env))
        end
        env = {}
        for k, v in pairs(t.env) do
            if type(k) ~= "string" or k == "" or k:find("=", 1, true)
                or (type(v) ~= "string" and type(v) ~= "number") then
                argerror(1, "process", "option 'env': NAME = \"value\" pairs expected, got "
                    .. tostring(k) .. " = " .. tostring(v))
            end
            env[#env + 1] = k .. "=" .. v
        end
        table.sort(env)
    end
    for _, name in ipairs({ "stdin", "stdout", "stderr" }) do
        local v = t[name]
        if v ~= nil and not STDIO[v] then
            argerror(1, "process", ("option '%s': \"pipe\", \"inherit\" or \"ignore\" expected, got %s")
                :format(name, tostring(v)))
        end
    end
    if t.cwd ~= nil and type(t.cwd) ~= "string" then
        argerror(1, "process", "option 'cwd': string expected, got " .. type(t.cwd))
    end
    for k in pairs(t) do
        if type(k) ~= "number" and k ~= "env" and k ~= "cwd" and not STDIO_KEYS[k] then
            argerror(1, "process", "unknown option '" .. tostring(k) .. "'")
        end
    end
    return core.process_spawn(cmd, args, env,
        { cwd = t.cwd, stdin = t.stdin, stdout = t.stdout, stderr = t.stderr })
end

-- ---------------------------------------------------------------- loom.shared

local dicts = {}

-- loom.shared(name, size) -> dict | nil, err. The same name gives the same dict in this
-- process, and in the workers app:run{workers = N} starts after it was made.
function M.shared(name, size)
    if type(name) ~= "string" or not name:match("^[%w_]+$") or #name > 47 then
        argerror(1, "shared", "name of letters, digits and _ (1 to 47) expected, got " .. tostring(name))
    end
    local d = dicts[name]
    if d then return d end
    if math.type(size) ~= "integer" or size < 16384 then
        argerror(2, "shared", "size in bytes (an integer from 16384) expected, got " .. tostring(size))
    end
    local err
    d, err = core.shared_open(name, size)
    if not d then return nil, err end
    dicts[name] = d
    return d
end

return M
