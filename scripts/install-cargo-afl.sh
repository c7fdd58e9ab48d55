#!/usr/bin/env bash
# Installs cargo-afl (the Cargo subcommand that builds fuzz targets with
# AFL++'s coverage instrumentation on the stable toolchain, and builds
# AFL++ itself: docs/RELIABILITY.md, "Fuzzing") at the pinned version
# below, with `cargo install --locked`, only when that version is not
# already installed; then builds AFL++ for the current rustc if it is not
# built yet (`cargo afl config --build`; it lives in ~/.local/share/afl.rs).
#
# AFL++ is built from the source the crate carries, with make and a C
# compiler (Debian's make and gcc, installed with scripts/apt-install.sh
# when missing). Its LLVM plugins (CMPLOG) need a nightly rustc and are not
# built: the instrumentation is rustc's own SanitizerCoverage.
#
# The build goes to cargo's own temporary directory (CARGO_TARGET_DIR is
# unset for it), not to the workspace's target/.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_AFL_VERSION=0.18.2

missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
if [[ ${#missing[@]} -gt 0 ]]; then
    bash scripts/apt-install.sh "make and a C compiler (to build AFL++)" "${missing[@]}"
fi

have=$(cargo afl --version 2>/dev/null || true)
# `cargo afl --version` prints e.g. "cargo-afl 0.18.2 (AFL++ version 4.40c)".
if [[ "$have" =~ ^cargo-afl\ ${CARGO_AFL_VERSION//./\\.}([[:space:]]|$) ]]; then
    echo "install-cargo-afl.sh: cargo-afl $CARGO_AFL_VERSION present"
else
    echo "install-cargo-afl.sh: installing cargo-afl $CARGO_AFL_VERSION" \
         "(found: ${have:-none}); this builds it and AFL++ once (a few minutes)"
    env -u CARGO_TARGET_DIR cargo install cargo-afl --version "$CARGO_AFL_VERSION" --locked
fi
# AFL++ is built per rustc version; the install builds it for the rustc of
# the day, a later rustc needs it built again.
# (`afl-fuzz -h` exits 1: its usage text tells that it is there.)
usage=$(cargo afl fuzz -h 2>&1 || true)
if [[ "$usage" != *"Required parameters"* ]]; then
    echo "install-cargo-afl.sh: building AFL++ for $(rustc --version)"
    cargo afl config --build --force
fi
echo "install-cargo-afl.sh: $(cargo afl --version)"
