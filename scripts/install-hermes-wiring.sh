#!/bin/sh
# Wire worker-shim into a Hermes install, for operators who prefer a script.
# This is a thin wrapper: all the work is done by `kanban-watchdog wire hermes`,
# and every argument is passed on to it unchanged.
#
#   scripts/install-hermes-wiring.sh                      # ~/.hermes (or $HERMES_HOME)
#   scripts/install-hermes-wiring.sh --hermes-home /srv/hermes --record-dir /var/lib/kw/records
#   scripts/install-hermes-wiring.sh --undo               # remove the wiring again
#   scripts/install-hermes-wiring.sh --help
#
# What it does (idempotent):
#   * <HERMES_HOME>/kanban-watchdog/bin/hermes -> worker-shim (a symlink)
#   * one marked block in <HERMES_HOME>/.env, which sets HERMES_BIN to that
#     symlink and WORKER_SHIM_TARGET to the real hermes
# Restart the gateway afterwards, because it reads .env only when it starts.
#
# Which kanban-watchdog it runs: $KANBAN_WATCHDOG if set, else kanban-watchdog
# on PATH, else this checkout's target/release or target/debug build (under
# $CARGO_TARGET_DIR when that is set). It exits with kanban-watchdog's own
# status: 0 = done, 2 = refused or failed (the reason is on stderr).

set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
target=${CARGO_TARGET_DIR:-$root/target}

bin=
from_build=no
if [ -n "${KANBAN_WATCHDOG:-}" ]; then
    bin=$KANBAN_WATCHDOG
elif command -v kanban-watchdog >/dev/null 2>&1; then
    bin=$(command -v kanban-watchdog)
else
    for profile in release debug; do
        if [ -x "$target/$profile/kanban-watchdog" ]; then
            bin=$target/$profile/kanban-watchdog
            from_build=yes
            break
        fi
    done
fi

if [ -z "$bin" ]; then
    echo "install-hermes-wiring: kanban-watchdog not found (not on PATH, not in $target/release or $target/debug)." >&2
    echo "  install it:  scripts/install   (or cargo install --path crates/kanban-watchdog && cargo install --path crates/worker-shim)" >&2
    echo "  or build it: cargo build --release -p kanban-watchdog -p worker-shim" >&2
    exit 1
fi

# Without --shim, the symlink points at the shim beside this binary, inside the
# build directory. If that build is cleaned, every Hermes worker fails to
# start. Say so, unless --shim or --undo makes it moot.
warn=$from_build
for arg in "$@"; do
    case $arg in
        --undo | --shim | --shim=*) warn=no ;;
    esac
done
if [ "$warn" = yes ]; then
    echo "install-hermes-wiring: using the build at $bin." >&2
    echo "  The shim link will point into $(dirname -- "$bin"); 'cargo clean' would break Hermes workers." >&2
    echo "  For a stable location: scripts/install, then pass --shim ~/.cargo/bin/worker-shim." >&2
fi

exec "$bin" wire hermes "$@"
