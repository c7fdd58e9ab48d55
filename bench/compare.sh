#!/usr/bin/env bash
# Compares two router builds on the same scenarios, interleaved: each round
# runs every scenario once against A then B (B then A on even rounds), so
# that the machine's drift (other load, thermal, page cache) falls on both.
# Prints the median of each figure per build and the ratio B/A.
#
# Usage: bench/compare.sh ROUTER_A ROUTER_B [scenario...]
#   ROUTER_A, ROUTER_B  two `switchyard` binaries (e.g. a release build of
#                       the previous commit, from `git worktree add`, and
#                       target/release/switchyard)
#   scenarios           as bench/run.sh (default: pubsub10-ws-json rpc-ws-json
#                       rpc-rs-msgpack)
# Environment:
#   ROUNDS=3          interleaved rounds (the median is over ROUNDS runs)
#   BENCH=PATH        the load generator, the same for both (default:
#                     target/release/switchyard-bench, built if NO_BUILD unset)
#   SCALE, WORKERS, WS_PORT, RS_PORT as bench/run.sh
#   OUT=DIR           where results go (default: a new dir under /tmp)
#   LOCK=FILE         hold this lock (flock) during each build's turn of a
#                     round, not for the whole comparison, so that other
#                     benchmarks sharing the lock run between turns
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 2 ]]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
A=$(realpath "$1")
B=$(realpath "$2")
shift 2
SCENARIOS=("$@")
if [[ ${#SCENARIOS[@]} -eq 0 ]]; then
    SCENARIOS=(pubsub10-ws-json rpc-ws-json rpc-rs-msgpack)
fi
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$(mktemp -d /tmp/switchyard-compare.XXXXXX)}
if [[ -z "${NO_BUILD:-}" && -z "${BENCH:-}" ]]; then
    cargo build --release -p switchyard-bench
fi
BENCH=$(realpath "${BENCH:-target/release/switchyard-bench}")
mkdir -p "$OUT/A" "$OUT/B"

echo "# A = $A"
echo "# B = $B"
echo "# $ROUNDS interleaved rounds of: ${SCENARIOS[*]}; results in $OUT"
for round in $(seq "$ROUNDS"); do
    order=(A B)
    if ((round % 2 == 0)); then order=(B A); fi
    for which in "${order[@]}"; do
        bin=$A
        [[ $which == B ]] && bin=$B
        dir="$OUT/$which/round$round"
        echo "## round $round: $which"
        lock=()
        [[ -n ${LOCK:-} ]] && lock=(flock "$LOCK")
        ROUTER=$bin BENCH=$BENCH NO_BUILD=1 RUNS=1 OUT=$dir "${lock[@]}" bash bench/run.sh "${SCENARIOS[@]}" |
            grep -E '^(##|  run|[a-z0-9-]+:)' | sed 's/^/  /' || true
        for s in "${SCENARIOS[@]}"; do
            cat "$dir/$s.jsonl" >>"$OUT/$which/$s.jsonl" 2>/dev/null || true
        done
    done
done

echo
echo "# medians over $ROUNDS rounds (A, B, B/A)"
for s in "${SCENARIOS[@]}"; do
    for which in A B; do
        "$BENCH" summarize --label "$s" --json "$OUT/$which/$s.jsonl" | grep '^{' >"$OUT/$which/$s.summary.json" || true
    done
    python3 - "$s" "$OUT/A/$s.summary.json" "$OUT/B/$s.summary.json" <<'PY'
import json, sys
name, fa, fb = sys.argv[1:]
try:
    a, b = json.load(open(fa)), json.load(open(fb))
except (OSError, ValueError):
    print(f"{name}: no results"); sys.exit(0)
keys = ["deliveries_per_s", "calls_per_s", "sessions_per_s", "cycles_per_s",
        "latency_p50_us", "latency_p99_us",
        "deliveries_per_server_cpu_s", "calls_per_server_cpu_s",
        "server_us_per_session", "server_us_per_cycle", "bytes_per_session"]
parts = []
for k in keys:
    if k in a and k in b:
        x, y = a[k]["median"], b[k]["median"]
        parts.append(f"{k} {x:,.0f} -> {y:,.0f} ({y / x:.3f})" if x else f"{k} {x} -> {y}")
print(f"{name}: " + "; ".join(parts))
PY
done
