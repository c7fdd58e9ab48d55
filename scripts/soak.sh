#!/usr/bin/env bash
# Soak and slow-consumer storm against a release build of the router
# (docs/RELIABILITY.md, "Soak").
#
# 1. Soak: SESSIONS sessions churning (connect, subscribe, publish, call,
#    leave; each stays 0.5..5 s) for DURATION seconds, over listeners on
#    127.0.0.1..127.0.0.8 (eight destination addresses: closed connections in
#    TIME_WAIT never exhaust the source ports). The router's RSS, open file
#    descriptors and threads are sampled every INTERVAL seconds into
#    $OUT/soak.csv. Verdict: flat when the mean of the last minute (or last
#    fifth, for short runs) is within TOLERANCE % of the mean of the minute after
#    warm-up (WARMUP seconds), for RSS and for descriptors; and once the
#    sessions are gone, descriptors are back within 16 of the idle router's.
# 2. Storm: healthy RPC callers and a healthy subscriber measured for
#    STORM_SECONDS, then again after STALLED subscribers subscribed and
#    stopped reading; the healthy throughput must keep >= 90 %.
#
# Usage: scripts/soak.sh [--smoke] [--soak-only|--storm-only]
#   --smoke: 200 sessions for 10 s, 50 stalled subscribers for 3 s: a short
#   run, too short to judge flatness or throughput (those verdicts are then
#   printed, not enforced); it fails on errors, a panic, descriptors not
#   released once the sessions left, or an unclean exit.
# Environment (defaults): DURATION=600 SESSIONS=10000 WARMUP=60 INTERVAL=5
#   TOLERANCE=10 STALLED=500 STORM_SECONDS=20 PORT=34500 OUT=(a new /tmp dir)
#   SLOW_CONSUMER=disconnect (the router's [limits] slow_consumer: disconnect
#   cuts the stalled subscribers; drop_events keeps them, dropping their events)
#   SOCKET_SEND_BUFFER=(the router's default) [limits] socket_send_buffer; 0:
#   the kernel's autotuning, as before that setting existed
#   CARGO_TARGET_DIR=target NO_BUILD=1 (use the binaries already built)
#   ROUTER=PATH BENCH=PATH (binaries; default $CARGO_TARGET_DIR/release/...)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=both
SMOKE=
for a in "$@"; do
    case $a in
        --smoke) SMOKE=1 ;;
        --soak-only) MODE=soak ;;
        --storm-only) MODE=storm ;;
        *) echo "usage: $0 [--smoke] [--soak-only|--storm-only]" >&2; exit 2 ;;
    esac
done
if [[ -n $SMOKE ]]; then
    : "${DURATION:=10}" "${SESSIONS:=200}" "${WARMUP:=4}" "${INTERVAL:=1}" \
      "${STALLED:=50}" "${STORM_SECONDS:=3}" "${TOLERANCE:=25}"
fi
DURATION=${DURATION:-600}
SESSIONS=${SESSIONS:-10000}
WARMUP=${WARMUP:-60}
INTERVAL=${INTERVAL:-5}
TOLERANCE=${TOLERANCE:-10}
STALLED=${STALLED:-500}
STORM_SECONDS=${STORM_SECONDS:-20}
PORT=${PORT:-34500}
OUT=${OUT:-$(mktemp -d /tmp/switchyard-soak.XXXXXX)}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}
if [[ -z "${NO_BUILD:-}" ]]; then
    CARGO_INCREMENTAL=0 cargo build --release --locked -p switchyard -p switchyard-bench
fi
ROUTER=${ROUTER:-$TARGET/release/switchyard}
BENCH=${BENCH:-$TARGET/release/switchyard-bench}

# Each session is a socket in the router and one in the load generator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

{
    for i in 1 2 3 4 5 6 7 8; do
        printf '[[listener]]\ntype = "rawsocket"\naddress = "127.0.0.%s:%s"\n\n' "$i" "$PORT"
    done
    printf '[[realm]]\nname = "realm1"\n\n'
    printf '[limits]\nmax_connections_per_address = 0\nslow_consumer = "%s"\n' "${SLOW_CONSUMER:-disconnect}"
    [[ -z ${SOCKET_SEND_BUFFER:-} ]] || printf 'socket_send_buffer = %s\n' "$SOCKET_SEND_BUFFER"
    printf '\n'
    printf '[storage]\ndata_dir = "%s/data"\n' "$OUT"
} >"$OUT/switchyard.toml"

"$ROUTER" --config "$OUT/switchyard.toml" 2>"$OUT/router.log" >/dev/null &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT
# "switchyard X.Y.Z ready": every listener is bound (not "durable queues ready").
READY='switchyard [0-9.]* ready'
for _ in $(seq 200); do
    grep -q "$READY" "$OUT/router.log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$OUT/router.log"; exit 1; }
    sleep 0.1
done
grep -q "$READY" "$OUT/router.log" || { echo "router not ready" >&2; exit 1; }

