#!/usr/bin/env bash
# e2e-cluster.sh runs a real single-node Kubernetes cluster on this machine for the e2e
# suite: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy (iptables mode) v1.37.2 built from source through the Go module proxy,
# Debian's containerd/runc/CNI plugins, bridge + host-local pod network, and CoreDNS
# (built from the Go module proxy, run as a pod from a locally built image).
#
# Everything runs as background processes of this machine (no systemd, no Docker), with
# pid files and logs under one work dir ($PIPES_E2E_DIR, default /tmp/pipes-e2e). Nothing
# is pulled: images are packed locally (hack/image) and imported into containerd.
#
# Network rule: traffic only to loopback and to the bridge this script creates. The node
# IP is this machine's own address; the service range is routed into a port-less bridge
# (pipes-svc0) and an iptables guard rejects anything a pod sends outside the pod network.
#
# Usage: hack/e2e-cluster.sh COMMAND
#   up                build (once, cached) and start the cluster; no-op when it is running
#   down              stop everything and remove every trace (safe when nothing runs);
#                     PIPES_E2E_KEEP_LOGS=1 keeps $PIPES_E2E_DIR/logs
#   status            what runs, and whether the API, node and DNS answer
#   kubeconfig        print the admin kubeconfig path
#   logs              print the log directory
#   load-image TAR... import docker-archive tarballs (go run ./hack/image) into containerd
#   build             only build the binaries (warms the cache)
#   smoke             check DNS, ClusterIP (pod, host, hairpin), logs, exec on the running cluster
#   ctr ARGS...       run ctr against the cluster's containerd, namespace k8s.io
#   env               print the cluster's environment (KUBECONFIG=..., NODE_NAME=...)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_PREFIX=e2e-cluster
# shellcheck source-path=SCRIPTDIR source=lib/build.sh
source "$ROOT/hack/lib/build.sh"

COREDNS_VERSION="${COREDNS_VERSION:-1.15.0}"
COREDNS_ASSETS="$CACHE_ROOT/coredns/v${COREDNS_VERSION}-$(goenv GOOS)-$(goenv GOARCH)"
NODE_BINARIES=(kubelet kube-controller-manager kube-scheduler kube-proxy)

E2E_DIR="${PIPES_E2E_DIR:-/tmp/pipes-e2e}"
E2E_DIR="${E2E_DIR%/}"
MARKER="$E2E_DIR/.pipes-e2e"
BIN="$E2E_DIR/bin"              # kit, image tool
IMAGES="$E2E_DIR/images"        # image tarballs imported at start
PKI="$E2E_DIR/pki"
ETC="$E2E_DIR/etc"
LOGS="$E2E_DIR/logs"
RUN="$E2E_DIR/run"              # pid files, containerd socket and state
STATE="$E2E_DIR/state"          # etcd data, containerd root, kubelet root, CNI data
SAVED="$E2E_DIR/saved"          # what the machine looked like before `up`
KUBECONFIG_FILE="$E2E_DIR/kubeconfig"
CONTAINERD_SOCK="$RUN/containerd/containerd.sock"

NODE_NAME="${PIPES_E2E_NODE_NAME:-pipes-e2e}"
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/12
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
API_PORT="${PIPES_E2E_API_PORT:-6443}"
ETCD_PORT="${PIPES_E2E_ETCD_PORT:-2379}"
ETCD_PEER_PORT=$((ETCD_PORT + 1))
SVC_BRIDGE=pipes-svc0
POD_BRIDGE=cni0
GUARD_CHAIN=PIPES-E2E-GUARD
PAUSE_IMAGE=pipes.local/pause:e2e
KIT_IMAGE=pipes.local/kit:e2e
COREDNS_IMAGE=pipes.local/coredns:e2e
# Processes in start order; stopped in reverse.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# Paths outside $E2E_DIR that containerd/kubelet/CNI create whatever they are told;
# removed by `down` when they did not exist before `up`.
SYSTEM_PATHS=(/run/containerd /var/lib/cni /var/log/pods /var/log/containers /run/netns /var/run/netns
  /var/lib/kubelet /var/lib/containerd /opt/containerd /etc/cni /opt/cni /etc/kubernetes /run/runc)
# Kernel settings kubelet, kube-proxy and the CNI bridge plugin change; restored by `down`.
SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
APT_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack)
CNI_BIN_DIR=/usr/lib/cni
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
T0=$(now_ms)

# --- output ---------------------------------------------------------------------------

since() { # since START_MS: seconds elapsed, one decimal
  local d=$(($(now_ms) - $1))
  printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}
step() { printf '%s: [%5ss] %s\n' "$LOG_PREFIX" "$(since "$T0")" "$*" >&2; }
tail_log() { # tail_log NAME: last lines of a component's log, for failure messages
  [[ -f "$LOGS/$1.log" ]] || return 0
  echo "---- last lines of $LOGS/$1.log ----" >&2
  tail -n 25 "$LOGS/$1.log" >&2
  echo "----" >&2
}

# --- build ---------------------------------------------------------------------------------

quiet() { # quiet CMD...: run CMD, showing its output only when it fails
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
}

have_node_binaries() {
  local b
  for b in "${NODE_BINARIES[@]}"; do [[ -x "$ASSETS/$b" ]] || return 1; done
}

