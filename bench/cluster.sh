#!/usr/bin/env bash
# Cluster mode against one node, measured in the same run (issue 15): a NATS
# server and three Switchyard nodes on loopback, and one plain node beside
# them. Rounds are interleaved (every scenario once per round) and each
# figure is the median over the rounds.
#
# Usage: bench/cluster.sh [scenario...]
#   fanout-1node     1 publisher -> 1000 subscribers, all on one plain node (no [cluster])
#   fanout-3nodes    the same with the subscribers spread over three nodes
#                    (publisher on n1); also NATS messages per publication
#   rpc-1node        4 callers x 16 in flight, caller and callee on one plain node
#   rpc-same         the same in cluster mode, caller and callee on node n1
#   rpc-cross        callers on n1, the callee on n2 (every call crosses NATS twice)
#   rpc-seq-same     1 caller, 1 call in flight, same node: latency p50/p99
#   rpc-seq-cross    the same across nodes: the difference is the cross-node hop
#   (default: all)
# Environment:
#   ROUNDS=3 interleaved rounds; SCALE=1 multiplies message counts;
#   BASE_PORT=19080 (nodes on BASE_PORT+1..3, the plain node on BASE_PORT,
#   NATS on BASE_PORT+10, its monitoring on BASE_PORT+11);
#   NO_BUILD=1 skip the release build; ROUTER=PATH BENCH=PATH binaries;
#   NATS_SERVER=PATH (default: nats-server on PATH, installed by
#   scripts/install-nats.sh); OUT=DIR results (default: a new dir under /tmp).
# Server CPU is the sum over every process that serves (the nodes and NATS).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-1}
BASE=${BASE_PORT:-19080}
OUT=${OUT:-$(mktemp -d /tmp/switchyard-cluster-bench.XXXXXX)}
mkdir -p "$OUT"
source bench/lib.sh
bench_binaries
find_nats_server

NATS_PORT=$((BASE + 10))
MON_PORT=$((BASE + 11))

node_config() { # node_config NAME PORT [cluster]
    cat <<TOML
[[listener]]
type = "websocket"
address = "127.0.0.1:$2"
path = "/ws"

[[realm]]
name = "realm1"

[limits]
outbound_queue = 65536
max_connections_per_address = 0

[storage]
data_dir = "$OUT/data-$1"
TOML
    if [[ "${3:-}" == cluster ]]; then
        printf '\n[cluster]\nnode = "%s"\nnats = ["nats://127.0.0.1:%s"]\n' "$1" "$NATS_PORT"
    fi
}

"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -m "$MON_PORT" -js -sd "$OUT/nats-store" >"$OUT/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_port "$NATS_PORT" "$NATS_PID" "$OUT/nats.log"

declare -A NODE_PID
start_node() { # start_node NAME PORT [cluster]
    node_config "$@" >"$OUT/$1.toml"
    "$ROUTER" --config "$OUT/$1.toml" >"$OUT/$1.log" 2>&1 &
    NODE_PID[$1]=$!
    PIDS+=("${NODE_PID[$1]}")
    wait_port "$2" "${NODE_PID[$1]}" "$OUT/$1.log"
}
start_node single "$BASE"
for i in 1 2 3; do start_node "n$i" $((BASE + i)) cluster; done
URL() { echo "ws://127.0.0.1:$(($BASE + $1))/ws"; }
CLUSTER_PIDS="${NODE_PID[n1]},${NODE_PID[n2]},${NODE_PID[n3]},$NATS_PID"

nats_msgs() { # in_msgs out_msgs of the NATS server
    python3 - "$MON_PORT" <<'PY'
import json, sys, urllib.request
v = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/varz", timeout=5))
print(v["in_msgs"], v["out_msgs"])
PY
}

ALL=(fanout-1node fanout-3nodes rpc-1node rpc-same rpc-cross rpc-seq-same rpc-seq-cross)
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=("${ALL[@]}")
FANOUT=(pubsub --serializer json --subscribers 1000 --publishes "$(scaled 2000)" --in-flight 32 --payload 64)
RPC=(rpc --serializer json --callers 4 --in-flight 16 --calls "$(scaled 100000)" --payload 64)
SEQ=(--threads 1 rpc --serializer json --callers 1 --in-flight 1 --calls "$(scaled 5000)" --payload 64)

