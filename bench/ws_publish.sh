#!/usr/bin/env bash
# bench/ws_publish.sh: run by bench/run.sh (make bench) with the other bench/*.sh: app:publish
# to 10 000 subscribers against Node's ws broadcasting in a loop (bench/ws_publish/README.md).
# LOOM_BUILD, CONNS, COUNT and SIZE as bench/ws_publish/run.sh takes them.
set -euo pipefail
exec bash "$(dirname "$0")/ws_publish/run.sh"
