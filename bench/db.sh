#!/usr/bin/env bash
# bench/db.sh: the database figures (issue 14), run by bench/run.sh like every bench/*.sh:
# loom.pg and loom.redis beside Node pg/ioredis, aiohttp + asyncpg and nginx +
# lua-resty-redis on a real PostgreSQL and Redis. The work is bench/db/run.py (its
# docstring has the method); ROUNDS and SECS as for the other shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/db/run.py --rounds "${ROUNDS:-3}" --secs "${SECS:-5}" "$@"
