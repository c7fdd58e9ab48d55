#!/usr/bin/env bash
# The SIGKILL-under-load test of the durable queues, repeated N times
# (default 100): producers push with acknowledgement, a worker completes the
# jobs, the router is SIGKILLed at a random moment (200..1500 ms into the
# load), started again on the same store, drained; each iteration counts the
# acknowledged jobs lost (must be 0), the jobs run more than once and the jobs
# that ran without an acknowledgement. Exit status 1 if any acknowledged job
# was lost. See docs/RELIABILITY.md, "Crash test".
#
# Usage: scripts/crash-test.sh [N]
# Environment:
#   CARGO_TARGET_DIR   where the release build goes (default: target)
#   NO_BUILD=1         use the binaries already built there
#   PORT_BASE=17000    ports PORT_BASE.. (one per iteration, 500 in turn; below the
#                      ephemeral range 32768-60999, outside the tests' 20000-31999)
#   KEEP=DIR           work directory (default: a temporary directory, removed
#                      unless the test failed: a failed iteration's store and
#                      logs stay there)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100}
TARGET=${CARGO_TARGET_DIR:-target}
if [[ -z "${NO_BUILD:-}" ]]; then
    CARGO_INCREMENTAL=0 cargo build --release --locked -p switchyard -p switchyard-bench
fi
ROUTER=$TARGET/release/switchyard
BENCH=$TARGET/release/switchyard-bench

if [[ -n "${KEEP:-}" ]]; then
    WORK=$KEEP
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d /tmp/switchyard-crash.XXXXXX)
fi

rc=0
"$BENCH" crash --router "$ROUTER" --iterations "$N" --dir "$WORK" \
    --port-base "${PORT_BASE:-17000}" --json || rc=$?
if [[ $rc -eq 0 && -z "${KEEP:-}" ]]; then
    rm -rf "$WORK"
elif [[ $rc -ne 0 ]]; then
    echo "crash test FAILED (exit $rc); stores and logs of failed iterations in $WORK" >&2
fi
exit $rc
