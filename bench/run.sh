#!/usr/bin/env bash
# Builds the router and the load generator in release mode, starts the router
# on loopback ports, runs each scenario several times and prints the median
# (with min..max) of each figure. Stops the router at the end.
#
# Usage: bench/run.sh [scenario...]
#   Scenarios (default: all): idle-rs idle-ws (router memory per idle
#   session, a fresh router per run) pubsub10-ws-json pubsub10-rs-msgpack
#   pubsub1000-rs-msgpack pubsub10000-rs-msgpack
#   pubsub10-noise100k-{exact,prefix,wildcard} (1->10 beside 100,000 subscriptions that do not match)
#   rpc-rs-msgpack rpc-ws-json rpc-seq-rs-msgpack rpc-seq-ws-json
#   rpc-seq-rs-msgpack-1cpu (router and bench confined to CPU 0)
#   rpc-shared4-rs-msgpack rpc-shared4-seq-rs-msgpack (4 callees sharing one
#   registration, roundrobin; INVOKE=random|least_loaded|first|last to change)
#   sessions-ws-json sessions-rs-msgpack (sessions established per second:
#   1000 sessions, 100 handshakes at once, 5 rounds) cycles-ws-json
#   cycles-rs-msgpack (connect-subscribe-leave cycles per second, 4 at once)
#   baseline baseline-1cpu (a bare TCP ping-pong without the router: the
#   machine's round-trip floor, across CPUs and on one CPU)
# Environment:
#   RUNS=5            runs per scenario (the median is reported)
#   WS_PORT=18080     WebSocket listener port
#   RS_PORT=18081     RawSocket listener port
#   SCALE=1           multiply message counts (e.g. 0.2 for a quick check)
#   IDLE_SESSIONS=4000  sessions of idle-rs/idle-ws (unscaled; each is one
#                     socket in the router and one in the load generator, so
#                     at most the open-file limit, `ulimit -n`, minus ~100)
#   WORKERS=0         router worker threads ([runtime] worker_threads; 0 = one per CPU)
#   NO_BUILD=1        skip cargo build
#   OUT=DIR           keep result files in DIR (default: a new dir under /tmp)
#   ROUTER=PATH BENCH=PATH  binaries to use (default: target/release/...)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
WS_PORT=${WS_PORT:-18080}
RS_PORT=${RS_PORT:-18081}
SCALE=${SCALE:-1}
OUT=${OUT:-$(mktemp -d /tmp/switchyard-bench.XXXXXX)}
mkdir -p "$OUT"

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release -p switchyard -p switchyard-bench
fi
ROUTER=${ROUTER:-target/release/switchyard}
BENCH=${BENCH:-target/release/switchyard-bench}

scaled() { # scaled N -> N*SCALE as an integer (at least 1)
    awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); if (v < 1) v = 1; print v }'
}

cat >"$OUT/router.toml" <<EOF
[[listener]]
type = "websocket"
address = "127.0.0.1:$WS_PORT"
path = "/ws"

[[listener]]
type = "rawsocket"
address = "127.0.0.1:$RS_PORT"

[[realm]]
name = "realm1"
# The noise scenarios hold 100,000 subscriptions in one session.
max_subscriptions_per_session = 100000
max_subscriptions = 200000

[limits]
outbound_queue = 65536
# The load generator opens up to 10,000 connections from one address.
max_connections_per_address = 0

[runtime]
worker_threads = ${WORKERS:-0}

[storage]
data_dir = "$OUT/data"
EOF

WS_URL="ws://127.0.0.1:$WS_PORT/ws"
RS_URL="rs://127.0.0.1:$RS_PORT"

PID=
stop_router() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
}
trap stop_router EXIT

start_router() {
    stop_router
    "$ROUTER" --config "$OUT/router.toml" >>"$OUT/router.log" 2>&1 &
    PID=$!
    # Wait (bounded) for both listeners.
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$WS_PORT") 2>/dev/null &&
            (exec 3<>"/dev/tcp/127.0.0.1/$RS_PORT") 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "router failed to start:" >&2
        cat "$OUT/router.log" >&2
        exit 1
    fi
}
start_router

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "# router pid $PID, results in $OUT, $RUNS runs per scenario"

