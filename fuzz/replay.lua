-- fuzz/replay.lua DRIVER INPUT...: runs a Lua target's driver (fuzz/fuzz_<x>.lua) on saved
-- inputs in stock lua5.4, without the fuzzer or the sanitizers: a quick look at a finding.
--   lua5.4 fuzz/replay.lua fuzz/fuzz_url.lua build-fuzz/crashes/fuzz_url-crash-<sha1>
-- Lua files come from fuzz/ and lua/ beside this file, loom.core from $LOOM_BUILD (build).
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
local root = dir .. "/.."
package.path = dir .. "/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("LOOM_BUILD") or root .. "/build") .. "/lua/?.so;" .. package.cpath

if #arg < 2 then
    io.stderr:write("usage: lua5.4 fuzz/replay.lua DRIVER INPUT...\n")
    os.exit(2)
end
local driver = dofile(arg[1])
local failed = 0
for i = 2, #arg do
    local f = assert(io.open(arg[i], "rb"))
    local data = f:read("a")
    f:close()
    local ok, err = xpcall(driver, debug.traceback, data)
    print((ok and "ok    " or "FAIL  ") .. arg[i])
    if not ok then
        print(err)
        failed = failed + 1
    end
end
os.exit(failed == 0 and 0 or 1)
