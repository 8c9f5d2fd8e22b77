-- bench/fs/read.lua FILE [CHUNK]: reads FILE with loom.fs: whole (fs.read) without CHUNK,
-- else streaming with f:read(CHUNK) in a loop. Run by bench/fs/run.py.
local loom = require "loom"
local path, chunk = arg[1], tonumber(arg[2])
local n = 0
if not chunk then
    n = #assert(loom.fs.read(path))
else
    local f = assert(loom.fs.open(path))
    while true do
        local s = f:read(chunk)
        if not s then break end
        n = n + #s
    end
    f:close()
end
io.stdout:write(n, "\n")