build_coredns() { # $COREDNS_ASSETS/coredns with only the plugins the e2e cluster uses
  local dir="$BUILD_DIR/coredns-$COREDNS_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/main.go" <<'GO'
// Command coredns is CoreDNS with only the plugins the e2e cluster's Corefile uses (no
// forward plugin: nothing outside the cluster is ever asked).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func init() {
	// Same relative order as upstream's plugin.cfg (the order plugins see a query in).
	dnsserver.Directives = []string{"ready", "health", "errors", "log", "loadbalance", "cache", "template", "kubernetes"}
}

func main() { coremain.Run() }
GO
  (cd "$dir" && go mod init pipes.dev/build/coredns >/dev/null 2>&1 &&
    download "github.com/coredns/coredns@v$COREDNS_VERSION" >/dev/null &&
    quiet go get "github.com/coredns/coredns@v$COREDNS_VERSION" && go mod tidy >&2 &&
    nice -n 10 go build -trimpath -ldflags "-s -w" -o "$COREDNS_ASSETS/coredns.tmp" . &&
    mv "$COREDNS_ASSETS/coredns.tmp" "$COREDNS_ASSETS/coredns")
}

# build_binaries: etcd, kube-apiserver, kubectl (hack/envtest-assets.sh), then kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy and CoreDNS, one at a time, cached.
build_binaries() {
  require_go
  "$ROOT/hack/envtest-assets.sh" >/dev/null
  if ! have_node_binaries; then
    # Same lock as hack/envtest-assets.sh: never two Kubernetes builds at once.
    lock_dir "$ASSETS" 9
    (
      go_build_env
      mkdir -p "$BUILD_DIR"
      local b
      for b in "${NODE_BINARIES[@]}"; do
        [[ -x "$ASSETS/$b" ]] && continue
        log "building $b v$K8S_VERSION (kubelet and kube-controller-manager take 3-5 minutes each on 2 cores)"
        timed "$b" build_kube "$b" "cmd/$b"
      done
    ) || die "building the node binaries failed"
    exec 9>&-
  fi
  if [[ ! -x "$COREDNS_ASSETS/coredns" ]]; then
    lock_dir "$COREDNS_ASSETS" 8
    if [[ ! -x "$COREDNS_ASSETS/coredns" ]]; then
      log "building CoreDNS v$COREDNS_VERSION (a few minutes on 2 cores)"
      (go_build_env; mkdir -p "$BUILD_DIR"; timed coredns build_coredns) || die "building CoreDNS failed"
    fi
    exec 8>&-
  fi
}

# build_images: the kit binary (pause + test image) and the image tool from this repo,
# then the image tarballs. Cheap (Go build cache); done at every `up`.
build_images() {
  mkdir -p "$BIN" "$IMAGES"
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/kit" ./hack/e2e/kit &&
    go build -o "$BIN/image" ./hack/image) || die "building hack/e2e/kit or hack/image failed"
  "$BIN/image" --tag "$PAUSE_IMAGE" --binary "$BIN/kit=/kit" --entrypoint /kit,pause --user 65535:65535 --out "$IMAGES/pause.tar" >/dev/null
  "$BIN/image" --tag "$KIT_IMAGE" --binary "$BIN/kit=/kit" --entrypoint /kit --out "$IMAGES/kit.tar" >/dev/null
  "$BIN/image" --tag "$COREDNS_IMAGE" --binary "$COREDNS_ASSETS/coredns=/coredns" --entrypoint /coredns \
    --cmd -conf,/etc/coredns/Corefile --out "$IMAGES/coredns.tar" >/dev/null
}

# --- preflight -----------------------------------------------------------------------------

