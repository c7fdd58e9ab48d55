#!/usr/bin/env bash
# Durable job queues, Switchyard against RabbitMQ on the same machine in the
# same run: builds both load generators and the router (release), starts a
# private RabbitMQ (bench/queue/setup-rabbitmq.sh) and the router, runs ROUNDS
# interleaved rounds of every parameter set on each system, and prints the
# medians (min..max) and a side-by-side table. Stops both servers at the end.
#
# Usage: bench/queue/run.sh [set...]
#   Sets (default: tput wide seq):
#     tput   P=4 producers x W=32 in flight, C=4 workers/consumers, 50,000 jobs
#     wide   P=8 x W=64, C=4, 100,000 jobs (more work in flight)
#     seq    P=1 x W=1, C=1, 2,000 jobs (one job at a time: latency)
#   Each set runs on: switchyard (embedded store); switchyard-js (cluster
#   mode: three nodes over one `nats-server -js`, `[cluster.queues] store =
#   "jetstream"`, the queue log with 1 replica); switchyard-js3 (three nodes
#   over a three-server NATS cluster, the log with 3 replicas: a push is
#   acknowledged once on a quorum); in both cluster systems one node (the
#   lease's winner, printed) owns the queue, and the producers and the
#   workers are spread over the three nodes in turn, the two others first
#   (producer i and worker i on the (i mod 3)-th; seq's one producer and
#   worker are on a node that forwards to the owner); rabbitmq (a classic durable queue, one
#   connection per producer and per consumer, like the Switchyard sessions);
#   for tput and wide also rabbitmq-1conn (the same with every channel on one
#   connection: lapin runs an I/O thread per connection, and one is cheaper
#   on two cores); and rabbitmq-quorum (a quorum queue; QUORUM=0 skips it).
# Environment:
#   ROUNDS=3              interleaved rounds (the median is reported)
#   SCALE=1               multiply job counts (e.g. 0.2 for a quick check)
#   QUEUE_CONCURRENCY=256 the Switchyard queue's `concurrency`; each worker
#                         registers with QUEUE_CONCURRENCY / C, and each
#                         RabbitMQ consumer gets that as its prefetch (with 64,
#                         Switchyard's dispatch falls behind its pushes: see
#                         docs/BENCHMARKS.md)
#   QUORUM=1              also run RabbitMQ with a quorum queue
#   WORKERS=0             router worker threads (0 = one per CPU)
#   RS_PORT=18091         the router's RawSocket port (loopback)
#   RABBITMQ_BENCH_PORT=17672  the broker's AMQP port (loopback)
#   NO_BUILD=1            skip cargo build
#   ROUTER=PATH BENCH=PATH RMQ_BENCH=PATH   binaries to use (default: the release builds)
#   ROUTER_REV=REV        the commit ROUTER was built from (printed only)
#   OUT=DIR               keep result files in DIR (default: a new dir under /tmp)
#   SYSTEMS="switchyard switchyard-js switchyard-js3 rabbitmq rabbitmq-1conn rabbitmq-quorum"
#                         run only these
#   CLUSTER_PORT=18100    the cluster systems' ports (loopback): switchyard-js
#                         nodes +1..+3, its NATS +10; switchyard-js3 nodes
#                         +21..+23, its NATS servers +30..+32 (routes +40..+42)
#   NATS_SERVER=PATH      nats-server (default: on PATH, scripts/install-nats.sh)
#   QUIET_IDLE=80 QUIET_WAIT=15   before each run, wait up to QUIET_WAIT s for
#                         the CPUs to be QUIET_IDLE % idle (the machine is shared)
#   FLOOR=1               before each round, measure the floor of one durable job
#                         at a time: a 4 KiB write + fdatasync in the store's
#                         directory (`switchyard-bench flush`, median) plus a bare
#                         loopback round trip (`switchyard-bench baseline`); the
#                         table compares seq's enqueue ack p50 with their sum
#   STRACE=1              after the rounds, count each server's fsync-family
#                         system calls and bytes written over one extra tput
#                         run of each (slow; not part of the figures)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-1}
QC=${QUEUE_CONCURRENCY:-256}
QUORUM=${QUORUM:-1}
RS_PORT=${RS_PORT:-18091}
SYSTEMS=${SYSTEMS:-switchyard switchyard-js switchyard-js3 rabbitmq rabbitmq-1conn rabbitmq-quorum}
CPORT=${CLUSTER_PORT:-18100}
RMQ_PORT=${RABBITMQ_BENCH_PORT:-17672}
export RABBITMQ_BENCH_PORT=$RMQ_PORT
OUT=${OUT:-$(mktemp -d /tmp/switchyard-queue-bench.XXXXXX)}
mkdir -p "$OUT"

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release -p switchyard -p switchyard-bench
    (cd bench/queue/rabbitmq-bench && cargo build --release --locked)