run() { # run SCENARIO ROUND
    local s=$1 i=$2 args
    case "$s" in
    fanout-1node) args=("${FANOUT[@]}" --url "$(URL 0)" --server-pid "${NODE_PID[single]}") ;;
    fanout-3nodes) args=("${FANOUT[@]}" --url "$(URL 1)" --sub-url "$(URL 1),$(URL 2),$(URL 3)" --server-pid "$CLUSTER_PIDS") ;;
    rpc-1node) args=("${RPC[@]}" --url "$(URL 0)" --server-pid "${NODE_PID[single]}") ;;
    rpc-same) args=("${RPC[@]}" --url "$(URL 1)" --server-pid "$CLUSTER_PIDS") ;;
    rpc-cross) args=("${RPC[@]}" --url "$(URL 1)" --callee-url "$(URL 2)" --server-pid "$CLUSTER_PIDS") ;;
    rpc-seq-same) args=("${SEQ[@]}" --url "$(URL 1)" --server-pid "$CLUSTER_PIDS") ;;
    rpc-seq-cross) args=("${SEQ[@]}" --url "$(URL 1)" --callee-url "$(URL 2)" --server-pid "$CLUSTER_PIDS") ;;
    *) echo "unknown scenario $s (see the header of $0)" >&2; exit 2 ;;
    esac
    local before after
    before=$(nats_msgs)
    timeout 300 "$BENCH" "${args[@]}" --json >"$OUT/$s.$i.out" 2>&1 || echo "  $s round $i: exit code $? (see $OUT/$s.$i.out)"
    after=$(nats_msgs)
    grep -v '^{' "$OUT/$s.$i.out" | sed "s/^/  $s round $i: /" || true
    grep '^{' "$OUT/$s.$i.out" >>"$OUT/$s.jsonl" || true
    read -r in0 out0 <<<"$before"
    read -r in1 out1 <<<"$after"
    echo "{\"scenario\": \"$s\", \"nats_in\": $((in1 - in0)), \"nats_out\": $((out1 - out0))}" >>"$OUT/$s.nats.jsonl"
}

echo "# machine: $(nproc) cores; nats-server $("$NATS_SERVER" --version 2>&1 | head -1); results in $OUT"
echo "# bench: $BENCH; router: $ROUTER"
for i in $(seq "$ROUNDS"); do
    for s in "${SCENARIOS[@]}"; do run "$s" "$i"; done
done

python3 - "$OUT" "$(scaled 2000)" "${SCENARIOS[@]}" <<'PY'
import json, statistics, sys, os
out, publishes, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def rows(path):
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("\n## medians")
figures = {}
for s in scenarios:
    r = rows(f"{out}/{s}.jsonl")
    n = rows(f"{out}/{s}.nats.jsonl")
    if not r:
        print(f"{s}: no result"); continue
    if r[0]["bench"] == "pubsub":
        f = {"deliveries/s": med([x["deliveries_per_s"] for x in r]),
             "deliveries per server CPU-s": med([x["deliveries_per_server_cpu_s"] or 0 for x in r]),
             "lost": sum(x["lost"] for x in r), "duplicates": sum(x["duplicates"] for x in r),
             "NATS msgs in per publication": med([x["nats_in"] / publishes for x in n]),
             "NATS msgs out per publication": med([x["nats_out"] / publishes for x in n])}
    else:
        f = {"calls/s": med([x["calls_per_s"] for x in r]),
             "calls per server CPU-s": med([x["calls_per_server_cpu_s"] or 0 for x in r]),
             "p50 us": med([x["latency_p50_us"] for x in r]), "p99 us": med([x["latency_p99_us"] for x in r]),
             "errors": sum(x["errors"] for x in r)}
    figures[s] = f
    print(f"{s}: " + ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in f.items()))
def ratio(a, b, k):
    if a in figures and b in figures and figures[a].get(k):
        print(f"{b} / {a}, {k}: {figures[b][k] / figures[a][k]:.2f}")
print("\n## ratios")
ratio("fanout-1node", "fanout-3nodes", "deliveries/s")
ratio("fanout-1node", "fanout-3nodes", "deliveries per server CPU-s")
ratio("rpc-1node", "rpc-same", "calls/s")
ratio("rpc-same", "rpc-cross", "calls/s")
ratio("rpc-same", "rpc-cross", "calls per server CPU-s")
if "rpc-seq-same" in figures and "rpc-seq-cross" in figures:
    for k in ("p50 us", "p99 us"):
        print(f"cross-node hop, {k}: {figures['rpc-seq-cross'][k] - figures['rpc-seq-same'][k]:+,.1f}")
PY