install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --no-install-recommends)
  if ! apt-get install "${apt_opts[@]}" "${missing[@]}" >"$LOGS/apt.log" 2>&1; then
    step "apt-get install failed; running apt-get update first"
    apt-get update -q >>"$LOGS/apt.log" 2>&1 || { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get update failed"; }
    apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$LOGS/apt.log" 2>&1 ||
      { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get install ${missing[*]} failed (see $LOGS/apt.log)"; }
  fi
}

preflight_basic() {
  [[ "$(uname -s)" == Linux ]] || die "Linux only"
  [[ $EUID -eq 0 ]] || die "must run as root (it starts kubelet and containerd, creates bridges and iptables rules); try: sudo $0 ${CMD:-up}"
  local c
  for c in ip ss flock openssl mount umount dpkg-query sysctl base64 setsid find; do
    command -v "$c" >/dev/null || die "'$c' is not on PATH"
  done
}

preflight_host() {
  grep -qw overlay /proc/filesystems || die "the kernel has no overlayfs (containerd's overlayfs snapshotter needs it)"
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    if ! grep -qw memory /sys/fs/cgroup/cgroup.controllers || ! grep -qw pids /sys/fs/cgroup/cgroup.controllers; then
      die "cgroup v2 without the memory/pids controllers"
    fi
  else
    for c in cpu memory pids devices freezer; do
      [[ -d /sys/fs/cgroup/$c ]] || die "no cgroup support: /sys/fs/cgroup/$c is missing (kubelet needs cgroup v1 or v2)"
    done
  fi
  if [[ -d /sys/fs/cgroup/memory/kubepods || -d /sys/fs/cgroup/kubepods || -d /sys/fs/cgroup/kubepods.slice ]]; then
    die "kubepods cgroups exist: another kubelet runs (or ran) on this machine; stop it first"
  fi
  local c
  for c in iptables ip6tables iptables-save containerd runc ctr "$CNI_BIN_DIR/bridge" "$CNI_BIN_DIR/host-local" "$CNI_BIN_DIR/loopback"; do
    command -v "$c" >/dev/null || [[ -x "$c" ]] || die "$c is missing after installing ${APT_PACKAGES[*]}"
  done
  # overlayfs must work on the filesystem holding containerd's root.
  local t="$STATE/overlay-test"
  mkdir -p "$t"/{l,u,w,m}
  if ! mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    rm -rf "$t"; die "cannot mount overlayfs under $STATE (is $E2E_DIR itself on overlayfs? set PIPES_E2E_DIR)"
  fi
  umount "$t/m"; rm -rf "$t"
  ip link add pipes-e2e-tst type bridge 2>/dev/null ||
    die "cannot create a bridge interface (CAP_NET_ADMIN and the bridge driver are needed)"
  ip link del pipes-e2e-tst
  [[ -d /proc/sys/net/bridge ]] || log "warning: no br_netfilter (/proc/sys/net/bridge): pod-to-service-to-pod traffic on the same bridge may fail"
  local ipt
  for ipt in iptables ip6tables; do
    if $ipt -w -S 2>/dev/null | grep -qE '^-N (KUBE-|CNI-)' || $ipt -w -t nat -S 2>/dev/null | grep -qE '^-N (KUBE-|CNI-)'; then
      die "$ipt has KUBE-*/CNI-* chains: another Kubernetes node runs (or ran) on this machine; remove them first (hack/e2e-cluster.sh down removes leftovers of ours)"
    fi
  done
  local port
  for port in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" 10248 10250 10256 10249 10257 10259; do
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
      die "TCP port $port is in use ($(ss -Hltnp "sport = :$port" | awk '{print $NF}' | head -1)); the e2e cluster needs it"
    fi
  done
}

# detect_node_ip: this machine's own IPv4 address (that of the default-route interface, else
# the first global one). Overridable with PIPES_E2E_NODE_IP. Never another host's address.
detect_node_ip() {
  local ip dev
  if [[ -n "${PIPES_E2E_NODE_IP:-}" ]]; then
    ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1 | grep -qxF "$PIPES_E2E_NODE_IP" ||
      die "PIPES_E2E_NODE_IP=$PIPES_E2E_NODE_IP is not an address of this machine"
    echo "$PIPES_E2E_NODE_IP"; return
  fi
  dev=$(ip -4 route show default 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="dev") {print $(i+1); exit}}')
  if [[ -n "$dev" ]]; then
    ip=$(ip -4 -o addr show dev "$dev" scope global | awk '{print $4}' | cut -d/ -f1 | head -1)
  fi
  if [[ -z "${ip:-}" ]]; then
    ip=$(ip -4 -o addr show scope global | awk -v b="$POD_BRIDGE" -v s="$SVC_BRIDGE" '$2!=b && $2!=s {print $4}' | cut -d/ -f1 | head -1)
  fi
  [[ -n "${ip:-}" ]] || die "this machine has no global IPv4 address to use as the node IP; set PIPES_E2E_NODE_IP"
  echo "$ip"
}

# --- processes -------------------------------------------------------------------------------

# start_bg NAME EXE ARGS...: start EXE in its own session, log to $LOGS/NAME.log, pid file
# $RUN/NAME.pid holding "PID EXE" (the exe is checked before any signal is sent).
start_bg() {
  local name=$1 exe; shift
  exe=$(readlink -f "$(command -v "$1")")
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo "$! $exe" >"$RUN/$name.pid"
}

pid_of() { # pid_of NAME: print the PID when the process of NAME's pid file still runs
  local f="$RUN/$1.pid" pid exe
  [[ -f "$f" ]] || return 1
  read -r pid exe <"$f"
  [[ -n "$pid" ]] && alive "$pid" || return 1
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] || return 1
  echo "$pid"
}

alive() { # alive PID: the process exists and is not a zombie (our daemons' parent is
  # init once `up` has exited, and init may reap them late)
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

stop_pid() { # stop_pid PID: SIGTERM, wait up to 20 s, SIGKILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid did not exit 20 s after SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || return 0; sleep 0.1; done
}

stop_component() {
  local pid t
  t=$(now_ms)
  if pid=$(pid_of "$1"); then
    stop_pid "$pid"
    log "stopped $1 (pid $pid) in $(since "$t")s"
  fi
  rm -f "$RUN/$1.pid"
}

wait_for() { # wait_for SECONDS WHAT LOGNAME CMD...: poll CMD every 0.25 s
  local secs=$1 what=$2 logname=$3 deadline; shift 3
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$logname" ]] && ! pid_of "$logname" >/dev/null; then
      tail_log "$logname"; die "$logname exited while waiting for $what"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n "$logname" ]] && tail_log "$logname"
      die "timed out after ${secs}s waiting for $what"
    fi
    sleep 0.25
  done
}