fi
[[ -n ${ROUTER:-} ]] && ROUTER_SET=1
ROUTER=${ROUTER:-$ROOT/target/release/switchyard}
BENCH=${BENCH:-$ROOT/target/release/switchyard-bench}
RMQ_BENCH=${RMQ_BENCH:-$ROOT/bench/queue/rabbitmq-bench/target/release/rabbitmq-bench}

# scaled, wait_port (its trap is replaced by stop_all below)
source bench/lib.sh

# ---- servers ----
RPID=
BPID=
CLUSTER_PIDS=() # every process of the cluster systems (nodes, NATS servers)
stop_all() {
    if [[ -n "$RPID" ]] && kill -0 "$RPID" 2>/dev/null; then
        kill "$RPID" 2>/dev/null || true
        wait "$RPID" 2>/dev/null || true
    fi
    for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${CLUSTER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    bench/queue/setup-rabbitmq.sh stop >/dev/null 2>&1 || true
    rm -rf "$OUT/data"
}
trap stop_all EXIT

mkdir -p "$OUT/data"
cat >"$OUT/router.toml" <<EOF
[[listener]]
type = "rawsocket"
address = "127.0.0.1:$RS_PORT"

[storage]
data_dir = "$OUT/data"

[[realm]]
name = "realm1"

[[realm.queue]]
name = "bench"
target = "bench.queue.work"
concurrency = $QC

[limits]
outbound_queue = 65536
max_connections_per_address = 0

[runtime]
worker_threads = ${WORKERS:-0}
EOF

if [[ " $SYSTEMS " == *" switchyard "* ]]; then
    "$ROUTER" --config "$OUT/router.toml" >>"$OUT/router.log" 2>&1 &
    RPID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$RS_PORT") 2>/dev/null && break
        sleep 0.1
    done
    if ! kill -0 "$RPID" 2>/dev/null; then
        echo "router failed to start:" >&2
        cat "$OUT/router.log" >&2
        exit 1
    fi
fi
# ---- the cluster systems: three nodes each, over one NATS server (R1) or a
# three-server NATS cluster (R3) ----
declare -A SYS_PIDS SYS_URLS SYS_OWNER
if [[ " $SYSTEMS " == *" switchyard-js"* ]]; then
    find_nats_server
fi
start_cluster() { # start_cluster SYSTEM NODE_BASE REPLICAS NATS_URL,...
    local sys=$1 base=$2 replicas=$3 nats=$4 i pids=() urls=() port
    local list servers
    IFS=, read -r -a servers <<<"$nats"
    for i in 1 2 3; do
        port=$((base + i))
        # Node i lists NATS server i first (with several).
        list=$(for k in "${!servers[@]}"; do
            echo "\"${servers[$(((k + i - 1) % ${#servers[@]}))]}\""
        done | paste -sd, -)
        mkdir -p "$OUT/data/$sys-n$i"
        cat >"$OUT/$sys-n$i.toml" <<TOML
[[listener]]
type = "rawsocket"
address = "127.0.0.1:$port"

[storage]
data_dir = "$OUT/data/$sys-n$i"

[[realm]]
name = "realm1"

[[realm.queue]]
name = "bench"
target = "bench.queue.work"
concurrency = $QC

[limits]
outbound_queue = 65536
max_connections_per_address = 0

[runtime]
worker_threads = ${WORKERS:-0}

[cluster]
node = "n$i"
nats = [$list]

[cluster.queues]
store = "jetstream"
replicas = $replicas
TOML
        "$ROUTER" --config "$OUT/$sys-n$i.toml" >>"$OUT/$sys-n$i.log" 2>&1 &
        CLUSTER_PIDS+=($!)
        pids+=($!)
        wait_port "$port" "$!" "$OUT/$sys-n$i.log"
        urls+=("rs://127.0.0.1:$port")
    done
    SYS_PIDS[$sys]=$(
        IFS=,
        echo "${pids[*]}"
    )
    SYS_URLS[$sys]=$(
        IFS=,
        echo "${urls[*]}"
    )
    # The node that won the queues' lease (it logs so once it dispatches).
    SYS_OWNER[$sys]=?
    for _ in $(seq 600); do
        for i in 1 2 3; do
            if grep -q 'queues recovered from the log; dispatching' "$OUT/$sys-n$i.log" 2>/dev/null; then
                SYS_OWNER[$sys]=n$i
            fi
        done
        [[ ${SYS_OWNER[$sys]} != "?" ]] && break
        sleep 0.1
    done
    if [[ ${SYS_OWNER[$sys]} == "?" ]]; then
        echo "$sys: no node took the queues within 60 s; logs in $OUT/$sys-n*.log" >&2
        exit 1
    fi
    # The owner's URL last: producer/worker i goes to the i-th in turn, so the first ones
    # (seq's only producer and worker) are on a node that forwards to the owner.
    local owner=${SYS_OWNER[$sys]#n} ordered=()
    for i in 1 2 3; do [[ $i != "$owner" ]] && ordered+=("${urls[$((i - 1))]}"); done
    ordered+=("${urls[$((owner - 1))]}")
    SYS_URLS[$sys]=$(
        IFS=,
        echo "${ordered[*]}"
    )
}
if [[ " $SYSTEMS " == *" switchyard-js "* ]]; then
    "$NATS_SERVER" -a 127.0.0.1 -p $((CPORT + 10)) -js -sd "$OUT/data/nats-js" >"$OUT/nats-js.log" 2>&1 &
    CLUSTER_PIDS+=($!)
    NATS1_PID=$!
    wait_port $((CPORT + 10)) "$NATS1_PID" "$OUT/nats-js.log"
    start_cluster switchyard-js "$CPORT" 1 "nats://127.0.0.1:$((CPORT + 10))"
    SYS_PIDS[switchyard-js]+=",$NATS1_PID"
fi
if [[ " $SYSTEMS " == *" switchyard-js3 "* ]]; then
    n3pids=()
    routes="nats-route://127.0.0.1:$((CPORT + 40)),nats-route://127.0.0.1:$((CPORT + 41)),nats-route://127.0.0.1:$((CPORT + 42))"
    for k in 0 1 2; do
        cat >"$OUT/nats3-$k.conf" <<CONF
server_name: "s$k"
listen: "127.0.0.1:$((CPORT + 30 + k))"
jetstream { store_dir: "$OUT/data/nats3-$k" }
cluster {
  name: "bench"
  listen: "127.0.0.1:$((CPORT + 40 + k))"
  routes: [$(echo "$routes" | sed 's/[^,]*/"&"/g')]
}
CONF
        "$NATS_SERVER" -c "$OUT/nats3-$k.conf" >"$OUT/nats3-$k.log" 2>&1 &
        CLUSTER_PIDS+=($!)
        n3pids+=($!)
    done
    for k in 0 1 2; do wait_port $((CPORT + 30 + k)) "${n3pids[$k]}" "$OUT/nats3-$k.log"; done
    # JetStream needs its meta leader before a stream can be made (the nodes retry meanwhile).
    start_cluster switchyard-js3 $((CPORT + 20)) 3 \
        "nats://127.0.0.1:$((CPORT + 30)),nats://127.0.0.1:$((CPORT + 31)),nats://127.0.0.1:$((CPORT + 32))"
    SYS_PIDS[switchyard-js3]+=",$(
        IFS=,
        echo "${n3pids[*]}"
    )"
fi

RMQ_VERSION=-
if [[ " $SYSTEMS " == *" rabbitmq"* ]]; then
    bench/queue/setup-rabbitmq.sh start >"$OUT/rabbitmq-start.log" 2>&1 || {
        cat "$OUT/rabbitmq-start.log" >&2
        exit 1
    }
    BPID=$(tail -1 "$OUT/rabbitmq-start.log")
    RMQ_VERSION=$(grep '^# RabbitMQ' "$OUT/rabbitmq-start.log" | cut -d' ' -f3)
fi

# The disk's cost of one synchronous 4 KiB write (what a commit cannot beat).
probe_us=$(dd if=/dev/zero of="$OUT/data/probe" bs=4k count=500 oflag=dsync 2>&1 |
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") print int($(i - 1) * 1e6 / 500) }')
rm -f "$OUT/data/probe"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); disk: 4 KiB O_DSYNC write ${probe_us:-?} us"
REV=${ROUTER_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}
if [[ -z ${ROUTER_SET:-} ]] && [[ -n $(git status --porcelain crates 2>/dev/null) ]]; then
    REV="$REV + uncommitted changes in crates/"
fi
echo "# switchyard $REV pid $RPID (queue concurrency $QC, data $OUT/data); RabbitMQ $RMQ_VERSION beam pid $BPID"
for sys in switchyard-js switchyard-js3; do
    [[ -n ${SYS_PIDS[$sys]:-} ]] || continue
    echo "# $sys: nodes $(echo "${SYS_URLS[$sys]}" | tr , ' '), queue owner ${SYS_OWNER[$sys]}; pids (nodes, NATS) ${SYS_PIDS[$sys]}"
done
echo "# $(${NATS_SERVER:-nats-server} --version 2>/dev/null || echo 'no nats-server')"
echo "# results in $OUT, $ROUNDS interleaved rounds"

# ---- the sets ----
SETS=("$@")
if [[ ${#SETS[@]} -eq 0 ]]; then
    SETS=(tput wide seq)
fi
params() { # params SET -> "P W C N"
    case "$1" in
    tput) echo "4 32 4 $(scaled 50000)" ;;
    wide) echo "8 64 4 $(scaled 100000)" ;;
    seq) echo "1 1 1 $(scaled 2000)" ;;
    *)
        echo "unknown set $1 (known: tput wide seq)" >&2
        exit 1
        ;;
    esac
}
systems() { # systems SET
    local all=(switchyard switchyard-js switchyard-js3 rabbitmq) out=() x
    [[ $1 != seq ]] && all+=(rabbitmq-1conn)
    [[ $QUORUM == 1 ]] && all+=(rabbitmq-quorum)
    for x in "${all[@]}"; do
        [[ " $SYSTEMS " == *" $x "* ]] && out+=("$x")
    done
    echo "${out[@]}"
}
for s in "${SETS[@]}"; do params "$s" >/dev/null; done

