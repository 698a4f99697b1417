# shellcheck shell=bash
# Shared settings for the test scripts; source it, do not run it.
# Everything built or installed by the tests lives under WASMLET_CACHE, outside the clone,
# so a second run (and CI on the same machine) reuses it. One caveat of a target dir shared by
# copies of the tree: cargo names a workspace crate's artifacts by its path inside the
# workspace, so a copy's build can take an artifact another copy built later than its own
# files were last changed as its own. A fresh clone's files are newer than every artifact, so
# CI always builds its own; a work tree edited before another copy built should touch its
# sources (`find crates -name '*.rs' -exec touch {} +`).
export WASMLET_CACHE="${WASMLET_CACHE:-/var/cache/wasmlet}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WASMLET_CACHE/target}"
export PATH="$WASMLET_CACHE/bin:$PATH"
# CI builds each fresh clone at a new path, so incremental state is never reused there and
# only piles up on disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
WASMLET_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WASMLET_ROOT
mkdir -p "$WASMLET_CACHE/bin"

# step NAME: print a visible header for a phase of the suite.
step() { printf '\n==> %s\n' "$*"; }

# state_dir_or DEFAULT [DIR]: the absolute path of DIR (DEFAULT when not given), created.
state_dir_or() {
  local d="${2:-$1}"
  mkdir -p "$d"
  (cd "$d" && pwd)
}

# live_pid PIDFILE CMDLINE: the pid recorded in PIDFILE if that process's command line still
# contains CMDLINE, so a pid reused by another process is never taken for ours.
live_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid="$(cat "$1")"
  [[ "$( { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" == *"$2"* ]] || return 1
  echo "$pid"
}

# prune_target: the shared target directory keeps every clone's build of the workspace
# crates (their hashes include the clone's path); drop those artifacts and test binaries not
# rebuilt for two hours, and the incremental state of old sessions, so the disk stays bounded.
prune_target() {
  local deps="$CARGO_TARGET_DIR/debug/deps"
  [ -d "$deps" ] || return 0
  find "$deps" -maxdepth 1 -type f -mmin +120 \
    \( ! -name '*.*' -o -name 'libwasmlet*' -o -name 'wasmlet*' -o -name 'containerd_shim*' \) -delete
  find "$CARGO_TARGET_DIR/debug/incremental" -mindepth 1 -maxdepth 1 -mmin +720 \
    -exec rm -rf {} + 2>/dev/null || true
}
