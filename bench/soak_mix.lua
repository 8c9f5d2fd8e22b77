-- wrk script for bench/soak_server.py: a fixed mix of requests, round robin per
-- connection thread, each answer checked. Of every 20 requests: 8 hello, 5 JSON,
-- 3 of 64 KiB, 4 uploads (40 000-byte bodies, read by the app with req:chunks()).
-- done() prints one line: "soak_mix: checked=N bad=M" (bad: a 2xx answer whose body is
-- not what that request should get; wrk counts non-2xx and socket errors itself).
local UPLOAD = ("u"):rep(40000)
local MIX = { "hello", "json", "hello", "big", "upload", "hello", "json", "hello", "upload",
    "big", "hello", "json", "upload", "hello", "json", "big", "hello", "upload", "json", "hello" }

local reqs, expect = {}, {}
local i = 0
-- globals: done() reads them from each thread with thread:get
checked, bad = 0, 0
seen = { hello = 0, json = 0, big = 0, upload = 0 }

function init(args)
    reqs.hello = wrk.format("GET", "/")
    reqs.json = wrk.format("GET", "/json?page=2")
    reqs.big = wrk.format("GET", "/big")
    reqs.upload = wrk.format("POST", "/upload", { ["Content-Type"] = "application/octet-stream" }, UPLOAD)
    expect.hello = function(body) return body == "Hello, World!" end
    expect.json = function(body) return body:find('"name":"soak"', 1, true) ~= nil end
    expect.big = function(body) return #body == 65536 end
    expect.upload = function(body) return body == tostring(#UPLOAD) end
end

-- wrk calls request() for each request it sends and response() for each answer, but a
-- thread's connections interleave, so an answer is not matched to its request: it must be
-- one of the bodies the mix can get, and the counts per kind are printed.
function request()
    i = i + 1
    return reqs[MIX[(i - 1) % #MIX + 1]]
end

function response(status, headers, body)
    if status < 200 or status > 299 then return end
    checked = checked + 1
    for kind, f in pairs(expect) do
        if f(body) then
            seen[kind] = seen[kind] + 1
            return
        end
    end
    bad = bad + 1
end

local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
end

function done(summary, latency, requests)
    local c, b = 0, 0
    local s = { hello = 0, json = 0, big = 0, upload = 0 }
    for _, t in ipairs(threads) do
        c = c + t:get("checked")
        b = b + t:get("bad")
        for k in pairs(s) do s[k] = s[k] + t:get("seen")[k] end
    end
    io.write(("soak_mix: checked=%d bad=%d hello=%d json=%d big=%d upload=%d\n"):format(
        c, b, s.hello, s.json, s.big, s.upload))
end
