# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts sourcing this
# Shared helpers of tests/cluster/{up,down,smoke}; source it, do not run it.
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CLUSTER_BIN="$WASMLET_CACHE/bin/wasmlet-cluster"
# Start order; down stops them in reverse.
CLUSTER_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
# A file that marks a folder as ours, so down never deletes a folder it did not make.
CLUSTER_MARKER=.wasmlet-cluster

die() { echo "cluster: error: $*" >&2; exit 1; }
log() { echo "cluster: $*" >&2; }

# state_dir [DIR]: the absolute state folder, default $WASMLET_ROOT/.state/cluster.
state_dir() { state_dir_or "$WASMLET_ROOT/.state/cluster" "$@"; }

# pid_of STATE NAME: the recorded pid of a component, if it is still our multi-call binary.
pid_of() { live_pid "$1/run/$2.pid" wasmlet-cluster; }

# alive STATE NAME: the recorded process still exists (it may not have exec'd the binary yet).
alive() { [ -f "$1/run/$2.pid" ] && kill -0 "$(cat "$1/run/$2.pid")" 2>/dev/null; }

# stop_component STATE NAME: SIGTERM, then SIGKILL after 15 s.
stop_component() {
  local pid i
  pid="$(pid_of "$1" "$2")" || { rm -f "$1/run/$2.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$1/run/$2.pid"
}

# stop_all STATE: stops every recorded component, the last started first.
stop_all() {
  local i
  for ((i = ${#CLUSTER_COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "$1" "${CLUSTER_COMPONENTS[$i]}"
  done
}

# log_tail STATE NAME: the end of a component's log, for error messages.
log_tail() {
  local f="$1/logs/$2.log"
  [ -f "$f" ] || return 0
  echo "---- last lines of $f ----" >&2
  tail -n 25 "$f" >&2
  echo "----" >&2
  # Kubernetes components die with one klog F line, often buried under shutdown noise.
  grep -m1 '^F[0-9]' "$f" | sed 's/^/cluster: fatal: /' >&2 || true
  if grep -q 'address already in use' "$f"; then
    echo "cluster: $2 could not bind its port: another process took it (see above)" >&2
  fi
}
