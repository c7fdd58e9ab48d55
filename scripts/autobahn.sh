#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn testsuite (`wstest -m fuzzingclient`)
# against a router whose only listener is a `websocket-testee` (it echoes every
# message over the router's WebSocket stack, docs/RELIABILITY.md), parses the
# report and fails if any case is FAILED, NON-STRICT or otherwise not passing
# (tests/autobahn/summary.py says which results pass).
#
#   scripts/autobahn.sh            every case (517; about 50 s with a debug build)
#   scripts/autobahn.sh --quick    every case but 9.* (performance; about 15 s):
#                                  the step of scripts/test.sh
#   scripts/autobahn.sh --cases '1.*,7.*'   the cases given (wstest patterns)
#
# Environment:
#   SWITCHYARD_BIN   the router binary (default: target/debug/switchyard, built)
#   PYTHON2          a Python 2.7 interpreter (default: python2.7 on PATH, else
#                    pyenv's 2.7.18 at ~/.pyenv/versions/2.7.18 or /root/.pyenv/...)
#   AUTOBAHN_PORT    the testee's port (default 32750: below Linux's ephemeral
#                    range 32768-60999, where a client socket may hold a port)
#   AUTOBAHN_REPORT  where the report goes (default tests/autobahn/reports)
#
# wstest needs Python 2.7: it is installed with its pinned dependencies
# (tests/autobahn/requirements.txt) into tests/autobahn/.venv, made with
# virtualenv 20.15 (the last that runs on Python 2.7), itself installed into
# tests/autobahn/.bootstrap. Idempotent: a stamp holds the requirements' hash.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/tests/autobahn

cases='*'
exclude=
case "${1:-}" in
    "") ;;
    # 9.* (limits and performance: messages up to 16 MiB, thousands of
    # messages, timed) take the longest and measure speed more than conformance.
    --quick) exclude='"9.*"' ;;
    --cases) cases=${2:?--cases needs a list, e.g. '1.*,7.*'} ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac

# ------------------------------------------------------------- Python 2.7 ---
is_py27() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; }
PY2=${PYTHON2:-}
if [[ -z "$PY2" ]]; then
    # (a pyenv shim named python2.7 may be on PATH without working)
    for c in python2.7 "$HOME/.pyenv/versions/2.7.18/bin/python" /root/.pyenv/versions/2.7.18/bin/python; do
        if command -v "$c" >/dev/null 2>&1 && is_py27 "$c"; then PY2=$(command -v "$c"); break; fi
    done
fi
if [[ -z "$PY2" ]] || ! is_py27 "$PY2"; then
    echo "autobahn.sh: the Autobahn testsuite needs Python 2.7 (none found; set PYTHON2," \
         "e.g. pyenv install 2.7.18)" >&2
    exit 1
fi
VENV=$HERE/.venv
want=$( { cat "$HERE/requirements.txt"; "$PY2" -V 2>&1; } | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$want" ]]; then
    echo "autobahn.sh: installing the Autobahn testsuite into $VENV (Python 2.7)"
    rm -rf "$VENV" "$HERE/.bootstrap"
    "$PY2" -m pip install -q --disable-pip-version-check --no-warn-script-location \
        --target "$HERE/.bootstrap" 'virtualenv==20.15.1' 2>&1 | grep -v DEPRECATION || true
    PYTHONPATH=$HERE/.bootstrap "$PY2" -m virtualenv -q "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" 2>&1 \
        | grep -v DEPRECATION || true
    "$VENV/bin/wstest" --autobahnversion >/dev/null
    echo "$want" >"$VENV/.stamp"
fi

# ----------------------------------------------------------------- router ---
BIN=${SWITCHYARD_BIN:-}
if [[ -z "$BIN" ]]; then
    cargo build -q -p switchyard --locked
    BIN=$ROOT/target/debug/switchyard
fi
PORT=${AUTOBAHN_PORT:-32750}
REPORT=${AUTOBAHN_REPORT:-$HERE/reports}
WORK=$(mktemp -d)
router_pid=
cleanup() {
    if [[ -n "$router_pid" ]]; then kill "$router_pid" 2>/dev/null || true; wait "$router_pid" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The limits of a WAMP listener, with max_message_size raised to the
# largest message of the 9.* cases (16 MiB, the highest value allowed); the
# echo of one message is held at a time. Keepalive pings stay at their
# default (30 s), longer than any case.
cat >"$WORK/switchyard.toml" <<EOF
[[listener]]
type = "websocket-testee"
address = "127.0.0.1:$PORT"
path = "/"

[limits]
max_message_size = 16777216
EOF
"$BIN" --config "$WORK/switchyard.toml" --data-dir "$WORK/data" --log-level info 2>"$WORK/router.log" &
router_pid=$!
# The router's own ready line (other lines say "ready" too, e.g. its queues,
# before a listener may still fail to bind).
READY='switchyard [0-9.]* ready'
for _ in $(seq 100); do
    if grep -q "$READY" "$WORK/router.log"; then break; fi
    if ! kill -0 "$router_pid" 2>/dev/null; then cat "$WORK/router.log" >&2; echo "autobahn.sh: the router exited (port $PORT in use? set AUTOBAHN_PORT)" >&2; exit 1; fi
    sleep 0.1
done
grep -q "$READY" "$WORK/router.log" || { cat "$WORK/router.log" >&2; echo "autobahn.sh: the router did not get ready" >&2; exit 1; }

# ------------------------------------------------------------- test cases ---
# 12.*/13.*: permessage-deflate, which the router does not offer: wstest
# reports them UNIMPLEMENTED at once, and summary.py passes them as such.
case_list=$(printf '%s' "$cases" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split(",")))')
rm -rf "$REPORT"
mkdir -p "$REPORT"
cat >"$WORK/fuzzingclient.json" <<EOF
{
  "outdir": "$REPORT",
  "servers": [{"agent": "switchyard", "url": "ws://127.0.0.1:$PORT/"}],
  "cases": $case_list,
  "exclude-cases": [$exclude],
  "exclude-agent-cases": {}
}
EOF
echo "autobahn.sh: wstest -m fuzzingclient, cases $case_list, excluded [${exclude}]"
start=$(date +%s)
( cd "$WORK" && timeout 1800 "$VENV/bin/wstest" -m fuzzingclient -s fuzzingclient.json ) \
    >"$WORK/wstest.log" 2>&1 || { tail -40 "$WORK/wstest.log" >&2; echo "autobahn.sh: wstest failed" >&2; exit 1; }
echo "autobahn.sh: wstest took $(( $(date +%s) - start )) s; report in $REPORT/index.html"
if grep -q "panicked" "$WORK/router.log"; then
    cat "$WORK/router.log" >&2
    echo "autobahn.sh: the router panicked" >&2
    exit 1
fi
python3 "$HERE/summary.py" "$REPORT" --markdown "$REPORT/summary.md"
