#!/usr/bin/env bash
# The Debian package (docs/PACKAGING.md), installed for real on this machine:
# builds the .deb with cargo-deb from the debug binary the test suite has
# already built (no release build: `--profile dev --no-build`), installs it
# with `dpkg -i`, checks what the package put where (binary, config,
# user, data directory, systemd unit), upgrades it (the edited config stays),
# then removes (`dpkg -r`) and purges (`dpkg -P`) it.
#
# The service is NOT started through systemd: this container has no systemd
# as PID 1. Instead the unit's ExecStart runs for a moment as the unit's user,
# on ports the system picks, and must get ready and stop on SIGTERM.
#
# Needs root (dpkg); as another user it says so and skips (exit 0). It
# refuses to run (exit 1) where a `switchyard` package, user or directory
# exists that it did not create, because purging would delete them.
# scripts/install-cargo-deb.sh installs the pinned cargo-deb once.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

say() { printf 'test-deb.sh: %s\n' "$*"; }
fail() {
    printf 'test-deb.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

if [[ "$(id -u)" -ne 0 ]]; then
    say "SKIPPED: installing the Debian package needs root (dpkg -i);" \
        "run scripts/test-deb.sh as root to test it"
    exit 0
fi
if ! command -v dpkg >/dev/null 2>&1; then
    say "SKIPPED: no dpkg on this machine (not Debian-based): the package is not tested"
    exit 0
fi

# Purging deletes the user, /etc/switchyard and /var/lib/switchyard: only
# when this script made them.
if dpkg-query -W -f='${Status}' switchyard 2>/dev/null | grep -qv 'not-installed'; then
    fail "a switchyard package is installed here (dpkg -l switchyard): this test would replace and purge it"
fi
for path in /etc/switchyard /var/lib/switchyard; do
    [[ ! -e "$path" ]] || fail "$path exists: this test would delete it on purge"
done
if getent passwd switchyard >/dev/null; then
    fail "a user switchyard exists: this test would delete it on purge"
fi

bash scripts/install-cargo-deb.sh

say "packaging/switchyard.toml is switchyard.example.toml with the package's data_dir"
bash packaging/make-config.sh --check

# The debug binary: built already by scripts/test.sh (this is a no-op then).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -p switchyard --locked --quiet
built_version=$("$CARGO_TARGET_DIR/debug/switchyard" --version)

work=$(mktemp -d)
installed=0
cleanup() {
    local rc=$?
    if [[ $installed -eq 1 ]]; then
        say "cleaning up: dpkg -P switchyard"
        dpkg -P switchyard >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT

# cargo-deb warns that the dev profile is meant for development only (-q):
# the package is the release one's but for the binary's speed and size.
# --fast: lighter compression (5 s instead of 30 s for the debug binary).
t=$SECONDS
deb="$work/switchyard-1.deb"
cargo deb -q -p switchyard --locked --profile dev --no-build --fast \
    --deb-revision 1 -o "$deb" >/dev/null
say "built $(basename "$deb") ($(du -h "$deb" | cut -f1)) in $((SECONDS - t)) s"

say "the package's files and conffiles"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/switchyard ./etc/switchyard/switchyard.toml \
    ./usr/lib/systemd/system/switchyard.service \
    ./usr/share/doc/switchyard/PACKAGING.md; do
    grep -q " $f\$" <<<"$contents" || fail "$f is not in the package"
done
[[ "$(dpkg-deb -f "$deb" Package)" == switchyard ]] || fail "package name"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/switchyard/switchyard.toml \
    || fail "/etc/switchyard/switchyard.toml is not a conffile"

say "dpkg -i"
installed=1
dpkg -i "$deb" </dev/null >/dev/null

say "the binary runs"
[[ -x /usr/bin/switchyard ]] || fail "/usr/bin/switchyard missing"
[[ "$(/usr/bin/switchyard --version)" == "$built_version" ]] \
    || fail "switchyard --version: '$(/usr/bin/switchyard --version)', want '$built_version'"

say "the installed config is accepted, also by the service's user"
/usr/bin/switchyard check-config /etc/switchyard/switchyard.toml
runuser -u switchyard -- /usr/bin/switchyard check-config /etc/switchyard/switchyard.toml >/dev/null \
    || fail "the user switchyard cannot read /etc/switchyard/switchyard.toml"

say "the system user switchyard: no login shell, home /var/lib/switchyard"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd switchyard) \
    || fail "no user switchyard"
[[ "$shell" == /usr/sbin/nologin ]] || fail "switchyard's shell is $shell"
[[ "$home" == /var/lib/switchyard ]] || fail "switchyard's home is $home"
[[ $uid -lt 1000 ]] || fail "switchyard is not a system user (uid $uid)"
[[ "$(getent group switchyard | cut -d: -f3)" == "$gid" ]] || fail "group switchyard"

check_stat() { # path owner:group mode
    local got
    got=$(stat -c '%U:%G %a' "$1")
    [[ "$got" == "$2 $3" ]] || fail "$1 is $got, want $2 $3"
}
check_stat /var/lib/switchyard switchyard:switchyard 700
check_stat /etc/switchyard root:switchyard 750
check_stat /etc/switchyard/switchyard.toml root:switchyard 640

unit=/usr/lib/systemd/system/switchyard.service
say "the systemd unit: enabled, verified"
[[ -L /etc/systemd/system/multi-user.target.wants/switchyard.service ]] \
    || fail "the unit is not enabled (deb-systemd-helper)"
if command -v systemd-analyze >/dev/null 2>&1; then
    if ! out=$(systemd-analyze verify "$unit" 2>&1); then
        fail "systemd-analyze verify $unit: $out"
    fi
    [[ -z "$out" ]] || fail "systemd-analyze verify $unit warns: $out"
    say "systemd-analyze verify: clean"
else
    say "no systemd-analyze here: the unit file is not verified"
fi

say "the unit's ExecStart, run as its user (ports picked by the system), gets ready and stops on SIGTERM"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[[ -n "$exec_start" ]] || fail "no ExecStart in $unit"
log="$work/run.log"
read -ra cmd <<<"$exec_start"
# setpriv execs the command itself (runuser would stay as its parent and
# turn SIGTERM into a kill), as systemd's User=/Group= do.
(cd /var/lib/switchyard && exec env SWITCHYARD__LISTENER__0__ADDRESS=127.0.0.1:0 \
    SWITCHYARD__LISTENER__1__ADDRESS=127.0.0.1:0 \
    setpriv --reuid switchyard --regid switchyard --init-groups -- "${cmd[@]}") >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    grep -q 'switchyard [0-9.]* ready' "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
grep -q 'switchyard [0-9.]* ready' "$log" || { kill "$pid" 2>/dev/null || true; fail "the service did not get ready: $(cat "$log")"; }
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[[ $rc -eq 0 ]] || fail "the service exited with $rc on SIGTERM: $(cat "$log")"
# The queue store it opened in the data directory: the user's, 0600.
check_stat /var/lib/switchyard/queues-realm1.redb switchyard:switchyard 600

say "upgrade (revision 2): the edited config is kept, its owner and mode too"
echo "# edited by test-deb.sh" >>/etc/switchyard/switchyard.toml
# Revision 2: the same package with the next version (repacked
# uncompressed: a second cargo-deb run would cost as much as the first).
dpkg-deb -R "$deb" "$work/pkg"
sed -i 's/^Version: \(.*\)-1$/Version: \1-2/' "$work/pkg/DEBIAN/control"
dpkg-deb -Znone -b "$work/pkg" "$work/switchyard-2.deb" >/dev/null
rm -rf "$work/pkg"
dpkg -i "$work/switchyard-2.deb" </dev/null >/dev/null
[[ "$(dpkg-query -W -f='${Version}' switchyard)" == *-2 ]] || fail "not upgraded"
grep -qx '# edited by test-deb.sh' /etc/switchyard/switchyard.toml \
    || fail "the upgrade replaced the edited config"
check_stat /etc/switchyard/switchyard.toml root:switchyard 640
check_stat /var/lib/switchyard switchyard:switchyard 700

say "dpkg -r: the binary and unit go; config, user and data stay"
dpkg -r switchyard </dev/null >/dev/null
[[ ! -e /usr/bin/switchyard ]] || fail "/usr/bin/switchyard is still there after dpkg -r"
[[ ! -e "$unit" ]] || fail "$unit is still there after dpkg -r"
[[ -f /etc/switchyard/switchyard.toml ]] || fail "dpkg -r removed the config"
getent passwd switchyard >/dev/null || fail "dpkg -r removed the user"
[[ -d /var/lib/switchyard ]] || fail "dpkg -r removed the data"

say "dpkg -P: config, data, user and group go"
dpkg -P switchyard </dev/null >/dev/null
installed=0
[[ ! -e /etc/switchyard ]] || fail "/etc/switchyard is still there after dpkg -P"
[[ ! -e /var/lib/switchyard ]] || fail "/var/lib/switchyard is still there after dpkg -P"
! getent passwd switchyard >/dev/null || fail "the user switchyard is still there after dpkg -P"
! getent group switchyard >/dev/null || fail "the group switchyard is still there after dpkg -P"
[[ ! -e /etc/systemd/system/multi-user.target.wants/switchyard.service ]] \
    || fail "the unit's enable link is still there after dpkg -P"
if dpkg-query -W -f='${Status}' switchyard 2>/dev/null | grep -qv 'not-installed'; then
    fail "dpkg still knows switchyard: $(dpkg-query -W -f='${Status}' switchyard)"
fi

say "passed in $((SECONDS - start)) s"