kctl() { "$ASSETS/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# --- configuration -------------------------------------------------------------------------

gen_pki() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -days 30 -subj "/CN=pipes-e2e-ca" -out ca.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    cert() { # cert NAME SUBJECT [SANS]
      local n=$1 subj=$2 san=${3:-}
      openssl ecparam -name prime256v1 -genkey -noout -out "$n.key" 2>/dev/null
      openssl req -new -key "$n.key" -subj "$subj" -out "$n.csr" 2>/dev/null
      if [[ -n "$san" ]]; then
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n' "$san" >"$n.ext"
      else
        printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n' >"$n.ext"
      fi
      openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$n.ext" -out "$n.crt" 2>/dev/null
      rm -f "$n.csr" "$n.ext"
    }
    cert apiserver "/CN=kube-apiserver" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,IP:127.0.0.1,IP:$API_SERVICE_IP,IP:$NODE_IP"
    cert admin "/O=system:masters/CN=pipes-e2e-admin"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
    cert kubelet-serving "/CN=$NODE_NAME" "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
    cert kube-controller-manager "/CN=system:kube-controller-manager"
    cert kube-scheduler "/CN=system:kube-scheduler"
    cert kube-proxy "/CN=system:kube-proxy"
    cert front-proxy-client "/CN=front-proxy-client"
  ) || die "generating certificates with openssl failed"
  chmod 600 "$PKI"/*.key
}

write_kubeconfig() { # write_kubeconfig FILE CERTNAME
  local f=$1 n=$2
  cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pipes-e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $n
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$n.crt")
    client-key-data: $(base64 -w0 "$PKI/$n.key")
contexts:
- name: pipes-e2e
  context:
    cluster: pipes-e2e
    user: $n
current-context: pipes-e2e
EOF
  chmod 600 "$f"
}

write_configs() {
  mkdir -p "$ETC/cni" "$STATE/cni/networks" "$STATE/pod-logs"
  write_kubeconfig "$KUBECONFIG_FILE" admin
  local n
  for n in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    write_kubeconfig "$ETC/$n.kubeconfig" "$n"
  done

  cat >"$ETC/containerd.toml" <<EOF
# containerd 1.6 (Debian) for the pipes e2e cluster: own root/state/socket under $E2E_DIR.
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails and runc cannot start the
  # sandbox ("can't get final child's PID from pipe: EOF"). Clamp to containerd's own value.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$ETC/cni"
    max_conf_num = 1
EOF

  # Pods talk to pods and to this machine only: no masquerading to the outside (ipMasq
  # false), and the guard chain rejects anything else (see guard_network).
  cat >"$ETC/cni/10-pipes-e2e.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "pipes-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/networks",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  # Pods with dnsPolicy Default get this instead of the host's resolv.conf, whose
  # nameserver is another host.
  printf 'nameserver %s\noptions ndots:1\n' "$DNS_SERVICE_IP" >"$ETC/resolv.conf"

  cat >"$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 hosts (this VM is hybrid v1): kubelet refuses them unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# The apiserver dials the node IP for logs/exec/port-forward.
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: ["$DNS_SERVICE_IP"]
resolvConf: $ETC/resolv.conf
podLogsDir: $STATE/pod-logs
failSwapOn: false
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
maxPods: 110
# Images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
EOF

  cat >"$ETC/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $ETC/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# No CAP_SYS_RESOURCE here, and leave the host's conntrack settings alone.
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
EOF
}

# --- machine state (saved at `up`, restored at `down`) ---------------------------------------

save_machine_state() {
  mkdir -p "$SAVED"
  [[ -f "$SAVED/sysctl" ]] || {
    local s v
    for s in "${SYSCTLS[@]}"; do
      v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
    done >"$SAVED/sysctl.tmp" && mv "$SAVED/sysctl.tmp" "$SAVED/sysctl"
  }
  [[ -f "$SAVED/paths" ]] || {
    local p
    for p in "${SYSTEM_PATHS[@]}"; do [[ -e "$p" ]] || echo "$p"; done >"$SAVED/paths.tmp" && mv "$SAVED/paths.tmp" "$SAVED/paths"
  }
  [[ -f "$SAVED/iptables" ]] || { iptables_rules >"$SAVED/iptables.tmp" && mv "$SAVED/iptables.tmp" "$SAVED/iptables"; }
  [[ -f "$SAVED/links" ]] || { ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 >"$SAVED/links.tmp" && mv "$SAVED/links.tmp" "$SAVED/links"; }
  # Teardown undoes machine-wide changes only once this exists (so a failed preflight never
  # makes `down` remove somebody else's chains, bridges or cgroups).
  touch "$SAVED/complete"
}

saved() { [[ -f "$SAVED/complete" ]]; }

iptables_rules() { # the machine's iptables/ip6tables rules and chains, without counters
  local ipt t
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for t in filter nat mangle raw; do
      $ipt -w -t $t -S 2>/dev/null | sed "s/^/$ipt $t /"
    done
  done
}

# guard_network: route the service range into a port-less bridge (so an unmatched service
# IP never follows the default route off this machine) and reject any pod traffic that
# leaves the pod network other than to this machine itself.
guard_network() {
  # Replies of a pod reached through a service IP from a pod on the same bridge must pass
  # iptables to be un-NATed (restored by `down`).
  [[ -d /proc/sys/net/bridge ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  ip link show "$SVC_BRIDGE" >/dev/null 2>&1 || ip link add "$SVC_BRIDGE" type bridge
  ip link set "$SVC_BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$SVC_BRIDGE" src "$NODE_IP"
  iptables -w -N "$GUARD_CHAIN" 2>/dev/null || iptables -w -F "$GUARD_CHAIN"
  # forwarded traffic from pods: only to other pods
  iptables -w -A "$GUARD_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j RETURN
  iptables -w -A "$GUARD_CHAIN" -s "$POD_CIDR" -j REJECT --reject-with icmp-admin-prohibited
  # forwarded or local traffic to a service IP that was translated to an address outside
  # the pod network and this machine (a Service with a foreign endpoint)
  iptables -w -A "$GUARD_CHAIN" -m conntrack --ctstate DNAT --ctorigdst "$SERVICE_CIDR" -d "$POD_CIDR" -j RETURN
  iptables -w -A "$GUARD_CHAIN" -m conntrack --ctstate DNAT --ctorigdst "$SERVICE_CIDR" -m addrtype ! --dst-type LOCAL -j REJECT --reject-with icmp-admin-prohibited
  iptables -w -C FORWARD -j "$GUARD_CHAIN" 2>/dev/null || iptables -w -I FORWARD 1 -j "$GUARD_CHAIN"
  iptables -w -C OUTPUT -j "$GUARD_CHAIN" 2>/dev/null || iptables -w -I OUTPUT 1 -j "$GUARD_CHAIN"
}

# --- start -----------------------------------------------------------------------------------

start_containerd() {
  mkdir -p "$RUN/containerd" "$STATE/containerd"
  start_bg containerd containerd --config "$ETC/containerd.toml"
  wait_for 30 "containerd" containerd ctr --address "$CONTAINERD_SOCK" version
  load_images "$IMAGES/pause.tar" "$IMAGES/kit.tar" "$IMAGES/coredns.tar" >/dev/null
  step "containerd up, images $PAUSE_IMAGE $KIT_IMAGE $COREDNS_IMAGE imported"
}

load_images() {
  local t
  for t in "$@"; do
    [[ -f "$t" ]] || die "no such image tarball: $t"
    ctr_ images import --all-platforms "$t" || die "importing $t into containerd failed"
  done
}

start_control_plane() {
  mkdir -p "$STATE/etcd"; chmod 700 "$STATE/etcd"
  start_bg etcd "$ASSETS/etcd" --name=pipes-e2e --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="pipes-e2e=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync=true --log-level=warn
  start_bg kube-apiserver "$ASSETS/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=0.0.0.0 --secure-port="$API_PORT" --advertise-address="$NODE_IP" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --api-audiences="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --requestheader-client-ca-file="$PKI/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --profiling=false
  wait_for 120 "kube-apiserver /readyz" kube-apiserver kctl get --raw=/readyz
  step "kube-apiserver ready (https://127.0.0.1:$API_PORT)"

  start_bg kube-controller-manager "$ASSETS/kube-controller-manager" \
    --kubeconfig="$ETC/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$ETC/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$ETC/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --profiling=false
  start_bg kube-scheduler "$ASSETS/kube-scheduler" \
    --kubeconfig="$ETC/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$ETC/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$ETC/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

start_node() {
  mkdir -p "$STATE/kubelet"
  start_bg kubelet "$ASSETS/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$STATE/kubelet" --v=2
  start_bg kube-proxy "$ASSETS/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=2
  wait_for 120 "node $NODE_NAME to register" kubelet kctl get node "$NODE_NAME"
  wait_for 120 "node $NODE_NAME Ready" kubelet node_ready
  step "node $NODE_NAME Ready (node IP $NODE_IP)"
  wait_for 120 "the default ServiceAccount (kube-controller-manager creates it)" kube-controller-manager kctl get serviceaccount default -n default
  step "default ServiceAccount exists"
}

node_ready() {
  [[ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

coredns_manifest() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  # Cluster names only: no forward plugin, so nothing outside the cluster is ever asked;
  # every other name is NXDOMAIN.
  Corefile: |
    $CLUSTER_DOMAIN:1053 in-addr.arpa:1053 ip6.arpa:1053 {
        errors
        health :8080
        ready :8181
        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            ttl 5
        }
        cache 5
        loadbalance
    }
    .:1053 {
        errors
        template ANY ANY {
            rcode NXDOMAIN
        }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      terminationGracePeriodSeconds: 5
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {name: dns, containerPort: 1053, protocol: UDP}
        - {name: dns-tcp, containerPort: 1053, protocol: TCP}
        resources:
          requests: {cpu: 10m, memory: 32Mi}
          limits: {memory: 128Mi}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          periodSeconds: 10
          failureThreshold: 5
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 1
      volumes:
      - name: config
        configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $DNS_SERVICE_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
EOF
}

start_coredns() {
  coredns_manifest >"$ETC/coredns.yaml"
  kctl apply -f "$ETC/coredns.yaml" >/dev/null
  wait_for 120 "the CoreDNS pod to be Ready (kubectl -n kube-system describe pod -l k8s-app=kube-dns)" kubelet \
    kctl -n kube-system wait --for=condition=Available deployment/coredns --timeout=1s
  wait_for 60 "CoreDNS to answer on $DNS_SERVICE_IP (service IP through kube-proxy)" kube-proxy dns_answers
  step "CoreDNS answers: kubernetes.default.svc.$CLUSTER_DOMAIN = $API_SERVICE_IP"
}

dns_answers() {
  [[ "$("$BIN/kit" resolve --server "$DNS_SERVICE_IP:53" "kubernetes.default.svc.$CLUSTER_DOMAIN." 2>/dev/null)" == "$API_SERVICE_IP" ]]
}

write_env() {
  cat >"$E2E_DIR/e2e.env" <<EOF
KUBECONFIG=$KUBECONFIG_FILE
PIPES_E2E_KUBECTL=$ASSETS/kubectl
PIPES_E2E_NODE_NAME=$NODE_NAME
PIPES_E2E_NODE_IP=$NODE_IP
PIPES_E2E_CONTAINERD_SOCK=$CONTAINERD_SOCK
PIPES_E2E_KIT_IMAGE=$KIT_IMAGE
PIPES_E2E_LOGS=$LOGS
EOF
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
}

cmd_up() {
  preflight_basic
  if [[ -f "$MARKER" ]]; then
    if all_running && kctl get --raw=/readyz >/dev/null 2>&1; then
      step "already up; nothing to do (hack/e2e-cluster.sh down to stop it)"
      print_summary
      return 0
    fi
    step "a previous cluster was not stopped cleanly; tearing it down first"
    cmd_down
  fi
  if [[ -d "$E2E_DIR" && -n "$(ls -A "$E2E_DIR" 2>/dev/null)" && ! -f "$MARKER" ]]; then
    die "$E2E_DIR exists, is not empty and is not an e2e cluster dir; set PIPES_E2E_DIR or remove it"
  fi
  mkdir -p "$E2E_DIR" "$LOGS" "$RUN" "$STATE" "$ETC"
  touch "$MARKER"
  # From here on a failure (or Ctrl-C) tears everything down again, keeping the logs.
  # Machine-wide changes are undone only once save_machine_state has run.
  trap 'rc=$?; trap - EXIT INT TERM; if ((rc != 0)); then on_up_failure; fi; exit $rc' EXIT
  trap 'exit 130' INT TERM

  install_packages
  build_binaries
  step "binaries ready ($ASSETS, $COREDNS_ASSETS)"
  build_images
  step "images built ($IMAGES)"
  NODE_IP=$(detect_node_ip)
  preflight_host
  save_machine_state
  T0=$(now_ms)
  step "starting (node $NODE_NAME, node IP $NODE_IP, pods $POD_CIDR, services $SERVICE_CIDR)"
  guard_network
  gen_pki
  write_configs
  start_containerd
  start_control_plane
  start_node
  start_coredns
  write_env
  trap - EXIT INT TERM
  step "cluster up"
  print_summary
}

on_up_failure() {
  echo >&2
  log "up failed; tearing down (logs are kept in $LOGS)"
  KEEP_LOGS=1 cmd_down || true
}

print_summary() {
  cat <<EOF

  export KUBECONFIG=$KUBECONFIG_FILE
  kubectl:      $ASSETS/kubectl
  node:         $NODE_NAME ($(sed -n 's/^PIPES_E2E_NODE_IP=//p' "$E2E_DIR/e2e.env" 2>/dev/null))
  images:       $KIT_IMAGE (test), $PAUSE_IMAGE, $COREDNS_IMAGE; add yours with: hack/e2e-cluster.sh load-image FILE.tar
  logs:         $LOGS
  environment:  $E2E_DIR/e2e.env
  stop:         hack/e2e-cluster.sh down
EOF
}

# --- teardown ----------------------------------------------------------------------------------

cmd_down() {
  preflight_basic
  local t
  t=$(now_ms)
  if [[ -d "$E2E_DIR" && ! -f "$MARKER" && -n "$(ls -A "$E2E_DIR" 2>/dev/null)" ]]; then
    die "$E2E_DIR is not an e2e cluster dir (no $MARKER); not touching it"
  fi
  # 1. Delete the pods through the API while it is up, with nothing recreating them: the
  #    kubelet then tears down their volumes and networks itself.
  stop_component kube-scheduler
  stop_component kube-controller-manager
  if pid_of kube-apiserver >/dev/null && pid_of kubelet >/dev/null && kctl get --raw=/readyz >/dev/null 2>&1; then
    log "deleting all pods"
    local td
    td=$(now_ms)
    timeout 60 "$ASSETS/kubectl" --kubeconfig "$KUBECONFIG_FILE" delete pods --all --all-namespaces \
      --grace-period=2 --wait=true --timeout=45s >/dev/null 2>&1 || log "warning: not every pod was deleted in time; removing containers directly"
    log "pods deleted in $(since "$td")s"
  fi
  stop_component kube-proxy
  stop_component kubelet
  # 2. Remove whatever containers remain, so the runc shims exit; then containerd.
  if pid_of containerd >/dev/null; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop_component containerd
  stop_component kube-apiserver
  stop_component etcd
  kill_leftover_processes
  # 3. Mounts, network, cgroups, iptables, sysctls, directories.
  unmount_all
  cleanup_network
  cleanup_cgroups
  cleanup_iptables
  cleanup_conntrack
  restore_sysctls
  remove_created_paths
  local rc=0
  check_leftovers || rc=1
  if [[ -d "$E2E_DIR" ]]; then
    if [[ -n "${KEEP_LOGS:-${PIPES_E2E_KEEP_LOGS:-}}" ]]; then
      find "$E2E_DIR" -mindepth 1 -maxdepth 1 ! -name logs ! -name "$(basename "$MARKER")" -exec rm -rf {} +
    else
      rm -rf "$E2E_DIR"
    fi
  fi
  if ((rc == 0)); then log "down in $(since "$t")s; nothing left"; else log "down in $(since "$t")s, with the leftovers above"; fi
  return $rc
}

# kill_leftover_processes: runc shims started by our containerd (they carry our socket
# path on their command line) and any process still in the kubepods cgroups kubelet made.
kill_leftover_processes() {
  local pids=() p cmd f
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue  # errors first: the process may be gone
    [[ "$cmd" == *containerd-shim*"$CONTAINERD_SOCK"* ]] && pids+=("${p#/proc/}")
  done
  for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    if ! saved || [[ ! -d "$f" ]]; then continue; fi
    while read -r p; do [[ -n "$p" ]] && pids+=("$p"); done < <(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
  done
  ((${#pids[@]} == 0)) && return 0
  mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un)
  log "killing ${#pids[@]} leftover container/shim processes"
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  sleep 0.5
}

unmount_all() {
  local prefixes=("$E2E_DIR/") m p n=0
  grep -qx /run/containerd "$SAVED/paths" 2>/dev/null && prefixes+=(/run/containerd/)
  grep -qx /run/netns "$SAVED/paths" 2>/dev/null && prefixes+=(/run/netns/)
  # deepest first
  while read -r m; do
    for p in "${prefixes[@]}"; do
      if [[ "$m/" == "$p"* ]]; then
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
        n=$((n + 1))
        break
      fi
    done
  done < <(awk '{print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
  ((n == 0)) || log "unmounted $n mounts"
}

cleanup_network() {
  saved || return 0
  local l
  grep -qx "$POD_BRIDGE" "$SAVED/links" && { log "warning: $POD_BRIDGE existed before 'up'; leaving it"; return 0; }
  if ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
    for l in $(ip -o link show master "$POD_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$l" 2>/dev/null || true
    done
    ip link del "$POD_BRIDGE" 2>/dev/null || true
  fi
  grep -qx "$SVC_BRIDGE" "$SAVED/links" || ip link del "$SVC_BRIDGE" 2>/dev/null || true
}

cleanup_cgroups() {
  saved || return 0
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$d" ]] && log "warning: cannot remove cgroup $d (processes left in it?)"
  done
  return 0
}

# cleanup_iptables: every KUBE-*, CNI-* and guard chain, and the rules jumping to them.
# Only chains that did not exist before `up` (preflight refuses to start next to foreign
# KUBE-/CNI- chains, so in practice: all of them).
cleanup_iptables() {
  saved || return 0
  local ipt t line c chains
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for t in filter nat mangle raw; do
      $ipt -w -t $t -S >/dev/null 2>&1 || continue
      chains=$($ipt -w -t $t -S | awk '/^-N (KUBE-|CNI-|PIPES-E2E)/ {print $2}' | grep -vxF -f <(awk -v i=$ipt -v t=$t '$1==i && $2==t && $3=="-N" {print $4}' "$SAVED/iptables") || true)
      [[ -n "$chains" ]] || continue
      while read -r line; do
        c=$(sed -n 's/.* -j \([^ ]*\).*/\1/p' <<<"$line")
        grep -qxF "$c" <<<"$chains" || continue
        eval "$ipt -w -t $t -D ${line#-A }" 2>/dev/null || true
      done < <($ipt -w -t $t -S | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-|CNI-|PIPES-E2E)')
      for c in $chains; do $ipt -w -t $t -F "$c" 2>/dev/null || true; done
      for c in $chains; do $ipt -w -t $t -X "$c" 2>/dev/null || log "warning: cannot delete $ipt -t $t chain $c"; done
    done
  done
}

