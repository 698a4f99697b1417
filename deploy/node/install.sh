#!/bin/sh
# Installs `wasmlet node` on this machine as a systemd service and joins the cluster with a
# bootstrap token, as a kubelet joins (kubeadm's TLS bootstrap):
#   1. the binary to BIN_DIR/wasmlet;
#   2. a bootstrap kubeconfig (the API server, its CA, the token) in CONF_DIR;
#   3. the node's settings in CONF_DIR/node.yaml (read by `wasmlet node --config`);
#   4. the unit wasmlet-node.service in UNIT_DIR, LimitNOFILE sized for --max-pods;
#   5. systemctl daemon-reload, enable --now (restart when something changed).
# Then the agent asks for a client certificate (a CSR the cluster approves, or an admin:
# `kubectl certificate approve`), registers the Node, and asks for its serving certificate,
# which an admin approves the same way; the script prints those commands.
# Idempotent: a second run with the same options changes nothing and restarts nothing.
#
# Usage: install.sh --apiserver URL --ca-file FILE --token ID.SECRET --node-ip IP [options]
#   --binary FILE          the built wasmlet (default: ./wasmlet, else `wasmlet` on PATH)
#   --node-name NAME       the Node's name (default: the host name)
#   --max-pods N           (default 1000)
#   --network cni|loopback (default cni)
#   --cni-conf-dir DIR     (default /etc/cni/net.d)   --cni-bin-dir DIR (default /opt/cni/bin)
#   --cluster-dns IP       the cluster DNS Service's IP (default 10.96.0.10)
#   --cluster-domain NAME  (default cluster.local)
#   --bootstrap-kubeconfig FILE   an existing bootstrap kubeconfig instead of the three above
#   --set KEY=VALUE        any other setting of node.yaml, a flag's name (repeatable; e.g.
#                          --set port=10250 --set eviction-hard=memory.available<200Mi)
#   --root DIR             write everything under DIR (an image or a chroot; no systemctl)
#   --bin-dir DIR --conf-dir DIR --data-dir DIR --unit-dir DIR   (defaults /usr/local/bin,
#                          /etc/wasmlet, /var/lib/wasmlet, /etc/systemd/system)
#   --no-start             write the files, do not touch systemd
# Environment: SYSTEMCTL (default systemctl).
set -eu

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT=/ BIN_DIR=/usr/local/bin CONF_DIR=/etc/wasmlet DATA_DIR=/var/lib/wasmlet
UNIT_DIR=/etc/systemd/system BINARY="" APISERVER="" CA_FILE="" TOKEN="" BOOTSTRAP=""
NODE_NAME="" NODE_IP="" MAX_PODS=1000 NETWORK=cni CNI_CONF_DIR=/etc/cni/net.d
CNI_BIN_DIR=/opt/cni/bin CLUSTER_DNS=10.96.0.10 CLUSTER_DOMAIN=cluster.local START=1 EXTRA=""
UNIT=wasmlet-node.service

log() { echo "wasmlet-node-install: $*" >&2; }
die() { echo "wasmlet-node-install: error: $*" >&2; exit 2; }

parse() {
  while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || case "$1" in --no-start|-h|--help) ;; *) die "$1 needs a value" ;; esac
    case "$1" in
      --apiserver) APISERVER="$2" ;;
      --ca-file) CA_FILE="$2" ;;
      --token) TOKEN="$2" ;;
      --bootstrap-kubeconfig) BOOTSTRAP="$2" ;;
      --binary) BINARY="$2" ;;
      --node-name) NODE_NAME="$2" ;;
      --node-ip) NODE_IP="$2" ;;
      --max-pods) MAX_PODS="$2" ;;
      --network) NETWORK="$2" ;;
      --cni-conf-dir) CNI_CONF_DIR="$2" ;;
      --cni-bin-dir) CNI_BIN_DIR="$2" ;;
      --cluster-dns) CLUSTER_DNS="$2" ;;
      --cluster-domain) CLUSTER_DOMAIN="$2" ;;
      --set)
        case "$2" in [a-z]*=*) ;; *) die "--set takes KEY=VALUE with KEY a flag's name, got $2" ;; esac
        EXTRA="$EXTRA${2%%=*}: \"${2#*=}\"
" ;;
      --root) ROOT="$2" ;;
      --bin-dir) BIN_DIR="$2" ;;
      --conf-dir) CONF_DIR="$2" ;;
      --data-dir) DATA_DIR="$2" ;;
      --unit-dir) UNIT_DIR="$2" ;;
      --no-start) START=0; shift; continue ;;
      -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
      *) die "unknown option $1 (see --help)" ;;
    esac
    shift 2
  done
}