# command SET SYSTEM -> the load generator's command line (without --server-pid/--json)
command_for() {
    local p w c n per threads=2
    read -r p w c n <<<"$(params "$1")"
    per=$((QC / c))
    [[ $per -lt 1 ]] && per=1
    [[ $1 == seq ]] && threads=1
    case "$2" in
    switchyard)
        echo "$BENCH --threads $threads queue --url rs://127.0.0.1:$RS_PORT --serializer msgpack --queue bench --procedure bench.queue.work --producers $p --in-flight $w --workers $c --concurrency $per --invoke roundrobin --jobs $n --payload 64 --timeout 240"
        ;;
    switchyard-js | switchyard-js3)
        local urls=${SYS_URLS[$2]}
        echo "$BENCH --threads $threads queue --url ${urls%%,*} --producer-url $urls --worker-url $urls --serializer msgpack --queue bench --procedure bench.queue.work --producers $p --in-flight $w --workers $c --concurrency $per --invoke roundrobin --jobs $n --payload 64 --timeout 240"
        ;;
    rabbitmq | rabbitmq-1conn | rabbitmq-quorum)
        local qt=classic conns=0
        [[ $2 == rabbitmq-quorum ]] && qt=quorum
        [[ $2 == rabbitmq-1conn ]] && conns=1
        echo "$RMQ_BENCH --threads $threads --url amqp://127.0.0.1:$RMQ_PORT/%2f --queue bench --queue-type $qt --producers $p --in-flight $w --consumers $c --prefetch $per --connections $conns --jobs $n --payload 64 --timeout 240"
        ;;
    esac
}
pid_for() {
    case "$1" in
    switchyard) echo "$RPID" ;;
    switchyard-js | switchyard-js3) echo "${SYS_PIDS[$1]}" ;;
    *) echo "$BPID" ;;
    esac
}

