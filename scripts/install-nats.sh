#!/usr/bin/env bash
# Installs nats-server (Debian's package) for the cluster tests
# (crates/server/tests/cluster.rs), only when it is missing. apt-get runs as
# root, or with sudo when there is one.
set -euo pipefail

# Debian installs it in /usr/sbin, which a non-root user's PATH may lack.
for bin in "$(command -v nats-server 2>/dev/null || true)" /usr/sbin/nats-server; do
    if [[ -n "$bin" && -x "$bin" ]]; then
        echo "install-nats.sh: $("$bin" --version) present ($bin)"
        exit 0
    fi
done
echo "install-nats.sh: installing nats-server with apt-get"
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-nats.sh: nats-server is needed and apt-get needs root;" \
             "run as root or install nats-server yourself" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-nats.sh: nats-server is needed and there is no apt-get to install it;" \
         "install nats-server (2.9 or later) yourself" >&2
    exit 1
fi
# Wait (up to 10 minutes) for another apt/dpkg run to release its lock.
APT_WAIT=(-o DPkg::Lock::Timeout=600)
"${SUDO[@]}" apt-get "${APT_WAIT[@]}" update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${APT_WAIT[@]}" install -y --no-install-recommends nats-server
echo "install-nats.sh: $(/usr/sbin/nats-server --version 2>/dev/null || nats-server --version) installed"