check() {
  [ "$(id -u)" = 0 ] || [ "$ROOT" != / ] || die "run as root (it writes $BIN_DIR, $CONF_DIR and the unit)"
  [ -n "$NODE_IP" ] || die "--node-ip is required: the address the API server reaches the node's kubelet API on"
  if [ -z "$BOOTSTRAP" ]; then
    [ -n "$APISERVER" ] && [ -n "$CA_FILE" ] && [ -n "$TOKEN" ] ||
      die "give --apiserver, --ca-file and --token (or --bootstrap-kubeconfig)"
    case "$APISERVER" in https://*) ;; *) die "--apiserver must be an https:// URL, got $APISERVER" ;; esac
    [ -f "$CA_FILE" ] || die "--ca-file $CA_FILE does not exist (the cluster's CA, /etc/kubernetes/pki/ca.crt on kubeadm)"
    echo "$TOKEN" | grep -Eq '^[a-z0-9]{6}\.[a-z0-9]{16}$' ||
      die "--token must be a bootstrap token ID.SECRET ([a-z0-9]{6}.[a-z0-9]{16}; kubeadm token create prints one)"
  else
    [ -f "$BOOTSTRAP" ] || die "--bootstrap-kubeconfig $BOOTSTRAP does not exist"
  fi
  case "$NETWORK" in cni|loopback) ;; *) die "--network must be cni or loopback, got $NETWORK" ;; esac
  echo "$MAX_PODS" | grep -Eq '^[1-9][0-9]{0,6}$' || die "--max-pods must be a positive number, got $MAX_PODS"
  if [ -z "$BINARY" ]; then
    if [ -x ./wasmlet ]; then BINARY=./wasmlet; else BINARY="$(command -v wasmlet || true)"; fi
  fi
  [ -n "$BINARY" ] && [ -x "$BINARY" ] ||
    die "no wasmlet binary: build it (cargo build --release -p wasmlet) and pass --binary target/release/wasmlet"
  [ -n "$NODE_NAME" ] || NODE_NAME="$(tr 'A-Z' 'a-z' </proc/sys/kernel/hostname)"
}

# put DEST MODE: writes stdin to ROOT/DEST atomically, unless it holds that already; prints
# "changed" when it wrote.
put() {
  dest="${ROOT%/}$1" tmp="${ROOT%/}$1.wasmlet-new"
  mkdir -p "$(dirname "$dest")"
  cat >"$tmp"
  chmod "$2" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then rm -f "$tmp"; return 0; fi
  mv "$tmp" "$dest"
  log "wrote $1"
  echo changed
}

bootstrap_kubeconfig() {
  if [ -n "$BOOTSTRAP" ]; then cat "$BOOTSTRAP"; return; fi
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: $APISERVER
    certificate-authority-data: $(base64 -w0 <"$CA_FILE")
users:
- name: kubelet-bootstrap
  user:
    token: $TOKEN
contexts:
- name: bootstrap
  context: {cluster: cluster, user: kubelet-bootstrap}
current-context: bootstrap
EOF
}

node_config() {
  cat <<EOF
# Written by deploy/node/install.sh; the keys are the flags of \`wasmlet node --help\`.
kubeconfig: $DATA_DIR/kubeconfig
bootstrap-kubeconfig: $CONF_DIR/bootstrap.kubeconfig
node-name: $NODE_NAME
node-ip: $NODE_IP
data-dir: $DATA_DIR
max-pods: $MAX_PODS
network: $NETWORK
cni-conf-dir: $CNI_CONF_DIR
cni-bin-dir: [$CNI_BIN_DIR]
cluster-dns: [$CLUSTER_DNS]
cluster-domain: $CLUSTER_DOMAIN
EOF
  printf '%s' "$EXTRA"
}

# The unit: deploy/node's, with this install's paths and open-files limit (four descriptors a
# pod, with room for the agent's own).
unit() {
  nofile=$((MAX_PODS * 4 + 16384))
  [ "$nofile" -ge 65536 ] || nofile=65536
  sed -e "s|^ExecStart=.*|ExecStart=$BIN_DIR/wasmlet node --config $CONF_DIR/node.yaml|" \
    -e "s|^LimitNOFILE=.*|LimitNOFILE=$nofile|" "$HERE/wasmlet-node.service"
}

start() {
  systemctl="${SYSTEMCTL:-systemctl}"
  if [ "$START" = 0 ] || [ "$ROOT" != / ]; then
    log "files written; start it with: systemctl daemon-reload && systemctl enable --now $UNIT"
    return 0
  fi
  if [ -n "$1" ]; then
    $systemctl daemon-reload
    $systemctl enable "$UNIT" >/dev/null 2>&1 || $systemctl enable "$UNIT"
    $systemctl restart "$UNIT"
    log "started $UNIT"
  else
    $systemctl is-active --quiet "$UNIT" 2>/dev/null || $systemctl start "$UNIT"
    log "unchanged; $UNIT is running"
  fi
}

main() {
  parse "$@"
  check
  changed="$(put "$BIN_DIR/wasmlet" 0755 <"$BINARY")"
  changed="$changed$(bootstrap_kubeconfig | put "$CONF_DIR/bootstrap.kubeconfig" 0600)"
  changed="$changed$(node_config | put "$CONF_DIR/node.yaml" 0644)"
  changed="$changed$(unit | put "$UNIT_DIR/$UNIT" 0644)"
  mkdir -p "${ROOT%/}$DATA_DIR"
  start "$changed"
  cat <<EOF
wasmlet-node-install: node $NODE_NAME: once the agent has asked for its certificates, approve
wasmlet-node-install: them as for any kubelet (a cluster may approve the client one itself):
wasmlet-node-install:   kubectl get csr
wasmlet-node-install:   kubectl certificate approve <the kubelet-serving CSR of system:node:$NODE_NAME>
wasmlet-node-install:   kubectl get node $NODE_NAME
EOF
}

main "$@"
