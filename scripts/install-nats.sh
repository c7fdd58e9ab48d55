#!/usr/bin/env bash
# Installs nats-server (Debian's package) for the cluster tests
# (crates/server/tests/cluster.rs), only when it is missing, through
# scripts/apt-install.sh (apt-get as root, or with sudo when there is one).
set -euo pipefail

# Debian installs it in /usr/sbin, which a non-root user's PATH may lack.
for bin in "$(command -v nats-server 2>/dev/null || true)" /usr/sbin/nats-server; do
    if [[ -n "$bin" && -x "$bin" ]]; then
        echo "install-nats.sh: $("$bin" --version) present ($bin)"
        exit 0
    fi
done
echo "install-nats.sh: installing nats-server with apt-get"
bash "$(dirname "$0")/apt-install.sh" "nats-server (2.9 or later)" nats-server
echo "install-nats.sh: $(/usr/sbin/nats-server --version 2>/dev/null || nats-server --version) installed"
