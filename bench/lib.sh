# What the bench scripts share; sourced from the repository's root after the
# script has set OUT (its results directory) and SCALE.
#
#   bench_binaries     release build unless NO_BUILD is set; sets ROUTER and BENCH
#                      (absolute paths; ROUTER=PATH BENCH=PATH choose others)
#   find_nats_server   sets NATS_SERVER (unless set), installing Debian's
#                      nats-server with scripts/install-nats.sh when missing
#   scaled N           N * SCALE as an integer, at least 1
#   PIDS+=(pid)        processes killed when the script exits
#   wait_port PORT PID LOG
#                      waits until PORT accepts; exits with LOG's tail if the
#                      process PID ended first or 15 s passed

bench_binaries() {
    if [[ -z "${NO_BUILD:-}" ]]; then
        cargo build --release -p switchyard -p switchyard-bench
    fi
    ROUTER=$(realpath "${ROUTER:-target/release/switchyard}")
    BENCH=$(realpath "${BENCH:-target/release/switchyard-bench}")
}

find_nats_server() {
    if [[ -z "${NATS_SERVER:-}" ]]; then
        command -v nats-server >/dev/null 2>&1 || bash scripts/install-nats.sh >&2
        NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
    fi
}

scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); if (v < 1) v = 1; print v }'; }

PIDS=()
bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap bench_cleanup EXIT

wait_port() {
    for _ in $(seq 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "a server did not start (port $1); its log $3:" >&2
    tail -20 "$3" >&2
    exit 1
}
