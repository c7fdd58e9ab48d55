#!/usr/bin/env bash
# Holds as many idle sessions as this machine's open-file limit allows
# (SESSIONS, default 19,000 under a 20,000 limit) on one router per transport
# and prints the router's memory per idle session (issue 21, target 2).
#
# Usage: bench/idle-max.sh
# Environment:
#   SESSIONS=19000     idle sessions to open (each is one socket in the router
#                      and one in the load generator: keep it under `ulimit -n`)
#   ROUTER, BENCH      binaries (default target/release/..., built unless NO_BUILD)
#   WS_PORT=18090, RS_PORT=18091
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-19000}
WS_PORT=${WS_PORT:-18090}
RS_PORT=${RS_PORT:-18091}
if [[ -z "${NO_BUILD:-}" && -z "${ROUTER:-}" ]]; then
    cargo build --release -p switchyard -p switchyard-bench
fi
ROUTER=${ROUTER:-target/release/switchyard}
BENCH=${BENCH:-target/release/switchyard-bench}
limit=$(ulimit -n)
if ((SESSIONS + 100 > limit)); then
    echo "SESSIONS=$SESSIONS does not fit under the open-file limit ($limit); raise it (ulimit -n) or lower SESSIONS" >&2
    exit 2
fi
D=$(mktemp -d /tmp/switchyard-idle-max.XXXXXX)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
for kind in ws rs; do
    rm -rf "$D/data"
    mkdir -p "$D/data"
    cat >"$D/router.toml" <<T
[[listener]]
type = "websocket"
address = "127.0.0.1:$WS_PORT"
path = "/ws"

[[listener]]
type = "rawsocket"
address = "127.0.0.1:$RS_PORT"

[[realm]]
name = "realm1"

[limits]
# All sessions come from 127.0.0.1.
max_connections_per_address = 0

[storage]
data_dir = "$D/data"
T
    "$ROUTER" --config "$D/router.toml" >"$D/router-$kind.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$RS_PORT") 2>/dev/null && break
        sleep 0.1
    done
    if [[ $kind == ws ]]; then url=ws://127.0.0.1:$WS_PORT/ws; else url=rs://127.0.0.1:$RS_PORT; fi
    echo "## $kind: load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$BENCH idle --url $url --sessions $SESSIONS --server-pid $pid --json"
    timeout 300 "$BENCH" idle --url "$url" --sessions "$SESSIONS" --server-pid "$pid" --json
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
done
