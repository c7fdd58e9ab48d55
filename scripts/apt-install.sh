#!/usr/bin/env bash
# Installs Debian packages for the test suite: apt-get as root, or with sudo
# when there is one; waits (up to 10 minutes) for another apt/dpkg run to
# release its lock. A clear error when neither root nor apt-get is there.
#
# Usage: scripts/apt-install.sh WHAT PACKAGE...
#   WHAT     what the packages are for, as the error messages name it
#            (e.g. "nats-server (2.9 or later)")
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 WHAT PACKAGE..." >&2
    exit 2
fi
what=$1
shift
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "apt-install.sh: $what is needed and apt-get needs root;" \
             "run as root or install $what yourself" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-install.sh: $what is needed and there is no apt-get to install it;" \
         "install $what yourself" >&2
    exit 1
fi
APT_WAIT=(-o DPkg::Lock::Timeout=600)
"${SUDO[@]}" apt-get "${APT_WAIT[@]}" update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${APT_WAIT[@]}" install -y --no-install-recommends "$@"
