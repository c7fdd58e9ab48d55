#!/usr/bin/env bash
# Runs the Switchyard third-party-client interop suites:
#   - Python: Autobahn|Python (asyncio) + raw WebSocket / RawSocket clients (pytest)
#   - JS:     Autobahn|JS 26 and wampy.js 8 (node:test)
#   - browser: the admin page in headless Chromium, driven by playwright-core
#              (tests/browser, node:test; screenshots in target/browser-artifacts)
#   - PHP:    the PHP client library's PHPUnit tests (clients/php)
# against the router binary named by $SWITCHYARD_BIN
# (default: <repo>/target/debug/switchyard). Exits non-zero if either fails.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export SWITCHYARD_BIN="${SWITCHYARD_BIN:-$REPO/target/debug/switchyard}"

if [[ ! -x "$SWITCHYARD_BIN" ]]; then
    echo "run.sh: router binary not found or not executable: $SWITCHYARD_BIN" >&2
    echo "run.sh: build it first (cargo build) or set SWITCHYARD_BIN" >&2
    exit 2
fi

bash "$HERE/setup.sh" || { echo "run.sh: setup.sh failed" >&2; exit 2; }

cd "$REPO"

echo "=== Python interop suite (Autobahn|Python) ==="
"$HERE/.venv/bin/python" -m pytest tests/interop/python -q "$@"
py_rc=$?

echo "=== JS interop suite (Autobahn|JS) ==="
# Autobahn|JS 26 needs a global WebSocket: Node 20 has it behind a flag
# (Node >= 22 has it by default; the flag is then a no-op).
node_flags=(--test)
if [[ "$(node -p 'process.versions.node.split(".")[0]')" -lt 22 ]]; then
    node_flags=(--experimental-websocket --test)
fi
node "${node_flags[@]}" tests/interop/js/
js_rc=$?

echo "=== browser suite (admin page, headless Chromium + playwright-core) ==="
node "${node_flags[@]}" tests/browser/
br_rc=$?

echo "=== PHP client (clients/php, PHPUnit) ==="
phpunit -c clients/php/phpunit.xml
php_rc=$?

echo "=== interop summary: python rc=$py_rc, js rc=$js_rc, browser rc=$br_rc, php rc=$php_rc ==="
if [[ $py_rc -ne 0 || $js_rc -ne 0 || $br_rc -ne 0 || $php_rc -ne 0 ]]; then
    exit 1
fi
exit 0
