#!/usr/bin/env bash
# Installs cargo-deb (the Cargo subcommand that builds the Debian package,
# docs/PACKAGING.md) at the pinned version below, with `cargo install
# --locked`, only when that version is not already installed.
#
# The build goes to cargo's own temporary directory (CARGO_TARGET_DIR is
# unset for it), not to the workspace's target/: nothing of it stays but the
# binary in ~/.cargo/bin.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

have=$(cargo deb --version 2>/dev/null || true)
# `cargo deb --version` prints e.g. "3.8.0" or "cargo-deb 3.8.0".
if [[ "$have" =~ (^|[[:space:]])${CARGO_DEB_VERSION//./\\.}$ ]]; then
    echo "install-cargo-deb.sh: cargo-deb $CARGO_DEB_VERSION present"
    exit 0
fi
echo "install-cargo-deb.sh: installing cargo-deb $CARGO_DEB_VERSION" \
     "(found: ${have:-none}); this builds it once (a few minutes)"
env -u CARGO_TARGET_DIR cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
echo "install-cargo-deb.sh: $(cargo deb --version) installed"
