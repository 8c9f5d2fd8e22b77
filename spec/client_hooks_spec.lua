-- Client trace hooks, middleware, retries and upload progress, over real sockets: loom's
-- own server in the same loop, raw TCP servers, and Python's http.server under ssl for TLS.
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"
local timing = require "support.timing"

-- An app whose handlers tell what they saw; `hits` counts the requests of each path and
-- `times` when each arrived (loom.now()).
local function app_with(routes)
    local app = loom.app()
    local hits, times = {}, {}
    local function count(req)
        hits[req.path] = (hits[req.path] or 0) + 1
        times[req.path] = times[req.path] or {}
        table.insert(times[req.path], loom.now())
        return hits[req.path]
    end
    app:any("/hello", function(req) count(req); return "hello" end)
    app:any("/echo", function(req)
        count(req)
        return { json = { method = req.method, headers = req.headers, body = req:text() } }
    end)
    app:get("/redirect", function(req) count(req); return { status = 302, headers = { location = "/hello" } } end)
    for path, fn in pairs(routes or {}) do
        app:any(path, function(req) return fn(req, count(req)) end)
    end
    local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
    return srv, srv.port, hits, times
end

-- A trace that records every event in `log` as {name, event}.
local HOOKS = { "on_request_start", "on_dns", "on_connect", "on_tls", "on_reuse", "on_response_headers",
    "on_request_end", "on_request_error" }
local function recorder(log)
    local t = {}
    for _, name in ipairs(HOOKS) do t[name] = function(ev) log[#log + 1] = { name, ev } end end
    return t
end
local function names(log, from)
    local out = {}
    for i = from or 1, #log do out[#out + 1] = log[i][1] end
    return out
end

-- A port on 127.0.0.1 nobody listens on.
local function closed_port()
    local l = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st) st:close() end })
    local port = l.port
    l:close()
    return port
end

-- Runs fn with io.stderr writes gathered into the returned table's text.
local function capture_stderr(fn)
    local real, out = io.stderr, { text = "" }
    io.stderr = { write = function(_, ...) out.text = out.text .. table.concat({ ... }); return true end,
        flush = function() return true end }
    local ok, err = pcall(fn)
    io.stderr = real
    assert(ok, err)
    return out
end

setup(function() util.warm_default() end)

