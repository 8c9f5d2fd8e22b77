-- examples/download.lua: stream a large body to a file, with a progress bar when stdout is
-- a terminal.
--   loom examples/download.lua URL [FILE]     (FILE defaults to the URL's last segment)
local url, path = arg[1], arg[2]
if not url then
    io.stderr:write("usage: loom examples/download.lua URL [FILE]\n")
    os.exit(2)
end
path = path or url:match("([^/?#]+)[^/]*$") or "download.out"

-- `test -t 1` answers whether our stdout is a terminal (the child inherits it).
local tty = os.execute("test -t 1") == true

local res, err = loom.fetch(url, { stream = true, read_timeout = 60 })
if not res then
    io.stderr:write("download: ", err, "\n")
    os.exit(1)
end
if not res.ok then
    io.stderr:write(("download: %d %s\n"):format(res.status, res.reason))
    res:close()
    os.exit(1)
end

local total = tonumber(res.headers["content-length"] or "")
local f = assert(io.open(path, "wb"))
local got, t0, last = 0, loom.now(), 0

local function progress(final)
    local now = loom.now()
    if not tty or (not final and now - last < 0.1) then return end
    last = now
    local rate = got / math.max(now - t0, 1e-3) / 1e6
    if total and total > 0 then
        local width = 40
        local done = math.floor(width * got / total)
        io.stdout:write(("\r[%s%s] %3d%% %.1f MB/s"):format(("#"):rep(done), (" "):rep(width - done),
            got * 100 // total, rate))
    else
        io.stdout:write(("\r%d bytes %.1f MB/s"):format(got, rate))
    end
    if final then io.stdout:write("\n") end
    io.stdout:flush()
end

local ok, werr = pcall(function()
    for piece in res:chunks() do
        assert(f:write(piece))
        got = got + #piece
        progress(false)
    end
end)
f:close()
progress(true)
if not ok then
    io.stderr:write("download: ", tostring(werr), "\n")
    os.exit(1)
end
print(("saved %d bytes to %s in %.2fs"):format(got, path, loom.now() - t0))
