-- examples/fetch.lua: the one-call fetch.
--   loom examples/fetch.lua URL [METHOD [BODY]]
-- Prints the status line and headers to stderr and the body to stdout; exits 1 on failure.
local url, method, body = arg[1], arg[2] or "GET", arg[3]
if not url then
    io.stderr:write("usage: loom examples/fetch.lua URL [METHOD [BODY]]\n")
    os.exit(2)
end

local res, err = loom.fetch(url, { method = method, body = body, timeout = 30 })
if not res then
    io.stderr:write("fetch: ", err, "\n")
    os.exit(1)
end
io.stderr:write(("HTTP/%s %d %s\n"):format(res.version, res.status, res.reason))
for _, h in ipairs(res.raw_headers) do
    io.stderr:write(h[1], ": ", h[2], "\n")
end
io.stdout:write(res:text())
