#!/usr/bin/env bash
# A long coverage-guided fuzzing run of one fuzz target (docs/RELIABILITY.md,
# "Fuzzing"): builds the targets (scripts/fuzz-smoke.sh's build), then runs
# TARGET for MINUTES at low priority (nice 10), keeping AFL++'s queue in
# fuzz/out/TARGET, so that a second run resumes where the first stopped.
# Prints the figures of the run (executions, corpus, edges, crashes, hangs)
# and appends them to fuzz/out/runs.txt. Exits 1 when it found a crash (the
# inputs are kept in fuzz/artifacts/TARGET/, with the command that replays
# one).
#
# Usage: scripts/fuzz-long.sh TARGET MINUTES
#   TARGET: decode_json decode_msgpack decode_cbor rawsocket uri
#           bridge_request bridge_signature config queue_record
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fuzz-lib.sh

if [[ $# -ne 2 || ! " ${FUZZ_TARGETS[*]} " == *" $1 "* || ! $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 TARGET MINUTES   (TARGET: ${FUZZ_TARGETS[*]})" >&2
    exit 2
fi
t=$1
minutes=$2

fuzz_build
mkdir -p fuzz/out
status=0
fuzz_replay "$t" || status=$?
fuzz_run "$t" $((minutes * 60)) "fuzz/out/$t" 10 || status=$?
line=$(fuzz_line "$t" "fuzz/out/$t")
fuzz_header
echo "$line"
echo "$(date -u +%FT%TZ) $line" >>fuzz/out/runs.txt
if [[ $status -ne 0 || $(fuzz_crashes "fuzz/out/$t") -gt 0 ]]; then
    echo "--- $t: afl-fuzz exited with $status; the end of its log:" >&2
    tail -n 20 "fuzz/out/$t.log" >&2
    fuzz_keep_crashes "$t" "fuzz/out/$t"
    exit 1
fi
