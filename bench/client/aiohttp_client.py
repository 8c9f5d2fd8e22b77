# aiohttp ClientSession: N GETs, C in flight; prints requests per second.
import asyncio, sys, time, aiohttp

async def main(url, n, c):
    left = [n]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as s:
        async def worker():
            while left[0] > 0:
                left[0] -= 1
                async with s.get(url) as r:
                    assert await r.text() == "Hello, World!"
        t0 = time.monotonic()
        await asyncio.gather(*[worker() for _ in range(c)])
        print("%.0f" % (n / (time.monotonic() - t0)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