# The machine is shared: before each run, wait (at most QUIET_WAIT seconds)
# until the CPUs were at least QUIET_IDLE % idle over one second.
QUIET_WAIT=${QUIET_WAIT:-15}
QUIET_IDLE=${QUIET_IDLE:-80}
idle_pct() { # CPU idle % over one second, from /proc/stat
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    awk -v i0="$((a[4] + a[5]))" -v i1="$((b[4] + b[5]))" \
        -v t0="$((a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7] + a[8]))" \
        -v t1="$((b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7] + b[8]))" \
        'BEGIN { d = t1 - t0; if (d <= 0) print 100; else print int(100 * (i1 - i0) / d) }'
}
wait_quiet() { # prints the idle % it saw last
    local idle waited=0
    while :; do
        idle=$(idle_pct)
        if [[ $idle -ge $QUIET_IDLE || $waited -ge $QUIET_WAIT ]]; then
            echo "$idle"
            return
        fi
        waited=$((waited + 1))
    done
}

FAILED=0
for s in "${SETS[@]}"; do
    for sys in $(systems "$s"); do
        : >"$OUT/$s.$sys.jsonl"
        echo "## $s $sys: $(command_for "$s" "$sys") --server-pid \$PID --json"
    done
done
FLOOR=${FLOOR:-1}
: >"$OUT/floor.jsonl"
for r in $(seq "$ROUNDS"); do
    if [[ $FLOOR == 1 ]]; then
        mkdir -p "$OUT/data"
        fl=$("$BENCH" flush --dir "$OUT/data" --writes 300 --json 2>&1) || true
        bl=$("$BENCH" baseline --round-trips 5000 --json 2>&1) || true
        grep -v '^{' <<<"$fl"$'\n'"$bl" | sed "s/^/  round $r floor: /" || true
        f50=$(grep '^{' <<<"$fl" | sed -n 's/.*"latency_p50_us":\([0-9.]*\).*/\1/p')
        b50=$(grep '^{' <<<"$bl" | sed -n 's/.*"latency_p50_us":\([0-9.]*\).*/\1/p')
        [[ -n $f50 && -n $b50 ]] && echo "{\"flush_p50_us\":$f50,\"rtt_p50_us\":$b50}" >>"$OUT/floor.jsonl"
    fi
    for s in "${SETS[@]}"; do
        for sys in $(systems "$s"); do
            idle=$(wait_quiet)
            rc=0
            # shellcheck disable=SC2046
            timeout 300 $(command_for "$s" "$sys") --server-pid "$(pid_for "$sys")" --json \
                >"$OUT/$s.$sys.$r.out" 2>&1 || rc=$?
            grep -v '^{' "$OUT/$s.$sys.$r.out" | sed "s/^/  round $r $s $sys (idle before: $idle %): /" || true
            grep '^{' "$OUT/$s.$sys.$r.out" >>"$OUT/$s.$sys.jsonl" || true
            if [[ $rc -ne 0 ]]; then
                echo "  round $r $s $sys: exit code $rc (2 = lost jobs, errors or time-out)"
                FAILED=1
            fi
            if [[ -n $RPID ]] && ! kill -0 "$RPID" 2>/dev/null; then
                echo "ROUTER DIED; last log lines:" >&2
                tail -20 "$OUT/router.log" >&2
                exit 1
            fi
            if [[ -n $BPID ]] && ! kill -0 "$BPID" 2>/dev/null; then
                echo "RABBITMQ DIED" >&2
                exit 1
            fi
            for p in "${CLUSTER_PIDS[@]}"; do
                if ! kill -0 "$p" 2>/dev/null; then
                    echo "A CLUSTER PROCESS ($p) DIED; see $OUT/*.log" >&2
                    exit 1
                fi
            done
        done
    done
