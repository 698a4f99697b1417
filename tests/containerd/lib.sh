# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts sourcing this
# Shared helpers of tests/containerd/{up,down}; source it, do not run it.
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# A file that marks a folder as ours, so down never deletes a folder it did not make.
CONTAINERD_MARKER=.wasmlet-containerd

die() { echo "containerd: error: $*" >&2; exit 1; }
log() { echo "containerd: $*" >&2; }

# state_dir [DIR]: the absolute state folder, default $WASMLET_ROOT/.state/containerd.
state_dir() { state_dir_or "$WASMLET_ROOT/.state/containerd" "$@"; }

# containerd_pid STATE: the recorded pid, if it is still our containerd.
containerd_pid() { live_pid "$1/containerd.pid" "containerd --config $1/"; }

# kubelet_pid STATE: the recorded pid of the kubelet started by tests/containerd/kubelet.
kubelet_pid() { live_pid "$1/kubelet/kubelet.pid" "kubelet --config $1/kubelet/"; }