cleanup_conntrack() { # forget connections of pods and service IPs (best effort)
  saved && command -v conntrack >/dev/null || return 0
  local f
  for f in "-s $POD_CIDR" "-d $POD_CIDR" "-d $SERVICE_CIDR"; do
    # shellcheck disable=SC2086 # two words on purpose
    conntrack -D $f >/dev/null 2>&1 || true
  done
}

restore_sysctls() {
  [[ -f "$SAVED/sysctl" ]] || return 0
  local kv k v now
  while IFS= read -r kv; do
    k=${kv%%=*} v=${kv#*=}
    now=$(sysctl -n "$k" 2>/dev/null) || continue
    [[ "$now" == "$v" ]] && continue
    if sysctl -qw "$k=$v" 2>/dev/null; then log "restored $k=$v (was $now)"; else log "warning: cannot restore $k=$v"; fi
  done <"$SAVED/sysctl"
}

remove_created_paths() {
  [[ -f "$SAVED/paths" ]] || return 0
  local p
  while read -r p; do
    [[ -n "$p" && -e "$p" ]] || continue
    if grep -q " ${p}[/ ]" /proc/self/mountinfo; then
      log "warning: $p still has mounts; not removing it"
    else
      rm -rf "$p"
    fi
  done <"$SAVED/paths"
}

check_leftovers() {
  local bad=0 c
  for c in "${COMPONENTS[@]}"; do
    [[ -f "$RUN/$c.pid" ]] && pid_of "$c" >/dev/null && { log "warning: $c still runs"; bad=1; }
  done
  if grep -qF " $E2E_DIR/" /proc/self/mountinfo; then log "warning: mounts left under $E2E_DIR"; bad=1; fi
  saved || return $bad
  if grep -qF " /run/containerd/" /proc/self/mountinfo; then log "warning: mounts left under /run/containerd"; bad=1; fi
  if ip link show "$POD_BRIDGE" >/dev/null 2>&1 && ! grep -qx "$POD_BRIDGE" "$SAVED/links"; then
    log "warning: $POD_BRIDGE still exists"; bad=1
  fi
  local extra
  extra=$(comm -13 <(sort "$SAVED/iptables") <(iptables_rules | sort))
  [[ -z "$extra" ]] || { log "warning: iptables rules not there before 'up':"; echo "$extra" >&2; bad=1; }
  return $bad
}

# --- status ------------------------------------------------------------------------------------

cmd_status() {
  if [[ ! -f "$MARKER" ]]; then
    echo "e2e cluster: not set up ($E2E_DIR)"
    return 1
  fi
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "$c"); then printf '  %-24s running (pid %s)\n' "$c" "$pid"; else printf '  %-24s NOT running\n' "$c"; rc=1; fi
  done
  if kctl get --raw=/readyz >/dev/null 2>&1; then printf '  %-24s ready\n' apiserver; else printf '  %-24s NOT ready\n' apiserver; rc=1; fi
  if node_ready 2>/dev/null; then printf '  %-24s Ready\n' "node $NODE_NAME"; else printf '  %-24s NOT Ready\n' "node $NODE_NAME"; rc=1; fi
  if [[ -x "$BIN/kit" ]] && dns_answers; then printf '  %-24s answers\n' "CoreDNS $DNS_SERVICE_IP"; else printf '  %-24s NOT answering\n' "CoreDNS $DNS_SERVICE_IP"; rc=1; fi
  echo "  kubeconfig: $KUBECONFIG_FILE"
  echo "  logs:       $LOGS"
  return $rc
}