FAILED=0
run_scenario() { # run_scenario NAME bench-args...
    local name=$1
    shift
    local file="$OUT/$name.jsonl"
    : >"$file"
    echo "## $name: $BENCH $* --server-pid $PID --json"
    for i in $(seq "$RUNS"); do
        local rc=0
        timeout 300 "$BENCH" "$@" --server-pid "$PID" --json >"$OUT/$name.$i.out" 2>&1 || rc=$?
        grep -v '^{' "$OUT/$name.$i.out" | sed "s/^/  run $i: /" || true
        grep '^{' "$OUT/$name.$i.out" >>"$file" || true
        if [[ $rc -ne 0 ]]; then
            echo "  run $i: exit code $rc (2 = lost events, errors or time-out; 124 = killed by timeout)"
            FAILED=1
        fi
        if ! kill -0 "$PID" 2>/dev/null; then
            echo "ROUTER DIED during $name run $i; last log lines:" >&2
            tail -20 "$OUT/router.log" >&2
            exit 1
        fi
    done
    "$BENCH" summarize --label "$name" --json "$file" | tee -a "$OUT/summary.txt" | grep -v '^{'
}

run_baseline() { # run_baseline NAME extra-args...
    local name=$1
    shift
    local file="$OUT/$name.jsonl"
    : >"$file"
    echo "## $name: $BENCH baseline --round-trips $(scaled 20000) $* --json"
    for i in $(seq "$RUNS"); do
        "$BENCH" baseline --round-trips "$(scaled 20000)" "$@" --json >"$OUT/$name.$i.out" 2>&1 || FAILED=1
        grep -v '^{' "$OUT/$name.$i.out" | sed "s/^/  run $i: /" || true
        grep '^{' "$OUT/$name.$i.out" >>"$file" || true
    done
    "$BENCH" summarize --label "$name" --json "$file" | tee -a "$OUT/summary.txt" | grep -v '^{'
}

ALL=(idle-rs idle-ws pubsub10-ws-json pubsub10-rs-msgpack pubsub1000-rs-msgpack pubsub10000-rs-msgpack
    pubsub10-noise100k-exact pubsub10-noise100k-prefix pubsub10-noise100k-wildcard rpc-rs-msgpack rpc-ws-json
    rpc-seq-rs-msgpack rpc-seq-ws-json rpc-seq-rs-msgpack-1cpu rpc-shared4-rs-msgpack rpc-shared4-seq-rs-msgpack
    sessions-ws-json sessions-rs-msgpack cycles-ws-json cycles-rs-msgpack
    baseline baseline-1cpu)
