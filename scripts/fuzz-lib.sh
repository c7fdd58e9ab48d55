# Shared by scripts/fuzz-smoke.sh and scripts/fuzz-long.sh (sourced, from
# the repository root): the fuzz targets, their build and one AFL++ run.

FUZZ_TARGETS=(decode_json decode_msgpack decode_cbor rawsocket uri bridge_request
              bridge_signature config queue_record websocket_frames)

# Installs cargo-afl and AFL++ if missing, then builds every target with
# AFL++'s instrumentation into fuzz/target (its own flags for every crate:
# it cannot share the workspace's target/).
# FUZZ_SKIP_BUILD=1 runs the binaries already built (e.g. while a rebuild
# of fuzz/target runs in another shell).
fuzz_build() {
    if [[ "${FUZZ_SKIP_BUILD:-}" == 1 ]]; then
        echo "fuzz: FUZZ_SKIP_BUILD=1: the binaries of fuzz/target/debug as they are"
        return 0
    fi
    bash scripts/install-cargo-afl.sh
    echo "fuzz: building the fuzz targets (cargo afl build, fuzz/target)"
    (cd fuzz && CARGO_INCREMENTAL=0 cargo afl build --locked --bins)
}

# AFL++ on a shared machine, without a terminal: no CPU binding, no CPU
# frequency check, no core_pattern change (the fork server sees crashes all
# the same), no status screen.
export AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_UI=1 AFL_QUIET=1

# fuzz_run TARGET SECONDS OUT [NICE]: runs TARGET for SECONDS from its seed
# corpus (or resumes OUT), AFL++'s findings in OUT/default; the log in
# OUT.log. Returns afl-fuzz's status.
fuzz_run() {
    local t=$1 secs=$2 out=$3 nice=${4:-0}
    local bin="$PWD/fuzz/target/debug/$t"
    if [[ ! -x "$bin" ]]; then
        echo "fuzz: no target $t ($bin)" >&2
        return 2
    fi
    local dict=()
    [[ -f "fuzz/dict/$t.dict" ]] && dict=(-x "fuzz/dict/$t.dict")
    AFL_AUTORESUME=1 timeout $((secs + 300)) nice -n "$nice" \
        cargo afl fuzz -V "$secs" -i "fuzz/corpus/$t" -o "$out" "${dict[@]}" -- "$bin" \
        >"$out.log" 2>&1
}

# fuzz_replay TARGET: runs the target once on every seed of
# fuzz/corpus/TARGET (outside AFL++ the binary reads one input on its
# standard input). AFL++ itself only warns about a seed that crashes and
# skips it; here it is a failure: the seeds hold the inputs that once
# crashed a target. Returns 1 (and keeps them in fuzz/artifacts/TARGET/) if
# any crashes.
fuzz_replay() {
    local t=$1 bin="$PWD/fuzz/target/debug/$1" seed bad=0 err
    err=$(mktemp)
    for seed in "fuzz/corpus/$t"/*; do
        if ! timeout 60 "$bin" <"$seed" >/dev/null 2>"$err"; then
            bad=$((bad + 1))
            mkdir -p "fuzz/artifacts/$t"
            cp "$seed" "fuzz/artifacts/$t/"
            echo "fuzz: the seed $seed crashes $t; replay: fuzz/target/debug/$t < '$seed'" >&2
            grep -m 1 -A 3 panicked "$err" >&2 || tail -n 5 "$err" >&2
        fi
    done
    rm -f "$err"
    [[ $bad -eq 0 ]]
}

# fuzz_stat OUT KEY: one figure of OUT/default/fuzzer_stats.
fuzz_stat() {
    awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$1/default/fuzzer_stats" 2>/dev/null
}

# fuzz_crashes OUT: the number of crashing inputs saved.
fuzz_crashes() {
    find "$1/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l
}

fuzz_header() {
    printf '%-17s %8s %12s %9s %7s %13s %7s %5s\n' \
        target seconds execs execs/s corpus edges crashes hangs
}

# fuzz_line TARGET OUT: the figures of a run, one line.
fuzz_line() {
    local o=$2
    printf '%-17s %8s %12s %9s %7s %13s %7s %5s\n' "$1" "$(fuzz_stat "$o" run_time)" \
        "$(fuzz_stat "$o" execs_done)" "$(fuzz_stat "$o" execs_per_sec)" \
        "$(fuzz_stat "$o" corpus_count)" \
        "$(fuzz_stat "$o" edges_found)/$(fuzz_stat "$o" total_edges)" \
        "$(fuzz_crashes "$o")" "$(fuzz_stat "$o" saved_hangs)"
}

# fuzz_keep_crashes TARGET OUT: copies the crashing inputs to
# fuzz/artifacts/TARGET and says how to replay one.
fuzz_keep_crashes() {
    local t=$1 o=$2 first
    [[ $(fuzz_crashes "$o") -gt 0 ]] || return 0
    mkdir -p "fuzz/artifacts/$t"
    cp "$o"/default/crashes/id:* "fuzz/artifacts/$t/"
    first=$(cd "$o/default/crashes" && ls | grep '^id:' | head -n 1)
    echo "fuzz: crashing inputs of $t kept in fuzz/artifacts/$t/; replay one (shows the panic):" >&2
    echo "    fuzz/target/debug/$t < 'fuzz/artifacts/$t/$first'" >&2
}
