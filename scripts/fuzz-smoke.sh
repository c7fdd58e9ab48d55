#!/usr/bin/env bash
# A short coverage-guided fuzzing run of every fuzz target (fuzz/, AFL++
# through cargo-afl on the stable toolchain; docs/RELIABILITY.md,
# "Fuzzing"): builds the targets with `cargo afl build`, then runs each
# once on every seed of its committed corpus (fuzz/corpus/TARGET), then
# under AFL++ for FUZZ_SMOKE_SECONDS (default 6: about a minute for the
# nine) from that corpus. Fails when a seed or a
# mutated input crashes a target (a panic, an abort, an overflow: a broken
# property of fuzz/src/lib.rs); the crashing inputs are kept in
# fuzz/artifacts/TARGET/ and the command that replays one is printed.
#
# Installs what it needs itself (scripts/install-cargo-afl.sh: cargo-afl,
# pinned, and AFL++). The first build takes some minutes; later ones only
# rebuild what changed.
#
# Usage: scripts/fuzz-smoke.sh [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fuzz-lib.sh

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${FUZZ_TARGETS[@]}")
secs=${FUZZ_SMOKE_SECONDS:-6}

fuzz_build
export AFL_BENCH_UNTIL_CRASH=1 # a smoke run stops at its first crash
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
fuzz_header
for t in "${targets[@]}"; do
    status=0
    fuzz_replay "$t" || status=$?
    fuzz_run "$t" "$secs" "$work/$t" || status=$?
    fuzz_line "$t" "$work/$t"
    if [[ $status -ne 0 || $(fuzz_crashes "$work/$t") -gt 0 ]]; then
        failed+=("$t")
        echo "--- $t: afl-fuzz exited with $status; the end of its log:" >&2
        tail -n 20 "$work/$t.log" >&2
        fuzz_keep_crashes "$t" "$work/$t"
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz-smoke.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke.sh: ${#targets[@]} targets, ${secs} s each, no crash"
