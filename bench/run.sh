#!/usr/bin/env bash
# make bench: loom measured beside its peers in one invocation, on loopback.
# Uses the team's harness (../shared/bench/run_peers.py) when it is there, and
# bench/peers.py otherwise. ROUNDS and SECS tune the server runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
SHARED=${LOOM_PEER_BENCH:-../shared/bench}

if [ -f bench/tasks.lua ]; then
    echo "== tasks"
    ./build/loom bench/tasks.lua
fi
echo "== server hello world"
if [ -f "$SHARED/run_peers.py" ]; then
    python3 "$SHARED/run_peers.py" server --rounds "$ROUNDS" --secs "$SECS" --only c-ceiling,nginx+lua,node,loom
else
    python3 bench/peers.py server --rounds "$ROUNDS" --secs "$SECS"
fi
echo "== idle keep-alive connections"
python3 bench/peers.py idle --conns 10000
echo "== client"
if [ -f "$SHARED/run_peers.py" ]; then
    python3 "$SHARED/run_peers.py" client --rounds "$ROUNDS"
else
    python3 bench/client/run.py --rounds "$ROUNDS"
fi
for extra in bench/*.sh; do
    case "$extra" in bench/run.sh) ;; *) echo "== $extra"; bash "$extra" ;; esac
done
