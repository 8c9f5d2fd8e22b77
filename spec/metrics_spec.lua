-- app:metrics(path) (issue 16 item 5): the Prometheus text exposition of the C counters,
-- read here by a real parser (Python's prometheus_client, Debian python3-prometheus-client)
-- after known requests over raw sockets: requests by method and status, the latency
-- histogram, bytes in (exact) and out, open connections (HTTP/1.1 and websocket), handler
-- errors and timeouts, the client sessions' pools and live tasks.
local loom = require "loom"
local core = require "loom.core"
local cjson = require "cjson"
local run = require "support.run"
local testing = require "loom.testing"

local GUARD = 10

-- The exposition through prometheus_client's parser -> {[sample name] = {{labels, value}}},
-- {[family name] = type}. Raises with the parser's complaint when it cannot read it.
local function parse(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    local p = assert(io.popen("/usr/bin/python3 -c '" .. [[
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples, types = {}, {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    types[fam.name] = fam.type
    for s in fam.samples:
        samples.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps({"samples": samples, "types": types}))
]] .. "' " .. path .. " 2>&1"))
    local out = p:read("a")
    p:close()
    os.remove(path)
    local ok, t = pcall(cjson.decode, out)
    assert(ok and type(t) == "table" and t.samples, "prometheus_client could not parse the scrape: " .. out)
    return t.samples, t.types
end

-- The value of the sample `name` whose labels include `labels`; nil when there is none.
local function value(samples, name, labels)
    for _, s in ipairs(samples[name] or {}) do
        local match = true
        for k, v in pairs(labels or {}) do
            if s[1][k] ~= v then match = false end
        end
        if match then return s[2] end
    end
end

local function response(r)
    local res, err = loom.timeout(GUARD, function() return r:response() end)
    assert(res, "no response: " .. tostring(err))
    return res
end

local function wait_until(cond, what)
    local deadline = loom.now() + GUARD
    while not cond() do
        if loom.now() > deadline then error("timed out waiting for " .. what, 2) end
        loom.sleep(0.005)
    end
end

-- /slow's 0.15 s is far below handler_timeout (2 s), which only /stuck reaches, so the two
-- cannot swap on a loaded machine
local HANDLER_TIMEOUT = 2

local function test_app()
    local app = loom.app{ handler_timeout = HANDLER_TIMEOUT }
    app:get("/hello", function() return "Hello, World!" end)
    app:get("/slow", function()
        loom.sleep(0.15)
        return "slow"
    end)
    app:get("/err", function() error("a bug") end)
    app:get("/stuck", function() loom.sleep(GUARD) end)
    app:ws("/ws", function(ws)
        while ws:receive() do end
    end)
    app:metrics("/metrics")
    return app
end

describe("app:metrics", function()
    it("exposes what the server counted, in a text a Prometheus parser reads", function()
        local app = test_app()
        local first, second
        local sent_in, bodies = 0, 0
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local _ <close> = run.defer(function() srv:close(0) end)
            local a = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = a
            local ra = testing.reader(a)
            local function ask(st, r, req)
                sent_in = sent_in + #req
                assert(st:write(req))
                local res = response(r)
                bodies = bodies + #res.body
                return res
            end
            local get = function(path) return "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n\r\n" end
            for _ = 1, 3 do assert.equal(200, ask(a, ra, get("/hello")).status) end
            assert.equal(405, ask(a, ra, "POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi").status)
            assert.equal(404, ask(a, ra, get("/nope")).status)
            assert.equal(500, ask(a, ra, get("/err")).status)
            assert.equal(200, ask(a, ra, get("/slow")).status)
            do -- handler_timeout: 503, and that connection closes
                local b = assert(loom.connect("127.0.0.1", srv.port))
                local rb = testing.reader(b)
                assert.equal(503, ask(b, rb, get("/stuck")).status)
                b:close()
            end
            wait_until(function() return srv.connections == 1 end, "the timed-out connection to go")
            local res = ask(a, ra, get("/metrics")) -- its request is counted before it runs
            assert.equal(200, res.status)
            assert.equal("text/plain; version=0.0.4; charset=utf-8", res.headers["content-type"])
            first = res.body

            -- a websocket, a task, and a client session whose connection is in use
            local ws = assert(loom.websocket("ws://127.0.0.1:" .. srv.port .. "/ws"))
            local _ <close> = run.defer(function() ws:close() end)
            local bg = loom.spawn(function() loom.sleep(GUARD) end)
            local _ <close> = run.defer(function() bg:cancel() end)
            local sess = loom.session()
            local _ <close> = run.defer(function() sess:close() end)
            local r2 = assert(sess:fetch("http://127.0.0.1:" .. srv.port .. "/metrics"))
            second = r2:text()
        end)

        local s, types = parse(first)
        assert.equal("counter", types.loom_http_requests)
        assert.equal("histogram", types.loom_http_request_duration_seconds)
        assert.equal(4, value(s, "loom_http_requests_total", { method = "GET", status = "200" }))
        assert.equal(1, value(s, "loom_http_requests_total", { method = "POST", status = "405" }))
        assert.equal(1, value(s, "loom_http_requests_total", { method = "GET", status = "404" }))
        assert.equal(1, value(s, "loom_http_requests_total", { method = "GET", status = "500" }))
        assert.equal(1, value(s, "loom_http_requests_total", { method = "GET", status = "503" }))
        assert.equal(5, #s.loom_http_requests_total)
        -- the histogram: 8 answers before the scrape, two of them slower than 0.1 s
        local count = value(s, "loom_http_request_duration_seconds_count")
        assert.equal(8, count)
        assert.equal(8, value(s, "loom_http_request_duration_seconds_bucket", { le = "+Inf" }))
        assert(value(s, "loom_http_request_duration_seconds_bucket", { le = "0.1" }) <= 6)
        assert(value(s, "loom_http_request_duration_seconds_sum") >= 0.15 + HANDLER_TIMEOUT)
        local prev = 0
        for _, b in ipairs(s.loom_http_request_duration_seconds_bucket) do
            assert(b[2] >= prev, "buckets must not go down")
            prev = b[2]
        end
        assert.equal(15, #s.loom_http_request_duration_seconds_bucket) -- prometheus_client's 14 and +Inf
        -- bytes: every request byte (the scrape's too); out, at least the bodies
        assert.equal(sent_in, value(s, "loom_http_received_bytes_total"))
        local out = value(s, "loom_http_sent_bytes_total")
        local before_scrape = bodies - #first
        assert(out > before_scrape + 8 * #"HTTP/1.1 200 OK\r\n\r\n" and out < before_scrape + 8 * 1000, out)
        assert.equal(1, value(s, "loom_http_handler_errors_total"))
        assert.equal(1, value(s, "loom_http_handler_timeouts_total"))
        assert.equal(1, value(s, "loom_http_open_connections", { protocol = "http1" }))
        assert.equal(0, value(s, "loom_http_open_connections", { protocol = "websocket" }))

        s = parse(second)
        assert.equal(1, value(s, "loom_http_requests_total", { method = "GET", status = "101" }))
        assert.equal(1, value(s, "loom_http_open_connections", { protocol = "websocket" }))
        -- the raw connection and the session's (the upgraded one left the server)
        assert.equal(2, value(s, "loom_http_open_connections", { protocol = "http1" }))
        assert(value(s, "loom_client_sessions") >= 1)
        assert(value(s, "loom_client_connections", { state = "active" }) >= 1)
        assert(value(s, "loom_client_connections_opened_total") >= 1)
        -- the sleeping task and the websocket's handler at least
        assert(value(s, "loom_tasks") >= 2)
        assert(value(s, "loom_lua_memory_bytes") > 0)
    end)

    it("counts the handler errors an on_error handler answers", function()
        local app = loom.app()
        app:get("/err", function() error("a bug") end)
        app:on_error(function() return { status = 502, text = "sorry" } end)
        app:metrics("/metrics")
        local text
        run(function()
            local client, srv = testing.client(app)
            local _ <close> = run.defer(function()
                client:close()
                srv:close(0)
            end)
            assert.equal(502, assert(client:get("/err")).status)
            text = assert(client:get("/metrics")).body
        end)
        local s = parse(text)
        assert.equal(1, value(s, "loom_http_handler_errors_total"))
        assert.equal(1, value(s, "loom_http_requests_total", { method = "GET", status = "502" }))
    end)

    it("counts nothing on a server of an app without it", function()
        local app = loom.app()
        app:get("/hello", function() return "Hello, World!" end)
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local _ <close> = run.defer(function() srv:close(0) end)
            assert.is_nil(core.http_stats(srv))
        end)
    end)

    it("raises on a bad path", function()
        local app = loom.app()
        assert.error_matches(function() app:metrics(42) end, "bad argument #1 to 'metrics' %(string expected, got number%)")
        assert.error_matches(function() app:metrics("metrics") end, "bad argument #1 to 'metrics' %(path must start with '/'%)")
    end)
end)

-- app:run{ workers = 2 } (spec/fixtures/metrics_workers.lua): a scrape reaches one worker
-- and shows both workers' counts, never fewer than a scrape before it showed, also after a
-- worker was killed and started again.
describe("app:metrics across workers", function()
    local util = require "support.client_util"
    local LOOM = os.getenv("LOOM_BIN") or "build/loom"
    local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
    local port, pid
    setup(function()
        port = util.free_port()
        pid = util.start_process(("exec %s %s/fixtures/metrics_workers.lua %d"):format(LOOM, HERE, port), port)
    end)
    teardown(function() util.stop_process(pid) end)

    -- one request on a connection of its own (so SO_REUSEPORT spreads them over the workers)
    local function get(path)
        local res, err = loom.fetch(("http://127.0.0.1:%d%s"):format(port, path),
            { headers = { connection = "close" }, timeout = GUARD })
        if not res then return nil, err end
        return res.status, res:text()
    end

    it("adds the workers' counts up, and a _total never goes down", function()
        run(function()
            local sent, seen, shown = 0, {}, {}
            local function hit()
                local status, body = get("/hit")
                if status == 201 then
                    sent = sent + 1
                    seen[body] = true
                end
                return status
            end
            -- the count of /hit's answers in one scrape; every scrape is kept to check the order
            local function scrape()
                local status, text = get("/metrics")
                assert.equal(200, status)
                local samples = parse(text)
                local n = value(samples, "loom_http_requests_total", { method = "GET", status = "201" }) or 0
                shown[#shown + 1] = n
                return n
            end
            -- the second worker may still be starting: hit until both have answered
            wait_until(function()
                hit()
                return seen["1"] and seen["2"] and sent >= 40
            end, "both workers to answer")
            wait_until(function() return scrape() == sent end, "a scrape to show all " .. sent .. " answers")
            -- both workers have written all they counted: kill the one that answers /pid
            local _, wpid = get("/pid")
            assert(tonumber(wpid), wpid)
            os.execute("kill -KILL " .. wpid)
            -- the supervisor starts it again; until then some connections find no listener
            seen = {}
            wait_until(function()
                hit()
                return seen["1"] and seen["2"]
            end, "both workers to answer again")
            for _ = 1, 10 do assert.equal(201, hit()) end
            wait_until(function() return scrape() == sent end, "a scrape to show all " .. sent .. " answers")
            for i = 2, #shown do
                assert.is_true(shown[i] >= shown[i - 1], ("scrape %d showed %s after %s"):format(i, shown[i], shown[i - 1]))
                assert.is_true(shown[i] <= sent, "more than were answered")
            end
        end, { timeout = 60 })
    end)
end)
