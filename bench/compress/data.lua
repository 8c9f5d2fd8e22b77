-- bench/compress/data.lua: the 20 KB JSON answer of bench/compress, the same table in loom
-- and in nginx+Lua (each encodes it per request with its own encoder).
local rows = {}
for i = 1, 120 do
    rows[i] = { id = i, name = "user " .. i, email = ("user%d@example.com"):format(i),
        active = i % 3 ~= 0, score = (i * 7919) % 1000, tags = { "alpha", "beta", i % 2 == 0 and "even" or "odd" },
        bio = "Lorem ipsum dolor sit amet, consectetur adipiscing elit." }
end
return { users = rows, total = #rows }
