#!/usr/bin/env bash
# Installs every test dependency and runs every test: formatting, lints,
# Rust unit/integration tests (real sockets, the real binary) and the
# interop suites driven by Autobahn|Python and Autobahn|JS.
#
# Needs: a Rust toolchain (cargo), python3 (3.11) with pip/venv, node + npm.
# nats-server (for the cluster tests) is installed by scripts/install-nats.sh
# (Debian's package, with apt-get) when it is missing.
# The Python and JS clients are installed into tests/interop/.venv and
# tests/interop/js/node_modules by tests/interop/setup.sh, which also installs
# Debian's chromium and tests/browser/node_modules (playwright-core) for the
# admin page's browser tests.
# scripts/autobahn.sh installs the Autobahn testsuite (Python 2.7, pyenv's
# 2.7.18) into tests/autobahn/.venv and runs its WebSocket conformance cases.

# scripts/fuzz-smoke.sh installs cargo-afl (pinned, once, with cargo install;
# it builds AFL++ with make and cc) and runs every fuzz target for seconds.
# scripts/test-deb.sh installs cargo-deb (pinned, once, with cargo install)
# and tests the Debian package with dpkg (as root; skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets (outside the workspace), checked without AFL++'s flags in
# the workspace's target/ (its dependencies are the workspace's).
cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target --all-targets --locked -- -D warnings

step "router core: no import cycle of more than two files (scripts/import-graph.py)"
python3 scripts/import-graph.py >/dev/null

step "build"
cargo build --workspace --locked

step "test dependencies: nats-server (cluster tests)"
bash scripts/install-nats.sh

step "test dependencies: curl and openssl (the documented shell signing examples)"
if ! command -v curl >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    bash scripts/apt-install.sh "curl and openssl (shell signing examples)" curl openssl
fi

step "Rust tests"
cargo test --workspace --locked

step "soak and slow-consumer storm: a short smoke on the debug build (scripts/soak.sh --smoke; the full runs: docs/RELIABILITY.md)"
NO_BUILD=1 ROUTER=target/debug/switchyard BENCH=target/debug/switchyard-bench bash scripts/soak.sh --smoke

step "fuzzing: a short AFL++ run of every fuzz target (scripts/fuzz-smoke.sh; installs cargo-afl)"
bash scripts/fuzz-smoke.sh

step "the Debian package: build it from the debug binary, dpkg -i, check, upgrade, remove, purge (root only)"
bash scripts/test-deb.sh

step "interop: install test clients"
bash tests/interop/setup.sh

step "interop: Autobahn|Python, Autobahn|JS and the admin page in headless Chromium against target/debug/switchyard"
SWITCHYARD_BIN="$PWD/target/debug/switchyard" bash tests/interop/run.sh

step "WebSocket conformance: the Autobahn testsuite against a websocket-testee listener, all but 9.* (scripts/autobahn.sh)"
SWITCHYARD_BIN="$PWD/target/debug/switchyard" bash scripts/autobahn.sh --quick

step "all tests passed"