# --- smoke test ----------------------------------------------------------------------------------

smoke_manifest() {
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $SMOKE_NS
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: $SMOKE_NS
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: $KIT_IMAGE
        args: [serve, ":8080", hello-from-web]
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: $SMOKE_NS
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: $SMOKE_NS
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: $KIT_IMAGE
    args: [pause]
EOF
}

# cmd_smoke: what the e2e suite relies on, end to end: pods start from a local image, DNS
# by name (CoreDNS), ClusterIP from a pod, from the host and back to the same pod
# (hairpin), the API server's ClusterIP, kubectl logs and exec. Leaves nothing behind.
cmd_smoke() {
  pid_of kube-apiserver >/dev/null || die "the e2e cluster is not up (hack/e2e-cluster.sh up)"
  local passed=0 failed=0 t=$SECONDS ip got
  SMOKE_NS=pipes-e2e-smoke
  check() { # check NAME WANT CMD...: retry CMD for up to 15 s until its output is WANT
    local name=$1 want=$2 deadline=$((SECONDS + 15)) out; shift 2
    while :; do
      out=$("$@" 2>&1) || true
      if [[ "$out" == "$want" ]]; then
        echo "  ok    $name"; passed=$((passed + 1)); return 0
      fi
      if ((SECONDS >= deadline)); then
        echo "  FAIL  $name: got '$out', want '$want'"; failed=$((failed + 1)); return 0
      fi
      sleep 0.5
    done
  }
  smoke_manifest | kctl apply -f - >/dev/null
  kctl -n "$SMOKE_NS" wait --for=condition=Ready pod/client --timeout=60s >/dev/null
  kctl -n "$SMOKE_NS" rollout status deployment/web --timeout=60s >/dev/null
  ip=$(kctl -n "$SMOKE_NS" get service web -o jsonpath='{.spec.clusterIP}')
  echo "smoke: pods Ready $((SECONDS - t))s after apply; service web = $ip"
  local x=(kctl -n "$SMOKE_NS" exec client --)
  check "DNS: kubernetes.default.svc.$CLUSTER_DOMAIN from a pod" "$API_SERVICE_IP" "${x[@]}" /kit resolve "kubernetes.default.svc.$CLUSTER_DOMAIN"
  check "DNS: short service name from a pod (search path)" "$ip" "${x[@]}" /kit resolve web
  check "DNS: web.$SMOKE_NS.svc.$CLUSTER_DOMAIN from the host via $DNS_SERVICE_IP" "$ip" \
    "$BIN/kit" resolve --server "$DNS_SERVICE_IP:53" "web.$SMOKE_NS.svc.$CLUSTER_DOMAIN."
  check "DNS: names outside the cluster are NXDOMAIN, never forwarded" \
    "kit: example.invalid.: NXDOMAIN" \
    "$BIN/kit" resolve --server "$DNS_SERVICE_IP:53" example.invalid.
  check "ClusterIP from a pod (http://web/)" hello-from-web "${x[@]}" /kit get http://web/
  check "ClusterIP from the host (http://$ip/)" hello-from-web "$BIN/kit" get "http://$ip/"
  check "ClusterIP back to the serving pod (hairpin)" hello-from-web kctl -n "$SMOKE_NS" exec deployment/web -- /kit get http://web/
  got=$("${x[@]}" /kit get "https://kubernetes.default.svc/" 2>&1 || true)
  if [[ "$got" == *"certificate signed by unknown authority"* ]]; then
    echo "  ok    API server through its ClusterIP (TLS handshake from a pod)"; passed=$((passed + 1))
  else
    echo "  FAIL  API server through its ClusterIP: $got"; failed=$((failed + 1))
  fi
  check "kubectl logs" "serving on :8080" kctl -n "$SMOKE_NS" logs deployment/web
  check "kubectl exec" client "${x[@]}" /kit cat /etc/hostname
  kctl delete namespace "$SMOKE_NS" --wait=true --timeout=60s >/dev/null || true
  echo "smoke: $passed passed, $failed failed ($((SECONDS - t))s)"
  ((failed == 0))
}

# --- main --------------------------------------------------------------------------------------

CMD="${1:-}"
shift || true
case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  logs) echo "$LOGS" ;;
  env)
    [[ -f "$E2E_DIR/e2e.env" ]] || die "the cluster is not up"
    cat "$E2E_DIR/e2e.env"
    ;;
  load-image)
    (($# > 0)) || die "usage: $0 load-image FILE.tar..."
    preflight_basic
    pid_of containerd >/dev/null || die "the e2e cluster's containerd is not running (hack/e2e-cluster.sh up)"
    load_images "$@"
    ;;
  ctr)
    pid_of containerd >/dev/null || die "the e2e cluster's containerd is not running (hack/e2e-cluster.sh up)"
    ctr_ "$@"
    ;;
  build) build_binaries; log "binaries ready: $ASSETS, $COREDNS_ASSETS" ;;
  smoke) cmd_smoke ;;
  *)
    sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
