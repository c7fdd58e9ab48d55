#!/usr/bin/env bash
# 100,000 idle sessions on this machine (issue 21, target 2), held by a
# Switchyard cluster: one process cannot, because the open-file limit
# (`ulimit -Hn`, 20,000 here, not raisable without CAP_SYS_RESOURCE) caps the
# sockets of a router and of a load generator alike. So NODES cluster nodes
# over one NATS server (JetStream on: the cluster keeps a record of every
# session in a KV bucket, and every node watches all of it) each take
# SESSIONS / NODES idle WebSocket sessions from their own load-generator
# process (`switchyard-bench idle --hold-file`), and all of them are held at
# the same time. While they are held, the script checks:
#   - the established connections to the nodes' ports (`ss`): all SESSIONS;
#   - `wamp.session.count` asked on node 1: the cluster-wide count, SESSIONS
#     (plus the checking session itself), from node 1's view of the bucket;
# and prints each node's RSS growth, the NATS server's, and their sum per
# session. Then the generators let go and must find every session still up.
#
# Usage: bench/idle-cluster.sh
# Environment:
#   SESSIONS=100000   idle sessions in all
#   NODES=            nodes (default: enough for at most 17,000 sessions each)
#   BASE_PORT=19280   nodes on BASE_PORT+1..NODES, NATS on BASE_PORT
#   NO_BUILD=1 ROUTER=PATH BENCH=PATH NATS_SERVER=PATH OUT=DIR  as bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-100000}
PER_NODE_MAX=17000
NODES=${NODES:-$(((SESSIONS + PER_NODE_MAX - 1) / PER_NODE_MAX))}
BASE=${BASE_PORT:-19280}
SCALE=1
OUT=${OUT:-$(mktemp -d /tmp/switchyard-idle-cluster.XXXXXX)}
mkdir -p "$OUT"
source bench/lib.sh
bench_binaries
find_nats_server

per_node=$(((SESSIONS + NODES - 1) / NODES))
if ((per_node + 200 > $(ulimit -n))); then
    echo "$per_node sessions per node do not fit under the open-file limit ($(ulimit -n)): raise NODES" >&2
    exit 2
fi
NATS_PORT=$BASE
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/nats-store" >"$OUT/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_port "$NATS_PORT" "$NATS_PID" "$OUT/nats.log"

declare -a NODE_PID
for n in $(seq "$NODES"); do
    port=$((BASE + n))
    cat >"$OUT/n$n.toml" <<TOML
[[listener]]
type = "websocket"
address = "127.0.0.1:$port"
path = "/ws"

[[realm]]
name = "realm1"

[limits]
max_connections_per_address = 0

[storage]
data_dir = "$OUT/data-n$n"

[cluster]
node = "n$n"
nats = ["nats://127.0.0.1:$NATS_PORT"]
TOML
    "$ROUTER" --config "$OUT/n$n.toml" >"$OUT/n$n.log" 2>&1 &
    NODE_PID[n]=$!
    PIDS+=("${NODE_PID[n]}")
    wait_port "$port" "${NODE_PID[n]}" "$OUT/n$n.log"
done
sleep 2
nats_before=$(rss_kib "$NATS_PID")
declare -a BEFORE GEN
for n in $(seq "$NODES"); do BEFORE[n]=$(rss_kib "${NODE_PID[n]}"); done

echo "# $SESSIONS idle WebSocket sessions over $NODES cluster nodes ($per_node each) and one NATS server; results in $OUT"
HOLD="$OUT/release"
t0=$(date +%s)
left=$SESSIONS
for n in $(seq "$NODES"); do
    k=$((left < per_node ? left : per_node))
    left=$((left - k))
    "$BENCH" idle --url "ws://127.0.0.1:$((BASE + n))/ws" --sessions "$k" \
        --server-pid "${NODE_PID[n]}" --hold-file "$HOLD" --hold-max 600 --json \
        >"$OUT/gen$n.out" 2>&1 &
    GEN[n]=$!
    PIDS+=("${GEN[n]}")
done
# Wait until every generator has its sessions up (its result line), or fails.
deadline=$((t0 + 900))
for n in $(seq "$NODES"); do
    until grep -q '^{' "$OUT/gen$n.out" 2>/dev/null; do
        if ! kill -0 "${GEN[n]}" 2>/dev/null; then
            echo "generator $n ended early:" >&2
            tail -5 "$OUT/gen$n.out" >&2
            exit 1
        fi
        if (($(date +%s) > deadline)); then
            echo "generator $n: sessions not up within 900 s" >&2
            exit 1
        fi
        sleep 1
    done
done
echo "all sessions up after $(($(date +%s) - t0)) s"
sleep 5 # the last claims and the bucket's watchers settle

established=$(ss -Htn state established "( sport > :$BASE and sport <= :$((BASE + NODES)) )" | wc -l)
count=$("$ROUTER" call wamp.session.count --url "ws://127.0.0.1:$((BASE + 1))/ws" 2>"$OUT/count.err" || echo "error: $(tail -1 "$OUT/count.err")")
total_growth=0
for n in $(seq "$NODES"); do
    after=$(rss_kib "${NODE_PID[n]}")
    growth=$((after - BEFORE[n]))
    total_growth=$((total_growth + growth))
    echo "node n$n: RSS ${BEFORE[n]} -> $after KiB; its generator: $(grep -v '^{' "$OUT/gen$n.out" | tail -1)"
done
nats_after=$(rss_kib "$NATS_PID")
echo "nats-server: RSS $nats_before -> $nats_after KiB"
echo "established connections to the nodes: $established (expected $SESSIONS)"
echo "wamp.session.count on node n1 (cluster-wide): $count (expected $((SESSIONS + 1)), the asking session included)"
python3 - "$SESSIONS" "$total_growth" "$((nats_after - nats_before))" <<'PY'
import sys
n, nodes, nats = int(sys.argv[1]), int(sys.argv[2]) * 1024, int(sys.argv[3]) * 1024
print(f"routers' RSS growth: {nodes / 2**20:,.0f} MiB = {nodes / n:,.0f} bytes per session; "
      f"with NATS's: {(nodes + nats) / 2**20:,.0f} MiB = {(nodes + nats) / n:,.0f} bytes per session")
PY
touch "$HOLD"
FAILED=0
for n in $(seq "$NODES"); do
    wait "${GEN[n]}" || { echo "generator $n: $(tail -1 "$OUT/gen$n.out")"; FAILED=1; }
done
[[ "$established" -eq "$SESSIONS" ]] || FAILED=1
[[ "$count" =~ ^[0-9]+$ && "$count" -eq $((SESSIONS + 1)) ]] || FAILED=1
if [[ $FAILED -ne 0 ]]; then
    echo "FAILED (see above and $OUT)"
    exit 1
fi
echo "PASS: $SESSIONS idle sessions held at once, every one still up at the end"
