# Shared settings for the test scripts; source it, do not run it.
# Everything built or installed by the tests lives under WASMLET_CACHE, outside the clone,
# so a second run (and CI on the same machine) reuses it.
export WASMLET_CACHE="${WASMLET_CACHE:-/var/cache/wasmlet}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WASMLET_CACHE/target}"
export PATH="$WASMLET_CACHE/bin:$PATH"
WASMLET_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WASMLET_ROOT
mkdir -p "$WASMLET_CACHE/bin"

# step NAME: print a visible header for a phase of the suite.
step() { printf '\n==> %s\n' "$*"; }
