-- wrk script: POST a multipart/form-data body with one 1 MiB file part (built once).
-- Usage: wrk -t1 -c50 -d5s -s multipart.lua http://127.0.0.1:PORT/multipart
local boundary = "----loombench7MA4YWxkTrZu0gW"
local data = string.rep("0123456789abcdef", 65536) -- 1 MiB
wrk.method = "POST"
wrk.body = "--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="file"; filename="a.bin"\r\n'
    .. "Content-Type: application/octet-stream\r\n\r\n" .. data .. "\r\n--" .. boundary .. "--\r\n"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
