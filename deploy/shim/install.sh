#!/bin/sh
# Installs containerd-shim-wasmlet-v1 on the node this runs on (from the installer DaemonSet,
# with the host's / mounted at $HOST_ROOT): copies the shim next to containerd, registers the
# runtime handler `wasm` in containerd's config, restarts containerd, labels the node. When
# the image holds the wasmer shim too (containerd-shim-wasmlet-wasmer-v1), it is installed the
# same way as the runtime handler `wasmer` (runtime type io.containerd.wasmlet-wasmer.v1).
# Idempotent: a second run with the same shims changes nothing and restarts nothing.
#
# Environment: HOST_ROOT (default /host), NODE_NAME (from the downward API), SHIM (the shim
# binary in the installer image, default /containerd-shim-wasmlet-v1), WASMER_SHIM (default
# /containerd-shim-wasmlet-wasmer-v1; skipped when absent), CONTAINERD_CONFIG (on the host,
# default /etc/containerd/config.toml), SHIM_DIR (on the host, default /usr/local/bin),
# CONTAINERD_RESTART (default `chroot $HOST_ROOT systemctl restart containerd`).
set -eu

HOST_ROOT="${HOST_ROOT:-/host}"
SHIM="${SHIM:-/containerd-shim-wasmlet-v1}"
WASMER_SHIM="${WASMER_SHIM:-/containerd-shim-wasmlet-wasmer-v1}"
SHIM_DIR="${SHIM_DIR:-/usr/local/bin}"
CONFIG="${CONTAINERD_CONFIG:-/etc/containerd/config.toml}"
LABEL="wasmlet.dev/containerd-shim=installed"

log() { echo "wasmlet-install: $*"; }

# copy_shim SOURCE NAME: installs the shim SOURCE as NAME atomically; prints "changed" when
# it was new or different.
copy_shim() {
  dest="$HOST_ROOT$SHIM_DIR/$2"
  if [ -f "$dest" ] && cmp -s "$1" "$dest"; then return 0; fi
  mkdir -p "$HOST_ROOT$SHIM_DIR"
  cp "$1" "$dest.tmp" && chmod 0755 "$dest.tmp" && mv "$dest.tmp" "$dest"
  log "installed $SHIM_DIR/$2"
  echo changed
}

# plugin_prefix HANDLER: the CRI runtime plugin's table of HANDLER for this config version.
plugin_prefix() {
  if grep -Eq '^[[:space:]]*version[[:space:]]*=[[:space:]]*3' "$HOST_ROOT$CONFIG" 2>/dev/null; then
    echo "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.$1"
  else
    echo "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.$1"
  fi
}

# add_runtime HANDLER TYPE: appends the runtime handler once; prints "changed" when it did.
# It is all the kubelet needs, wasm OCI artifacts included: CRI (containerd 2.x) fetches an
# artifact's config and wasm layer into its content store, where the shim reads them. The
# transfer service's unpack_config for wasm platforms (only `ctr images pull --platform
# wasip1/wasm` needs it) is left to the operator: that list replaces containerd's default, so an
# entry written here without the node's own platform would stop every pull of the node. See the
# README, "Wasm OCI artifacts through containerd".
add_runtime() {
  file="$HOST_ROOT$CONFIG"
  mark="# wasmlet: runtime handler $1"
  if grep -qF "$mark" "$file" 2>/dev/null; then return 0; fi
  [ -f "$file" ] || { mkdir -p "$(dirname "$file")"; echo 'version = 3' >"$file"; }
  cp "$file" "$file.wasmlet-backup"
  printf '\n%s\n[%s]\n  runtime_type = "%s"\n' "$mark" "$(plugin_prefix "$1")" "$2" >>"$file"
  log "added runtime handler $1 to $CONFIG (backup: $CONFIG.wasmlet-backup)"
  echo changed
}

restart_containerd() {
  if sh -c "${CONTAINERD_RESTART:-chroot \"$HOST_ROOT\" systemctl restart containerd}"; then
    log "restarted containerd"
  else
    log "cannot restart containerd with systemctl; restart it by hand"
    return 1
  fi
}

label_node() {
  [ -n "${NODE_NAME:-}" ] || { log "NODE_NAME is not set; not labelling"; return 0; }
  kubectl label node "$NODE_NAME" "$LABEL" --overwrite >/dev/null
  log "labelled node $NODE_NAME $LABEL"
}

main() {
  changed="$(copy_shim "$SHIM" containerd-shim-wasmlet-v1)$(add_runtime wasm io.containerd.wasmlet.v1)"
  if [ -f "$WASMER_SHIM" ]; then
    changed="$changed$(copy_shim "$WASMER_SHIM" containerd-shim-wasmlet-wasmer-v1)"
    changed="$changed$(add_runtime wasmer io.containerd.wasmlet-wasmer.v1)"
  fi
  if [ -n "$changed" ]; then restart_containerd; fi
  label_node
}

main "$@"
