-- bench/h2_hello.lua PORT [CERT KEY]: the hello world over HTTP/2 for bench/h2_server.sh:
-- h2c by prior knowledge, or h2 through ALPN on TLS when a certificate is given.
local loom = require "loom"
local core = require "loom.core"
local port, cert, key = tonumber(arg[1]), arg[2], arg[3]
local app = loom.app()
app:get("/", function() return "Hello, World!" end)
local srv = assert(app:listen{ host = "127.0.0.1", port = port, http2 = true,
    tls = cert and { cert = cert, key = key } or nil })
core.wait_signal({ "SIGINT", "SIGTERM" })
srv:close(0)
