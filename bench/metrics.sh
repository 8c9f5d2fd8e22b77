#!/usr/bin/env bash
# bench/metrics.sh: app:metrics on against off (and the access log's formats), server CPU per
# request on the hello world; see bench/metrics.py. ROUNDS and SECS as bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 bench/metrics.py --rounds "${ROUNDS:-3}" --secs "${SECS:-5}"