sample() { # seconds rss_kib fds threads
    local rss fds thr
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status")
    thr=$(awk '/^Threads:/ {print $2}' "/proc/$PID/status")
    fds=$(find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$1,$rss,$fds,$thr"
}
IDLE=$(sample 0)
IDLE_FDS=$(echo "$IDLE" | cut -d, -f3)
echo "router pid $PID, idle: RSS $(echo "$IDLE" | cut -d, -f2) KiB, $IDLE_FDS fds; output in $OUT"

FAIL=0
if [[ $MODE != storm ]]; then
    echo "seconds,rss_kib,fds,threads" >"$OUT/soak.csv"
    START=$(date +%s)
    (
        while kill -0 "$PID" 2>/dev/null; do
            sample $(($(date +%s) - START)) >>"$OUT/soak.csv"
            sleep "$INTERVAL"
        done
    ) &
    SAMPLER=$!
    URLS=()
    for i in 1 2 3 4 5 6 7 8; do URLS+=(--url "rs://127.0.0.$i:$PORT"); done
    RAMP=$((WARMUP / 2 > 0 ? WARMUP / 2 : 1))
    "$BENCH" --threads 2 soak "${URLS[@]}" --sessions "$SESSIONS" --duration "$DURATION" \
        --ramp "$RAMP" --report "$((INTERVAL * 6))" --json | tee "$OUT/soak.txt" || FAIL=1
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    sleep 5
    AFTER=$(sample $(($(date +%s) - START)))
    AFTER_FDS=$(echo "$AFTER" | cut -d, -f3)
    # The soak's samples: from WARMUP on, until the load ended.
    VERDICT=$(awk -F, -v warm="$WARMUP" -v end="$DURATION" -v tol="$TOLERANCE" '
        BEGIN { n = 0 }
        NR == 1 || $1 < warm || $1 > end { next }
        { t[n] = $1; r[n] = $2; f[n] = $3; n++ }
        END {
            if (n < 4) { print "FAIL too few samples (" n ")"; exit }
            win = 60; if ((end - warm) / 5 < win) win = (end - warm) / 5
            for (i = 0; i < n; i++) {
                if (t[i] <= t[0] + win) { r0 += r[i]; f0 += f[i]; c0++ }
                if (t[i] >= t[n - 1] - win) { r1 += r[i]; f1 += f[i]; c1++ }
            }
            if (c0 == 0 || c1 == 0 || r0 == 0 || f0 == 0) { print "FAIL too few samples"; exit }
            r0 /= c0; f0 /= c0; r1 /= c1; f1 /= c1
            dr = (r1 - r0) * 100 / r0; df = (f1 - f0) * 100 / f0
            ok = (dr <= tol && df <= tol)
            printf "%s RSS %.0f KiB after warm-up -> %.0f KiB at the end (%+.1f %%), fds %.0f -> %.0f (%+.1f %%), tolerance %s %%\n",
                ok ? "PASS" : "FAIL", r0, r1, dr, f0, f1, df, tol
        }' "$OUT/soak.csv")
    echo "soak verdict: $VERDICT"
    echo "after the sessions left: RSS $(echo "$AFTER" | cut -d, -f2) KiB, $AFTER_FDS fds (idle router: $IDLE_FDS)"
    [[ $VERDICT == PASS* || -n $SMOKE ]] || FAIL=1
    if ((AFTER_FDS > IDLE_FDS + 16)); then
        echo "FAIL: descriptors not released: $AFTER_FDS (idle $IDLE_FDS)"
        FAIL=1
    fi
fi
if [[ $MODE != soak ]]; then
    echo "seconds,rss_kib,fds,threads" >"$OUT/storm.csv"
    START=$(date +%s)
    (
        while kill -0 "$PID" 2>/dev/null; do
            sample $(($(date +%s) - START)) >>"$OUT/storm.csv"
            sleep 0.5
        done
    ) &
    SAMPLER=$!
    CUT_BEFORE=$(grep -c 'slow consumer' "$OUT/router.log" || true)
    "$BENCH" --threads 2 storm --rawsocket "127.0.0.1:$PORT" --stalled "$STALLED" \
        --duration "$STORM_SECONDS" --json | tee "$OUT/storm.txt" || [[ -n $SMOKE ]] || FAIL=1
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    CUT=$(($(grep -c 'slow consumer' "$OUT/router.log" || true) - CUT_BEFORE))
    echo "storm: the router's RSS peaked at $(awk -F, 'NR > 1 && $2 > m {m = $2} END {print m}' "$OUT/storm.csv") KiB and its descriptors at $(awk -F, 'NR > 1 && $3 > m {m = $3} END {print m}' "$OUT/storm.csv"); after the storm: $(sample 0 | cut -d, -f2) KiB RSS, $(sample 0 | cut -d, -f3) fds; $CUT log lines about slow consumers (rate-limited: see 'suppressed' in the log)"
    { grep 'slow consumer' "$OUT/router.log" || true; } | sed -n 1p | cut -c1-300
fi

kill -TERM "$PID"
if ! wait "$PID"; then
    echo "FAIL: the router did not exit cleanly on SIGTERM"
    FAIL=1
fi
trap - EXIT
if grep -q panicked "$OUT/router.log"; then
    echo "FAIL: the router panicked (see $OUT/router.log)"
    FAIL=1
fi
echo "samples: $OUT/soak.csv; router log: $OUT/router.log"
exit $FAIL