SCENARIOS=("$@")
if [[ ${#SCENARIOS[@]} -eq 0 ]]; then
    SCENARIOS=("${ALL[@]}")
fi

for s in "${SCENARIOS[@]}"; do
    case "$s" in
    pubsub10-ws-json)
        run_scenario "$s" pubsub --url "$WS_URL" --serializer json --subscribers 10 \
            --publishes "$(scaled 100000)" --in-flight 32 --payload 64 ;;
    pubsub10-rs-msgpack)
        run_scenario "$s" pubsub --url "$RS_URL" --serializer msgpack --subscribers 10 \
            --publishes "$(scaled 100000)" --in-flight 32 --payload 64 ;;
    pubsub1000-rs-msgpack)
        run_scenario "$s" pubsub --url "$RS_URL" --serializer msgpack --subscribers 1000 \
            --publishes "$(scaled 2000)" --in-flight 32 --payload 64 ;;
    pubsub10000-rs-msgpack)
        run_scenario "$s" pubsub --url "$RS_URL" --serializer msgpack --subscribers 10000 \
            --publishes "$(scaled 200)" --in-flight 32 --payload 64 --timeout 300 ;;
    pubsub10-noise100k-exact | pubsub10-noise100k-prefix | pubsub10-noise100k-wildcard)
        run_scenario "$s" pubsub --url "$RS_URL" --serializer msgpack --subscribers 10 \
            --publishes "$(scaled 100000)" --in-flight 32 --payload 64 \
            --noise "$(scaled 100000)" --noise-match "${s##*-}" ;;
    rpc-rs-msgpack)
        run_scenario "$s" rpc --url "$RS_URL" --serializer msgpack --callers 4 --in-flight 16 \
            --calls "$(scaled 300000)" --payload 64 ;;
    rpc-ws-json)
        run_scenario "$s" rpc --url "$WS_URL" --serializer json --callers 4 --in-flight 16 \
            --calls "$(scaled 200000)" --payload 64 ;;
    rpc-seq-rs-msgpack)
        run_scenario "$s" --threads 1 rpc --url "$RS_URL" --serializer msgpack --callers 1 --in-flight 1 \
            --calls "$(scaled 10000)" --payload 64 ;;
    rpc-seq-ws-json)
        run_scenario "$s" --threads 1 rpc --url "$WS_URL" --serializer json --callers 1 --in-flight 1 \
            --calls "$(scaled 10000)" --payload 64 ;;
    rpc-shared4-rs-msgpack)
        run_scenario "$s" rpc --url "$RS_URL" --serializer msgpack --callers 4 --in-flight 16 \
            --callees 4 --invoke "${INVOKE:-roundrobin}" --calls "$(scaled 300000)" --payload 64 ;;
    rpc-shared4-seq-rs-msgpack)
        run_scenario "$s" --threads 1 rpc --url "$RS_URL" --serializer msgpack --callers 1 --in-flight 1 \
            --callees 4 --invoke "${INVOKE:-roundrobin}" --calls "$(scaled 10000)" --payload 64 ;;
    sessions-ws-json)
        run_scenario "$s" --threads 1 sessions --url "$WS_URL" --serializer json --sessions 1000 \
            --concurrency 100 --rounds "$(scaled 5)" ;;
    sessions-rs-msgpack)
        run_scenario "$s" --threads 1 sessions --url "$RS_URL" --serializer msgpack --sessions 1000 \
            --concurrency 100 --rounds "$(scaled 5)" ;;
    cycles-ws-json)
        run_scenario "$s" cycles --url "$WS_URL" --serializer json --workers 4 \
            --cycles "$(scaled 10000)" ;;
    cycles-rs-msgpack)
        run_scenario "$s" cycles --url "$RS_URL" --serializer msgpack --workers 4 \
            --cycles "$(scaled 10000)" ;;
    rpc-seq-rs-msgpack-1cpu)
        # Router and bench confined to CPU 0: no wake-ups across CPUs, which on
        # this VM cost ~30 us each (see the baseline). Informational.
        taskset -a -p -c 0 "$PID" >/dev/null
        run_scenario "$s" --threads 1 rpc --url "$RS_URL" --serializer msgpack --callers 1 \
            --in-flight 1 --calls "$(scaled 10000)" --payload 64 --pin-cpu 0
        taskset -a -p -c "0-$(($(nproc) - 1))" "$PID" >/dev/null ;;
    idle-rs | idle-ws)
        # Memory per idle session, on a fresh router for every run (memory
        # freed by earlier runs would otherwise be reused and hide the cost).
        url=$RS_URL
        [[ $s == idle-ws ]] && url=$WS_URL
        file="$OUT/$s.jsonl"
        : >"$file"
        idle=${IDLE_SESSIONS:-$(scaled 4000)}
        if ((idle + 100 > $(ulimit -n))); then
            echo "$s: IDLE_SESSIONS=$idle does not fit under the open-file limit ($(ulimit -n)); skipped" >&2
            FAILED=1
            continue
        fi
        echo "## $s: $BENCH idle --url $url --sessions $idle --server-pid \$PID --json (fresh router each run)"
        for i in $(seq "$RUNS"); do
            start_router
            "$BENCH" idle --url "$url" --sessions "$idle" --server-pid "$PID" --json >"$OUT/$s.$i.out" 2>&1 || FAILED=1
            grep -v '^{' "$OUT/$s.$i.out" | sed "s/^/  run $i: /" || true
            grep '^{' "$OUT/$s.$i.out" >>"$file" || true
        done
        "$BENCH" summarize --label "$s" --json "$file" | tee -a "$OUT/summary.txt" | grep -v '^{'
        start_router ;;
    baseline)
        # No router involved: a bare TCP ping-pong, the floor for round trips.
        run_baseline "$s" ;;
    baseline-1cpu)
        run_baseline "$s" --pin-cpu 0 ;;
    *)
        echo "unknown scenario $s (known: ${ALL[*]})" >&2
        exit 1 ;;
    esac
done

echo "# medians (min..max) over $RUNS runs:"
grep -v '^{' "$OUT/summary.txt" 2>/dev/null || echo "(no results)"
if [[ $FAILED -ne 0 ]]; then
    echo "# some runs reported lost events, errors or time-outs (see above)"
    exit 2
fi
