#!/usr/bin/env bash
# Writes the configuration the Debian package installs as
# /etc/switchyard/switchyard.toml (packaging/switchyard.toml) from
# switchyard.example.toml: the same file, listeners on loopback as there,
# with a header for the package and the data directory under
# /var/lib/switchyard (the service's StateDirectory=).
#
#   packaging/make-config.sh           rewrite packaging/switchyard.toml
#   packaging/make-config.sh --check   fail when it differs from the example
#                                      (scripts/test-deb.sh runs this)
set -euo pipefail
cd "$(dirname "$0")/.."

example=switchyard.example.toml
out=packaging/switchyard.toml
want='data_dir = "switchyard-data"'
if [[ $(grep -cx "$want" "$example") -ne 1 ]]; then
    echo "make-config.sh: $example must hold exactly one line '$want'" >&2
    exit 1
fi

generate() {
    cat <<'HEADER'
# /etc/switchyard/switchyard.toml: the configuration of the switchyard service
# (Debian package, /usr/share/doc/switchyard/PACKAGING.md). dpkg keeps your
# changes on upgrade. It is switchyard.example.toml with the data directory
# under /var/lib/switchyard; the listeners are on loopback only.
#
# After a change:  switchyard check-config /etc/switchyard/switchyard.toml
#                  systemctl restart switchyard
# (systemctl reload switchyard sends SIGHUP: what it re-reads is in PACKAGING.md.)
#
HEADER
    sed "s|^$want\$|data_dir = \"/var/lib/switchyard\"|" "$example"
}

if [[ "${1:-}" == "--check" ]]; then
    if ! diff -u "$out" <(generate); then
        echo "make-config.sh: $out is out of date: run packaging/make-config.sh" >&2
        exit 1
    fi
    echo "make-config.sh: $out matches $example"
else
    generate >"$out"
    echo "make-config.sh: wrote $out"
fi
