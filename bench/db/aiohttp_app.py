"""bench/db/aiohttp_app.py PORT DATABASE_URL POOL: the database shapes of
bench/db/loom_app.lua as an aiohttp user writes them, with asyncpg (a pool of POOL
connections; asyncpg prepares and caches statements itself). /queries runs its n queries
on one connection, one after the other, as TechEmpower's aiohttp entry does. Started by
bench/db/run.py pinned to one core."""
import html, json, random, sys

import asyncpg
from aiohttp import web

PORT, DB_URL, POOL = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
WORLD = "select id, randomnumber from world where id = $1"


async def db(request):
    async with request.app["pool"].acquire() as c:
        row = await c.fetchrow(WORLD, random.randint(1, 10000))
    return web.Response(text=json.dumps({"id": row["id"], "randomNumber": row["randomnumber"]}),
                        content_type="application/json")


async def queries(request):
    try:
        n = int(request.query.get("n") or request.query.get("queries") or 1)
    except ValueError:
        n = 1
    n = min(max(n, 1), 500)
    out = []
    async with request.app["pool"].acquire() as c:
        st = await c.prepare(WORLD)
        for _ in range(n):
            row = await st.fetchrow(random.randint(1, 10000))
            out.append({"id": row["id"], "randomNumber": row["randomnumber"]})
    return web.Response(text=json.dumps(out), content_type="application/json")


async def fortunes(request):
    async with request.app["pool"].acquire() as c:
        rows = [(r["id"], r["message"]) for r in await c.fetch("select id, message from fortune")]
    rows.append((0, "Additional fortune added at request time."))
    rows.sort(key=lambda r: r[1])
    parts = ["<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
             "<tr><th>id</th><th>message</th></tr>"]
    for i, m in rows:
        parts.append("<tr><td>%d</td><td>%s</td></tr>" % (i, html.escape(m)))
    parts.append("</table></body></html>")
    return web.Response(text="".join(parts), content_type="text/html", charset="utf-8")


async def startup(app):
    app["pool"] = await asyncpg.create_pool(DB_URL, min_size=POOL, max_size=POOL)


async def cleanup(app):
    await app["pool"].close()


app = web.Application()
app.router.add_get("/db", db)
app.router.add_get("/queries", queries)
app.router.add_get("/fortunes", fortunes)
app.on_startup.append(startup)
app.on_cleanup.append(cleanup)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None)
