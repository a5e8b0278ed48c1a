# shellcheck shell=bash
# hack/lib/build.sh: shared by hack/envtest-assets.sh and hack/e2e-cluster.sh (source it,
# do not run it). Builds Kubernetes components (and other Go servers) from source through
# the Go module proxy into a per-user cache keyed by version, because no prebuilt download
# is reachable from our machines.
#
# Callers set LOG_PREFIX before sourcing. Variables (overridable from the environment):
#   K8S_VERSION, ETCD_VERSION, PIPES_CACHE_DIR (cache root).

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
STAGING_VERSION="v0.${K8S_VERSION#1.}"
CACHE_ROOT="${PIPES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipes-operator}"
# sudo's secure_path usually drops Go's directory.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH="/usr/local/go/bin:$PATH"; fi
goenv() { # goenv GOOS|GOARCH: Go's value, or the host's when Go is missing (require_go says so later)
  go env "$1" 2>/dev/null && return
  case "$1" in
    GOOS) uname -s | tr '[:upper:]' '[:lower:]' ;;
    GOARCH) case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac ;;
  esac
}
# etcd, kube-apiserver, kubectl (envtest) and kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy (e2e) of one Kubernetes version live side by side here.
ASSETS="$CACHE_ROOT/k8s/v${K8S_VERSION}-etcd${ETCD_VERSION}-$(goenv GOOS)-$(goenv GOARCH)"
# Throwaway modules the binaries are built from.
BUILD_DIR="$CACHE_ROOT/build"

LOG_PREFIX="${LOG_PREFIX:-build}"
log() { echo "$LOG_PREFIX: $*" >&2; }
die() { log "error: $*"; exit 1; }

require_go() {
  command -v go >/dev/null || die "go is not on PATH; install Go $(sed -n 's/^go //p' "$(dirname "${BASH_SOURCE[0]}")/../../go.mod" 2>/dev/null || echo 1.26)"
}

# go_build_env: the environment every build here runs with. Builds are niced so that a
# build never starves tests running on the same (2-core) machine.
go_build_env() {
  export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod" GOWORK=off
}

# version_ldflags VERSION: -X flags that stamp a Kubernetes binary with a real version
# (otherwise it reports v0.0.0-master+$Format:%H$, which kubectl cannot parse).
version_ldflags() {
  local v=$1
  echo "-s -w -X k8s.io/component-base/version.gitVersion=v${v} -X k8s.io/component-base/version.gitMajor=${v%%.*} -X k8s.io/component-base/version.gitMinor=$(echo "$v" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean"
}

# lock_dir DIR FD: take an exclusive lock on DIR/.lock through file descriptor FD, waiting
# for (and saying so) another builder that holds it. One builder at a time per directory.
lock_dir() {
  local dir=$1 fd=$2
  mkdir -p "$dir"
  eval "exec $fd>\"$dir/.lock\""
  if ! flock -n "$fd"; then
    log "another build holds $dir/.lock; waiting for it"
    flock "$fd"
  fi
}

timed() { # timed NAME CMD...: run CMD, report its duration
  local name=$1 start=$SECONDS; shift
  "$@" || die "building $name failed (see the Go output above)"
  log "$name built in $((SECONDS - start))s"
}

download() { # download MODULE@VERSION: fail clearly when the module proxy is unreachable
  local out
  if ! out=$(go mod download -json "$1" 2>&1); then
    echo "$out" >&2
    die "cannot download $1 from the Go module proxy ($(go env GOPROXY)); check network access to it"
  fi
  echo "$out"
}

build_etcd() { # build_etcd: $ASSETS/etcd
  local dir="$BUILD_DIR/etcd-$ETCD_VERSION"
  log "building etcd v$ETCD_VERSION (about 2 minutes on 2 cores)"
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/main.go" <<'GO'
// Command etcd is etcd's own server entry point, built from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod init pipes.dev/build/etcd >/dev/null 2>&1 &&
    download "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null &&
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2 && go mod tidy >&2 &&
    nice -n 10 go build -trimpath -ldflags "-s -w" -o "$ASSETS/etcd.tmp" . && mv "$ASSETS/etcd.tmp" "$ASSETS/etcd")
}

# kubernetes_module writes, into directory $1, a go.mod requiring k8s.io/kubernetes with
# every staging module (which kubernetes' own go.mod maps to ./staging/...) replaced by its
# published version, which is what makes k8s.io/kubernetes buildable as a dependency.
kubernetes_module() {
  local dir=$1 modname=$2 gomod
  gomod=$(download "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || die "module proxy gave no go.mod for k8s.io/kubernetes@v$K8S_VERSION"
  {
    echo "module $modname"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1/')"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$gomod"
    echo ")"
  } >"$dir/go.mod"
  grep -q 'k8s.io/api =>' "$dir/go.mod" || die "could not read the staging replace block of kubernetes' go.mod ($gomod)"
}

# build_kube BINARY UPSTREAM_MAIN_DIR: $ASSETS/BINARY from k8s.io/kubernetes' own main
# package (e.g. cmd/kubelet), in one shared throwaway module so the module and build caches
# are reused across binaries. Version-stamped.
build_kube() {
  local bin=$1 upstream=$2 dir="$BUILD_DIR/kubernetes-$K8S_VERSION" src
  mkdir -p "$dir/$bin"
  if [[ ! -f "$dir/go.mod" ]]; then
    kubernetes_module "$dir" pipes.dev/build/kubernetes
  fi
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/$upstream"
  [[ -d "$src" ]] || (cd "$dir" && download "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null)
  # Upstream's own main package, verbatim: it wires in logging and metrics registrations.
  for f in "$src"/*.go; do
    [[ "$f" == *_test.go ]] && continue
    cp "$f" "$dir/$bin/"
  done
  chmod -R u+w "$dir/$bin"
  (cd "$dir" && go mod tidy >&2 &&
    nice -n 10 go build -trimpath -ldflags "$(version_ldflags "$K8S_VERSION")" -o "$ASSETS/$bin.tmp" "./$bin" &&
    mv "$ASSETS/$bin.tmp" "$ASSETS/$bin")
}
