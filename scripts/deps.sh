#!/usr/bin/env bash
# scripts/deps.sh [--bench] [--stress]: install what loom needs to build and test.
#
# On Debian/Ubuntu, installs with apt-get only the packages dpkg does not
# have (as root, or through sudo), running `apt-get update` first only when
# something is missing. --bench adds what bench/run.sh drives, --stress what
# scripts/stress_suite.sh loads the machine with. Elsewhere,
# prints the list and succeeds if the commands loom needs are present.
# Prints one line on success.
set -euo pipefail

packages=(build-essential cmake pkg-config lua5.4 liblua5.4-dev libuv1-dev node-llhttp
          libmbedtls-dev zlib1g-dev libbrotli-dev lua-cjson lua-busted luarocks curl openssl python3 publicsuffix
          python3-requests python3-brotli python3-prometheus-client valgrind clang clang-format libclang-rt-14-dev
          python3-websockets chromium nodejs libnghttp2-dev nghttp2-client
          postgresql-15 libpq-dev redis-server lua-nginx-redis nginx)
bench_packages=(wrk nginx libnginx-mod-http-lua nodejs python3-aiohttp python3-asyncpg)
commands=(cc cmake pkg-config lua5.4 busted luarocks curl openssl python3)

# The browser test installs playwright-core with npm: Debian packages npm apart from nodejs,
# while a nodejs from elsewhere (NodeSource) brings its own and conflicts with Debian's.
command -v npm >/dev/null 2>&1 || packages+=(npm)

for a in "$@"; do
    case $a in
        --bench) packages+=("${bench_packages[@]}"); commands+=(wrk nginx node) ;;
        --stress) packages+=(stress-ng); commands+=(stress-ng) ;;
        -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "deps.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: not a Debian/Ubuntu system; install the equivalents of:" >&2
    echo "  ${packages[*]}" >&2
    missing=()
    for c in "${commands[@]}"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    if ((${#missing[@]})); then
        echo "deps: missing commands: ${missing[*]}" >&2
        exit 1
    fi
    echo "deps: needed commands present"
    exit 0
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    echo "deps: all ${#packages[@]} packages present"
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "deps: missing ${missing[*]}; run as root or install sudo" >&2
        exit 1
    fi
fi

log=$(mktemp "${TMPDIR:-/tmp}/loom-deps.XXXXXX")
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -q &&
       "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "deps: apt-get failed installing: ${missing[*]}" >&2
    exit 1
fi
echo "deps: installed ${missing[*]}"