done

# ---- medians ----
# summarize reads calls_per_s (= jobs/s) and latency_* (= enqueue ack); the
# enqueue->complete figures (complete_*) are summarized from a copy of the
# lines with those keys renamed.
: >"$OUT/summary.jsonl"
echo "# medians (min..max) over $ROUNDS rounds:"
for s in "${SETS[@]}"; do
    for sys in $(systems "$s"); do
        f="$OUT/$s.$sys.jsonl"
        sed -e 's/"latency_\(p50\|p99\|mean\)_us"/"ack_\1_us"/g' \
            -e 's/"complete_\(p50\|p99\|mean\)_us"/"latency_\1_us"/g' "$f" >"$OUT/$s.$sys.complete.jsonl"
        "$BENCH" summarize --label "$s $sys" --json "$f" | tee -a "$OUT/summary.jsonl" | grep -v '^{' || true
        "$BENCH" summarize --label "$s $sys complete" --json "$OUT/$s.$sys.complete.jsonl" |
            tee -a "$OUT/summary.jsonl" | grep -v '^{' | sed 's/latency_/enqueue->complete /g' || true
    done
done

if command -v python3 >/dev/null; then
    python3 - "$OUT/summary.jsonl" "$OUT/floor.jsonl" "${SETS[@]}" <<'EOF'
