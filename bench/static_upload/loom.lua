-- bench/static_upload/loom.lua PORT: the shapes of bench/static_upload/run.py for loom (run
-- from the dir holding static/; uploads are saved under $UPLOAD_DIR).
local loom = rawget(_G, "loom") or require "loom"
local port = tonumber(arg[1]) or 18214
local dir = os.getenv("UPLOAD_DIR") or "/tmp"
local app = loom.app{ max_body = 512 * 1024 * 1024 }
local n = 0
app:post("/upload", function(req)
    local len = 0
    for chunk in req:chunks() do len = len + #chunk end
    return tostring(len)
end)
-- the file part saved to disk with part:save, answered with its size; each upload goes to a
-- new file (the name's previous file removed first: 64 names in turn, so the disk does not fill)
app:post("/multipart", function(req)
    local size = 0
    for part in req:parts() do
        if part.filename then
            n = n % 64 + 1
            local path = ("%s/loom-%d.bin"):format(dir, n)
            loom.fs.remove(path)
            size = assert(part:save(path))
        end
    end
    return tostring(size)
end)
app:static("/static", "static")
assert(app:listen{ host = "127.0.0.1", port = port })
