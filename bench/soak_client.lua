-- The client side of bench/soak_client.py:
--   build/loom bench/soak_client.lua PORT WARMUP COUNT TASKS PER_HOST PAUSE
-- WARMUP fetches, a PAUSE-second rest, then COUNT fetches, then another rest: each by
-- TASKS tasks through one session (max_per_host = PER_HOST) against the drop server of
-- soak_client.py. Every fetch asks for /item?id=N, a unique N, and checks the body (what
-- body_of gives; soak_client.py builds the same). It prints, a line each, to stdout:
--   phase NAME                 warm-up, pause, soak, rest: where the samples belong
--   fail ID ERR                a fetch that returned nil, err
--   bad ID STATUS BYTES        a fetch that returned a response with the wrong body
--   done PHASE OK FAILED BAD SECS OPENED REUSED
local loom = rawget(_G, "loom") or require "loom"

local port, warmup, count, ntasks, per_host, pause =
    tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6])
io.stdout:setvbuf("line")

local base = "http://127.0.0.1:" .. port .. "/item?id="
local s <close> = loom.session{ max_per_host = per_host }

-- The body the server sends for id: keep in step with body_of in soak_client.py.
local function body_of(id)
    return ("item %d\n"):format(id) .. ("x"):rep((id * 7919) % 20000)
end

local next_id = 0

local function run(phase, n)
    print("phase " .. phase)
    local left, ok, failed, bad = n, 0, 0, 0
    local function worker()
        while left > 0 do
            left = left - 1
            next_id = next_id + 1
            local id = next_id
            local res, err = s:get(base .. id)
            if not res then
                failed = failed + 1
                print(("fail %d %s"):format(id, err))
            else
                local body = res:text()
                if res.status == 200 and body == body_of(id) then
                    ok = ok + 1
                else
                    bad = bad + 1
                    print(("bad %d %d %d"):format(id, res.status, #body))
                end
            end
        end
    end
    local workers = {}
    for i = 1, ntasks do workers[i] = worker end
    local t0 = loom.now()
    loom.gather(table.unpack(workers))
    local st = s:stats()
    print(("done %s %d %d %d %.3f %d %d"):format(phase, ok, failed, bad, loom.now() - t0, st.opened, st.reused))
end

run("warm-up", warmup)
print("phase pause")
loom.sleep(pause)
run("soak", count)
print("phase rest")
loom.sleep(pause)
