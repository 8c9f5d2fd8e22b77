-- wrk -s bench/wrk_paced.lua: each connection waits 1 ms after an answer before its next
-- request, so the offered load is set by the connection count (about 35 000 req/s at 50
-- connections here) and neither side saturates; p99 then compares servers at equal load.
function delay() return 1 end
