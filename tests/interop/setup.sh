#!/usr/bin/env bash
# Installs the dependencies of the Switchyard interop suite:
#   - a Python venv at tests/interop/.venv with the pinned requirements.txt
#   - node_modules for tests/interop/js via `npm ci` (package-lock.json)
#   - php with the curl extension (Debian's php-cli and php-curl, with apt-get)
#     for the HTTP bridge's PHP example, only when `php` is missing or lacks curl
#   - phpunit (Debian's) for the PHP client's tests (clients/php), only when missing
#   - for the admin page's browser tests (tests/browser): Debian's chromium
#     (with apt-get, only when /usr/bin/chromium is missing) and
#     tests/browser/node_modules (playwright-core) via `npm ci`, and openssl
#     (its TLS proxy's certificate) when missing
# Idempotent: each part is skipped when a stamp file says it is up to date
# (hash of the lock/requirements file + interpreter version), or, for php,
# when `php -m` already lists curl.
# Needs only python3 (>= 3.11, with venv + pip), node 20+ and npm; for php,
# apt-get run as root (or sudo) unless php with curl is already installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
JS="$HERE/js"

hash_of() { # file [extra words...]
    local f="$1"; shift
    { cat "$f"; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------- python ---
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "setup.sh: $PY is $("$PY" -V 2>&1); Python >= 3.11 is required" >&2
    exit 1
fi
PY_VERSION="$("$PY" -c 'import sys; print(sys.version.split()[0])')"
PY_WANT="$(hash_of "$HERE/requirements.txt" "python=$PY_VERSION")"
PY_STAMP="$VENV/.interop-stamp"

if [[ -x "$VENV/bin/python" && -f "$PY_STAMP" && "$(cat "$PY_STAMP")" == "$PY_WANT" ]]; then
    echo "setup.sh: python venv up to date ($VENV)"
else
    echo "setup.sh: creating python venv ($PY $PY_VERSION) at $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    # sanity check: all three WAMP serializers must be importable
    "$VENV/bin/python" - <<'PYEOF'
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer, CBORSerializer
import websockets, pytest, pytest_timeout  # noqa: F401
PYEOF
    echo "$PY_WANT" > "$PY_STAMP"
fi

# -------------------------------------------------------------------- js ---
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
JS_WANT="$(hash_of "$JS/package-lock.json" "node=$NODE_MAJOR" "$(cat "$JS/package.json")")"
JS_STAMP="$JS/node_modules/.interop-stamp"

if [[ -d "$JS/node_modules/autobahn" && -f "$JS_STAMP" && "$(cat "$JS_STAMP")" == "$JS_WANT" ]]; then
    echo "setup.sh: js node_modules up to date ($JS/node_modules)"
else
    echo "setup.sh: npm ci in $JS"
    # Autobahn|JS 26 declares engines.node >= 22 but only needs a global
    # WebSocket, which Node 20 provides behind --experimental-websocket
    # (see run.sh); the EBADENGINE warning is therefore harmless.
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$JS_WANT" > "$JS_STAMP"
fi

# ------------------------------------------------------------------- php ---
# examples/bridge/publish.php is run by test_bridge_examples.py; the suite
# fails (it does not skip) without php, so a failed install fails here.
php_has_curl() {
    command -v php >/dev/null 2>&1 || return 1
    local mods
    mods="$(php -m 2>/dev/null)" || return 1
    grep -qix curl <<<"$mods"
}

if php_has_curl; then
    echo "setup.sh: php with curl present ($(command -v php))"
else
    echo "setup.sh: installing php-cli and php-curl with apt-get"
    bash "$HERE/../../scripts/apt-install.sh" "php (CLI) with the curl extension" php-cli php-curl
    if ! php_has_curl; then
        echo "setup.sh: php-cli and php-curl were installed, but \`php -m\` lists no curl" >&2
        exit 1
    fi
    echo "setup.sh: $(php -r 'echo "PHP ", PHP_VERSION;') with curl installed"
fi

# --------------------------------------------------------------- phpunit ---
# clients/php's tests run with Debian's phpunit (9.6 on bookworm).
if command -v phpunit >/dev/null 2>&1; then
    echo "setup.sh: phpunit present ($(command -v phpunit))"
else
    echo "setup.sh: installing phpunit with apt-get"
    bash "$HERE/../../scripts/apt-install.sh" "phpunit (for clients/php)" phpunit
    command -v phpunit >/dev/null 2>&1 || { echo "setup.sh: phpunit was installed but is not on PATH" >&2; exit 1; }
fi

# --------------------------------------------------------------- browser ---
# tests/browser drives the admin page in headless Chromium with playwright-core
# (executablePath /usr/bin/chromium: Playwright's own browser downloads are
# never used).
BROWSER_JS="$HERE/../browser"
if [[ -x /usr/bin/chromium ]]; then
    echo "setup.sh: chromium present ($(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium))"
else
    echo "setup.sh: installing chromium with apt-get (browser tests)"
    bash "$HERE/../../scripts/apt-install.sh" "chromium (the admin page's browser tests)" chromium
    if [[ ! -x /usr/bin/chromium ]]; then
        echo "setup.sh: chromium was installed, but /usr/bin/chromium is missing" >&2
        exit 1
    fi
fi
# tlsproxy.mjs makes its throwaway certificate with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
    echo "setup.sh: installing openssl with apt-get (the browser tests' TLS proxy)"
    bash "$HERE/../../scripts/apt-install.sh" "openssl (the browser tests' TLS proxy)" openssl
fi
BR_WANT="$(hash_of "$BROWSER_JS/package-lock.json" "node=$NODE_MAJOR" "$(cat "$BROWSER_JS/package.json")")"
BR_STAMP="$BROWSER_JS/node_modules/.browser-stamp"
if [[ -d "$BROWSER_JS/node_modules/playwright-core" && -f "$BR_STAMP" && "$(cat "$BR_STAMP")" == "$BR_WANT" ]]; then
    echo "setup.sh: browser node_modules up to date ($BROWSER_JS/node_modules)"
else
    echo "setup.sh: npm ci in $BROWSER_JS"
    (cd "$BROWSER_JS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$BR_WANT" > "$BR_STAMP"
fi
