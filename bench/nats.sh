#!/usr/bin/env bash
# PubSub fan-out against NATS core in the same run (issue 21): one Switchyard
# router and one NATS server (Debian's nats-server, installed by
# scripts/install-nats.sh when missing) run side by side; each round runs the
# same fan-out against both, the order alternating between rounds, and the
# medians and the ratios Switchyard / NATS are printed at the end.
#
# The fan-out: 1 publisher -> 10 subscriber connections, 64-byte payloads,
# 32 acknowledged publishes in flight. Switchyard: `switchyard-bench pubsub`
# over WebSocket/JSON (PUBLISH with acknowledge, PUBLISHED back). NATS:
# `switchyard-bench pubsub-nats`, where each PUB is followed by a PING and
# its PONG is the acknowledgement (bench/src/nats.rs says why that is the
# equivalent). Server CPU is the router's or the NATS server's (--server-pid).
#
# The subscribers of both systems are the bench's lean ones by default
# (--lean-subscribers: one TCP stream each, the frames parsed in place,
# bench/src/lean_sub.rs), equally lean for both, so that the load
# generator's share of the two cores does not favour either server; and so
# is Switchyard's publisher (--lean-publisher, bench/src/lean_pub.rs: one
# TCP stream, PUBLISH pre-encoded, PUBLISHED parsed in place), as NATS's
# always is. The library clients (switchyard_client, async-nats) as
# subscribers and switchyard_client as publisher with LIBRARY_SUBSCRIBERS=1.
#
# Usage: bench/nats.sh
# Environment:
#   ROUNDS=5          interleaved rounds (the median is over ROUNDS runs)
#   SCALE=1           multiply the message count (100,000 publishes)
#   SUBSCRIBERS=10    subscriber connections
#   BASE_PORT=19180   router WebSocket on BASE_PORT, NATS on BASE_PORT+1
#   NO_BUILD=1        skip cargo build; ROUTER=PATH BENCH=PATH binaries to use
#   NATS_SERVER=PATH  default: nats-server (scripts/install-nats.sh)
#   LIBRARY_SUBSCRIBERS=1  the client libraries as subscribers (and WAMP publisher),
#                     not the lean ones
#   OUT=DIR           results (default: a new dir under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SCALE=${SCALE:-1}
SUBSCRIBERS=${SUBSCRIBERS:-10}
BASE=${BASE_PORT:-19180}
OUT=${OUT:-$(mktemp -d /tmp/switchyard-nats-bench.XXXXXX)}
mkdir -p "$OUT"
source bench/lib.sh
bench_binaries
find_nats_server
PUBLISHES=$(scaled 100000)

WS_PORT=$BASE
NATS_PORT=$((BASE + 1))

cat >"$OUT/router.toml" <<EOF
[[listener]]
type = "websocket"
address = "127.0.0.1:$WS_PORT"
path = "/ws"

[[realm]]
name = "realm1"

[limits]
outbound_queue = 65536
max_connections_per_address = 0

[storage]
data_dir = "$OUT/data"
EOF
"$ROUTER" --config "$OUT/router.toml" >"$OUT/switchyard.log" 2>&1 &
ROUTER_PID=$!
PIDS+=("$ROUTER_PID")
wait_port "$WS_PORT" "$ROUTER_PID" "$OUT/switchyard.log"
# NATS core as Debian ships it: no JetStream, no monitoring port.
"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_port "$NATS_PORT" "$NATS_PID" "$OUT/nats.log"

COMMON=(--subscribers "$SUBSCRIBERS" --publishes "$PUBLISHES" --in-flight 32 --payload 64 --json)
SW_EXTRA=()
if [[ "${LIBRARY_SUBSCRIBERS:-0}" != 1 ]]; then
    COMMON+=(--lean-subscribers)
    # NATS's publisher is always the hand-written one (bench/src/nats.rs).
    SW_EXTRA+=(--lean-publisher)
fi
FAILED=0
run() { # run SYSTEM ROUND
    local s=$1 i=$2 args
    case "$s" in
    switchyard) args=(pubsub --url "ws://127.0.0.1:$WS_PORT/ws" --serializer json --server-pid "$ROUTER_PID" "${COMMON[@]}" ${SW_EXTRA[@]+"${SW_EXTRA[@]}"}) ;;
    nats) args=(pubsub-nats --nats "127.0.0.1:$NATS_PORT" --server-pid "$NATS_PID" "${COMMON[@]}") ;;
    esac
    local rc=0
    timeout 300 "$BENCH" "${args[@]}" >"$OUT/$s.$i.out" 2>&1 || rc=$?
    grep -v '^{' "$OUT/$s.$i.out" | sed "s/^/  $s round $i: /" || true
    grep '^{' "$OUT/$s.$i.out" >>"$OUT/$s.jsonl" || true
    if [[ $rc -ne 0 ]]; then
        echo "  $s round $i: exit code $rc (2 = lost events, errors or time-out)"
        FAILED=1
    fi
}

echo "# machine: $(nproc) cores; $("$NATS_SERVER" --version 2>&1 | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# bench: $BENCH; router: $ROUTER; results in $OUT"
echo "# switchyard: $BENCH pubsub --url ws://127.0.0.1:$WS_PORT/ws --serializer json --server-pid ROUTER ${COMMON[*]} ${SW_EXTRA[*]-}"
echo "# nats:       $BENCH pubsub-nats --nats 127.0.0.1:$NATS_PORT --server-pid NATS ${COMMON[*]}"
for i in $(seq "$ROUNDS"); do
    order=(switchyard nats)
    if ((i % 2 == 0)); then order=(nats switchyard); fi
    for s in "${order[@]}"; do run "$s" "$i"; done
done
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" <<'PY'
import json, os, statistics, sys
out = sys.argv[1]
def rows(s):
    p = f"{out}/{s}.jsonl"
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
med = lambda xs: statistics.median(xs) if xs else float("nan")
fig = {}
print("\n## medians")
for s in ("switchyard", "nats"):
    r = rows(s)
    if not r:
        print(f"{s}: no result"); continue
    fig[s] = {"deliveries/s": med([x["deliveries_per_s"] for x in r]),
              "deliveries per server CPU-s": med([x["deliveries_per_server_cpu_s"] or 0 for x in r]),
              "server CPU s": med([x["server_cpu_s"] or 0 for x in r]),
              "bench CPU s": med([x["client_cpu_s"] or 0 for x in r])}
    per_round = ", ".join(f"{x['deliveries_per_s']:,.0f}" for x in r)
    print(f"{s} ({len(r)} runs, lost {sum(x['lost'] for x in r)}): "
          + ", ".join(f"{k} {v:,.2f}" if v < 100 else f"{k} {v:,.0f}" for k, v in fig[s].items())
          + f"; deliveries/s per round {per_round}")
if len(fig) == 2:
    print("\n## switchyard / nats")
    for k in ("deliveries/s", "deliveries per server CPU-s"):
        if fig["nats"][k]:
            print(f"{k}: {fig['switchyard'][k] / fig['nats'][k]:.3f}")
PY
exit $FAILED