describe("trace hooks", function()
    it("fire in order with lookup, connect, head and end facts, then reuse on the next request", function()
        run(function()
            local srv <close>, port = app_with()
            local log = {}
            local s <close> = loom.session{ trace = recorder(log) }
            local url = "http://localhost:" .. port .. "/hello"
            local res = assert(s:get(url))
            assert.equal("hello", res:text())
            assert.same({ "on_request_start", "on_dns", "on_connect", "on_response_headers", "on_request_end" },
                names(log))
            for _, e in ipairs(log) do
                assert.equal("GET", e[2].method)
                assert.equal(url, e[2].url)
                assert.equal(1, e[2].attempt)
            end
            local dns, conn, head, fin = log[2][2], log[3][2], log[4][2], log[5][2]
            assert.equal("localhost", dns.host)
            assert.is_true(#dns.addresses >= 1)
            assert.is_true(dns.duration >= 0)
            assert.equal("127.0.0.1", conn.address)
            assert.equal(port, conn.port)
            assert.is_true(conn.duration >= 0)
            assert.equal(200, head.status)
            assert.equal("5", head.headers["content-length"])
            assert.is_true(head.ttfb >= conn.duration)
            assert.equal(200, fin.status)
            assert.equal(5, fin.bytes)
            assert.is_true(fin.duration >= head.ttfb)
            assert.is_nil(fin.retry)

            local n = #log
            assert(s:get(url))
            assert.same({ "on_request_start", "on_reuse", "on_response_headers", "on_request_end" }, names(log, n + 1))
        end)
    end)

    it("do not trace a lookup for an address, and follow each hop of a redirect", function()
        run(function()
            local srv <close>, port = app_with()
            local log = {}
            local s <close> = loom.session{ trace = recorder(log) }
            local base = "http://127.0.0.1:" .. port
            assert.equal("hello", assert(s:get(base .. "/redirect")):text())
            assert.same({ "on_request_start", "on_connect", "on_response_headers", "on_reuse", "on_response_headers",
                "on_request_end" }, names(log))
            assert.equal(302, log[3][2].status)
            assert.equal(base .. "/redirect", log[3][2].url)
            assert.equal(200, log[5][2].status)
            assert.equal(base .. "/hello", log[6][2].url)
        end)
    end)

    it("end a streamed response when its body has been read, or closed", function()
        run(function()
            local srv <close>, port = app_with{ ["/big"] = function() return string.rep("x", 300000) end }
            local log = {}
            local s <close> = loom.session{ trace = recorder(log) }
            local url = "http://127.0.0.1:" .. port .. "/big"
            local res = assert(s:get(url, { stream = true }))
            assert.same({ "on_request_start", "on_connect", "on_response_headers" }, names(log))
            local n = 0
            for piece in res:chunks() do n = n + #piece end
            assert.equal(300000, n)
            assert.same({ "on_request_start", "on_connect", "on_response_headers", "on_request_end" }, names(log))
            assert.equal(300000, log[4][2].bytes)
            local from = #log + 1
            res = assert(s:get(url, { stream = true }))
            assert.equal(300000, #res:text())
            res:close()
            assert.same({ "on_request_start", "on_reuse", "on_response_headers", "on_request_end" }, names(log, from))
            assert.equal(300000, log[#log][2].bytes)
            from = #log + 1
            res = assert(s:get(url, { stream = true }))
            res:close()
            assert.same({ "on_request_start", "on_reuse", "on_response_headers", "on_request_end" }, names(log, from))
            assert.equal(0, log[#log][2].bytes)
        end)
    end)

    it("report a failed request with its error", function()
        run(function()
            local log = {}
            local s <close> = loom.session{ trace = recorder(log) }
            local res, err = s:get("http://127.0.0.1:" .. closed_port() .. "/")
            assert.is_nil(res)
            assert.matches("^connect: ", err)
            assert.same({ "on_request_start", "on_request_error" }, names(log))
            assert.equal(err, log[2][2].error)
            assert.is_true(log[2][2].duration >= 0)
        end)
    end)

    it("a hook that raises is printed with its traceback and the request goes on", function()
        run(function()
            local srv <close>, port = app_with()
            local ends = 0
            local s <close> = loom.session{ trace = {
                on_request_start = function() error("hook bug") end,
                on_request_end = function() ends = ends + 1 end,
            } }
            local res
            local out = capture_stderr(function() res = s:get("http://127.0.0.1:" .. port .. "/hello") end)
            assert.equal("hello", assert(res):text())
            assert.equal(1, ends)
            assert.matches("loom: error in client hook on_request_start: .*hook bug", out.text)
            assert.matches("stack traceback:", out.text, 1, true)
        end)
    end)

    it("raise for an unknown hook or one that is not a function", function()
        assert.has_error(function() loom.session{ trace = { on_reqest_start = print } } end,
            "bad argument #1 to 'session' (unknown option 'trace.on_reqest_start')")
        assert.has_error(function() loom.session{ trace = { on_dns = true } } end,
            "bad argument #1 to 'session' (option 'trace.on_dns': function expected, got boolean)")
    end)
end)

describe("trace hooks over TLS", function()
    local dir, port, pid
    setup(function()
        dir = util.tmpdir()
        assert(os.execute("bash spec/fixtures/client_certs.sh " .. dir))
        port = util.free_port()
        pid = util.start_process("python3 spec/fixtures/client_tls_server.py " .. port .. " " .. dir
            .. "/server.pem " .. dir .. "/server.key", port)
    end)
    teardown(function()
        util.stop_process(pid)
        if dir then os.execute("rm -rf " .. dir) end
    end)

    it("on_tls follows on_connect, with the name verified and the handshake's duration", function()
        run(function()
            local log = {}
            local s <close> = loom.session{ tls = { ca_file = dir .. "/ca.pem" }, trace = recorder(log) }
            assert.equal("hello tls", assert(s:get("https://localhost:" .. port .. "/")):text())
            assert.same({ "on_request_start", "on_dns", "on_connect", "on_tls", "on_response_headers",
                "on_request_end" }, names(log))
            local tls = log[4][2]
            assert.equal("localhost", tls.server_name)
            assert.is_true(tls.duration > 0)
        end)
    end)
end)

describe("client middleware", function()
    it("runs outermost first, may change the request, and sees the call once across redirects", function()
        run(function()
            local srv <close>, port, hits = app_with()
            local order = {}
            local s <close> = loom.session()
            s:use(function(req, next)
                order[#order + 1] = "a " .. req.method .. " " .. req.url
                req.headers["x-a"] = "1"
                local res, err = next(req)
                order[#order + 1] = "a done " .. res.status
                return res, err
            end)
            s:use(function(req, next)
                order[#order + 1] = "b " .. tostring(req.headers["x-a"])
                req.url = req.url:gsub("/redirect%?q=1$", "/redirect")
                return next(req)
            end)
            local base = "http://127.0.0.1:" .. port
            local res = assert(s:get(base .. "/redirect", { query = { q = "1" }, timeout = 5 }))
            assert.equal("hello", res:text())
            assert.same({ "a GET " .. base .. "/redirect?q=1", "b 1", "a done 200" }, order)
            assert.equal(1, hits["/redirect"])
            local body = assert(s:post(base .. "/echo", { json = { k = 1 } })):json()
            assert.equal("POST", body.method)
            assert.equal("1", body.headers["x-a"])
            assert.equal('{"k":1}', body.body)
        end)
    end)

    it("may short-circuit with its own answer or an error", function()
        run(function()
            local srv <close>, port, hits = app_with()
            local s <close> = loom.session()
            local cached = { status = 200, text = function() return "cached" end }
            s:use(function(req, next)
                if req.url:find("/cached$") then return cached end
                if req.method == "DELETE" then return nil, "http: deletes are off" end
                return next(req)
            end)
            local base = "http://127.0.0.1:" .. port
            assert.equal(cached, s:get(base .. "/cached"))
            local res, err = s:delete(base .. "/hello")
            assert.is_nil(res)
            assert.equal("http: deletes are off", err)
            assert.is_nil(hits["/hello"])
            assert.equal("hello", assert(s:head(base .. "/hello")) and assert(s:get(base .. "/hello")):text())
            assert.equal(2, hits["/hello"])
        end)
    end)

    it("raises for a middleware that is not a function", function()
        local s <close> = loom.session()
        assert.has_error(function() s:use("x") end, "bad argument #1 to 'use' (function expected, got string)")
    end)
end)

describe("retry", function()
    it("waits as Retry-After: 1 says on a 503, then returns the next answer", function()
        run(function()
            local srv <close>, port, hits, times = app_with{ ["/busy"] = function(_, n)
                if n == 1 then return { status = 503, headers = { ["retry-after"] = "1" }, body = "busy" } end
                return "ok"
            end }
            local log = {}
            local s <close> = loom.session{ retry = { attempts = 3 }, trace = recorder(log) }
            local res = assert(s:get("http://127.0.0.1:" .. port .. "/busy"))
            assert.equal("ok", res:text())
            assert.equal(2, hits["/busy"])
            assert.is_true(times["/busy"][2] - times["/busy"][1] >= 0.95)
            local ends = {}
            for _, e in ipairs(log) do
                if e[1] == "on_request_end" then ends[#ends + 1] = e[2] end
            end
            assert.equal(503, ends[1].status)
            assert.equal(1, ends[1].retry)
            assert.equal(2, ends[2].attempt)
            assert.is_nil(ends[2].retry)
        end)
    end)

    it("reads an HTTP-date Retry-After, capped by max_backoff", function()
        run(function()
            local srv <close>, port, hits, times = app_with{ ["/busy"] = function(_, n)
                if n == 1 then
                    return { status = 429, headers = { ["retry-after"] = os.date("!%a, %d %b %Y %H:%M:%S GMT",
                        os.time() + 3600) } }
                end
                return "ok"
            end }
            local s <close> = loom.session{ retry = { max_backoff = 0.3 } }
            assert.equal("ok", assert(s:get("http://127.0.0.1:" .. port .. "/busy")):text())
            assert.is_true(times["/busy"][2] - times["/busy"][1] >= 0.29)
        end)
    end)

    it("makes `attempts` tries, the backoff doubling each time, and returns the last answer", function()
        run(function()
            local srv <close>, port, hits, times = app_with{ ["/down"] = function()
                return { status = 503, body = "down" }
            end }
            local s <close> = loom.session{ retry = { attempts = 4, backoff = 0.1, jitter = false } }
            local res = assert(s:get("http://127.0.0.1:" .. port .. "/down"))
            assert.equal(503, res.status)
            assert.equal("down", res:text())
            assert.equal(4, hits["/down"])
            local t = times["/down"]
            assert.is_true(t[2] - t[1] >= 0.1 - 0.01)
            assert.is_true(t[3] - t[2] >= 0.2 - 0.01)
            assert.is_true(t[4] - t[3] >= 0.4 - 0.01)
        end)
    end)

    it("retries idempotent methods only, unless asked; a streamed body never", function()
        run(function()
            local srv <close>, port, hits = app_with{ ["/down"] = function() return { status = 503 } end }
            local url = "http://127.0.0.1:" .. port .. "/down"
            local s <close> = loom.session{ retry = { attempts = 2, backoff = 0 } }
            assert.equal(503, assert(s:post(url, { body = "x" })).status)
            assert.equal(1, hits["/down"])
            assert.equal(503, assert(s:put(url, { body = "x" })).status)
            assert.equal(3, hits["/down"])
            assert.equal(503, assert(s:post(url, { body = "x", retry = { attempts = 2, backoff = 0,
                methods = "all" } })).status)
            assert.equal(5, hits["/down"])
            assert.equal(503, assert(s:get(url, { retry = false })).status)
            assert.equal(6, hits["/down"])
            assert.equal(503, assert(s:post(url, { retry = { attempts = 3, backoff = 0, methods = { "post" } } })).status)
            assert.equal(9, hits["/down"])
            local once = true
            local body = function() if once then once = false; return "x" end end
            assert.equal(503, assert(s:put(url, { body = body })).status)
            assert.equal(10, hits["/down"])
        end)
    end)

    it("retries connection failures and returns the last error", function()
        run(function()
            local log = {}
            local s <close> = loom.session{ retry = { attempts = 3, backoff = 0.01 }, trace = recorder(log) }
            local res, err = s:get("http://127.0.0.1:" .. closed_port() .. "/")
            assert.is_nil(res)
            assert.matches("^connect: ", err)
            assert.same({ "on_request_start", "on_request_error", "on_request_start", "on_request_error",
                "on_request_start", "on_request_error" }, names(log))
            assert.is_number(log[2][2].retry)
            assert.equal(3, log[6][2].attempt)
            assert.is_nil(log[6][2].retry)
        end)
    end)

    it("stops when the next wait would outlast the call's total timeout", function()
        run(function()
            -- a 60 s wait against a 30 s timeout, both far past the hang guard: a client that
            -- waited (for either) cannot pass, however slow the machine
            local srv <close>, port, hits = app_with{ ["/busy"] = function()
                return { status = 503, headers = { ["retry-after"] = "60" } }
            end }
            local s <close> = loom.session{ retry = { max_backoff = 120 } }
            local t0 = loom.now()
            local res = assert(s:get("http://127.0.0.1:" .. port .. "/busy", { timeout = 30 }))
            assert.equal(503, res.status)
            assert.equal(1, hits["/busy"])
            local took = loom.now() - t0
            assert.is_true(took < timing.guard(0), "answered after " .. took .. " s")
        end)
    end)

    it("raises for a bad policy, naming the option", function()
        assert.has_error(function() loom.session{ retry = { attempts = 0 } } end,
            "bad argument #1 to 'session' (option 'retry.attempts': positive integer expected)")
        assert.has_error(function() loom.session{ retry = { tries = 2 } } end,
            "bad argument #1 to 'session' (unknown option 'retry.tries')")
        assert.has_error(function() loom.session{ retry = { methods = "some" } } end,
            "bad argument #1 to 'session' (option 'retry.methods': \"all\" or a list of methods expected)")
        assert.has_error(function() loom.session{ retry = { on = { "oops" } } } end,
            "bad argument #1 to 'session' (option 'retry.on': unknown error kind 'oops')")
        run(function()
            local s <close> = loom.session()
            assert.has_error(function() s:get("http://127.0.0.1:1/", { retry = { backoff = "1" } }) end,
                "bad argument #2 to 'get' (option 'retry.backoff': number expected, got string)")
        end)
    end)
end)

describe("upload progress", function()
    it("counts a streamed body's pieces as they go, and a string body once sent", function()
        run(function()
            local srv <close>, port = app_with()
            local url = "http://127.0.0.1:" .. port .. "/echo"
            local seen = {}
            local pieces = { "aaaa", "bb", "c" }
            local i = 0
            local res = assert(loom.fetch(url, { method = "PUT", body = function()
                i = i + 1
                return pieces[i]
            end, progress = function(sent, total) seen[#seen + 1] = { sent, total } end }))
            assert.equal("aaaabbc", res:json().body)
            assert.same({ { 4 }, { 6 }, { 7 } }, seen)
            local via = {}
            local s <close> = loom.session{ trace = { on_upload_progress = function(sent, total)
                via[#via + 1] = { sent, total }
            end } }
            assert(s:post(url, { body = "12345" }))
            assert.same({ { 5, 5 } }, via)
        end)
    end)
end)