import json, sys
path, floor_path, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = {}
for line in open(path):
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line)
        rows[d["label"]] = d
def med(label, key):
    v = rows.get(label, {}).get(key)
    return v["median"] if isinstance(v, dict) else None
def rng(label, key):
    v = rows.get(label, {}).get(key)
    return (v["min"], v["max"]) if isinstance(v, dict) else (None, None)
print()
print("| set | system | jobs/s (min..max) | Switchyard / this | enqueue ack p50 / p99 (us) | enqueue->complete p50 / p99 (us) | server CPU-s per 1000 jobs |")
print("|---|---|---|---|---|---|---|")
for s in sets:
    sy = med(f"{s} switchyard", "calls_per_s")
    for sysname in ("switchyard", "switchyard-js", "switchyard-js3", "rabbitmq", "rabbitmq-1conn", "rabbitmq-quorum"):
        lab = f"{s} {sysname}"
        if lab not in rows:
            continue
        rate = med(lab, "calls_per_s")
        lo, hi = rng(lab, "calls_per_s")
        ratio = "" if sysname == "switchyard" or not rate or not sy else f"{sy / rate:.2f}x"
        per = med(lab, "calls_per_server_cpu_s")
        cpu = f"{1000 / per:.3f}" if per else "?"
        f = lambda x: "?" if x is None else f"{x:,.0f}"
        print(f"| {s} | {sysname} | {f(rate)} ({f(lo)}..{f(hi)}) | {ratio} | "
              f"{f(med(lab, 'latency_p50_us'))} / {f(med(lab, 'latency_p99_us'))} | "
              f"{f(med(lab + ' complete', 'latency_p50_us'))} / {f(med(lab + ' complete', 'latency_p99_us'))} | {cpu} |")
floors = [json.loads(l) for l in open(floor_path) if l.startswith("{")]
ack = med("seq switchyard", "latency_p50_us")
if floors and ack:
    import statistics
    fl = statistics.median(x["flush_p50_us"] for x in floors)
    rt = statistics.median(x["rtt_p50_us"] for x in floors)
    print()
    print(f"one job at a time: enqueue ack p50 {ack:,.0f} us against the floor of one flush "
          f"({fl:,.0f} us, 4 KiB write + fdatasync, median of {len(floors)} probes) + one loopback "
          f"round trip ({rt:,.0f} us) = {fl + rt:,.0f} us: {ack / (fl + rt):.2f}x the floor (target <= 1.5x)")
EOF
fi

# ---- optional: count fsync-family calls per job on each server ----
if [[ -n "${STRACE:-}" ]] && command -v strace >/dev/null; then
    echo "# fsync-family system calls over one tput run each (strace -f -c; slows both servers)"
    for sys in $(systems tput); do
        [[ $sys == rabbitmq-1conn ]] && continue # the same broker work as rabbitmq
        [[ $sys == switchyard-js* ]] && continue # several processes: not traced
        pid=$(pid_for "$sys")
        strace -f -c -e trace=fsync,fdatasync,sync_file_range,syncfs,msync -p "$pid" \
            -o "$OUT/strace.$sys.txt" 2>/dev/null &
        spid=$!
        sleep 1
        read -r _ _ _ n <<<"$(params tput)"
        w0=$(awk '/^write_bytes/ { print $2 }' "/proc/$pid/io")
        # shellcheck disable=SC2046
        timeout 300 $(command_for tput "$sys") --json >"$OUT/strace-run.$sys.out" 2>&1 || true
        sleep 1
        w1=$(awk '/^write_bytes/ { print $2 }' "/proc/$pid/io")
        kill -INT "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        calls=$(awk '$NF ~ /^(fsync|fdatasync|sync_file_range|syncfs|msync)$/ { n += $4 } END { print n + 0 }' "$OUT/strace.$sys.txt")
        echo "  $sys: $calls calls for $n jobs + 1,000 warm-up = $(awk -v c="$calls" -v n="$n" 'BEGIN { printf "%.4f", c / (n + 1000) }') per job; $(((w1 - w0) / (n + 1000))) bytes written to storage per job (/proc/PID/io write_bytes)"
        sed 's/^/    /' "$OUT/strace.$sys.txt"
    done
fi

if [[ $FAILED -ne 0 ]]; then
    echo "# some runs reported lost jobs, errors or time-outs (see above)"
    exit 2
fi
