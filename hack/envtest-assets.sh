#!/usr/bin/env bash
# envtest-assets.sh builds the Kubernetes control-plane binaries that envtest, `make run`
# and the e2e harness need (etcd, kube-apiserver, kubectl), from source through the Go
# module proxy, because no prebuilt download is reachable from our machines.
#
# Binaries are cached per user and keyed by version, so a second run (or CI in a fresh
# clone on the same machine) costs nothing. The last line printed on stdout is the
# directory to export as KUBEBUILDER_ASSETS; progress goes to stderr.
#
# Usage: hack/envtest-assets.sh [--print-dir]
#   --print-dir   only print the cache directory (does not build)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
STAGING_VERSION="v0.${K8S_VERSION#1.}"
CACHE_ROOT="${PIPES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipes-operator}"
ASSETS="$CACHE_ROOT/k8s/v${K8S_VERSION}-etcd${ETCD_VERSION}-$(go env GOOS)-$(go env GOARCH)"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$ASSETS"
  exit 0
fi

log() { echo "envtest-assets: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not on PATH; install Go $(sed -n 's/^go //p' "$(dirname "$0")/../go.mod" 2>/dev/null || echo 1.26)"

have_all() { [[ -x "$ASSETS/etcd" && -x "$ASSETS/kube-apiserver" && -x "$ASSETS/kubectl" ]]; }
if have_all; then
  echo "$ASSETS"
  exit 0
fi

mkdir -p "$ASSETS"
# One builder at a time: a concurrent caller waits here, then finds the binaries built.
exec 9>"$ASSETS/.lock"
if ! flock -n 9; then
  log "another build holds $ASSETS/.lock; waiting for it"
  flock 9
fi
if have_all; then
  echo "$ASSETS"
  exit 0
fi

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod" GOWORK=off
VERSION_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*} -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean"
WORK="$CACHE_ROOT/build"
mkdir -p "$WORK"

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

build_etcd() {
  local dir="$WORK/etcd-$ETCD_VERSION"
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
    go build -trimpath -ldflags "-s -w" -o "$ASSETS/etcd.tmp" . && mv "$ASSETS/etcd.tmp" "$ASSETS/etcd")
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

build_kube() { # build_kube BINARY UPSTREAM_MAIN_DIR
  local bin=$1 upstream=$2 dir="$WORK/kubernetes-$K8S_VERSION" src
  mkdir -p "$dir/$bin"
  if [[ ! -f "$dir/go.mod" ]]; then
    kubernetes_module "$dir" pipes.dev/build/kubernetes
  fi
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/$upstream"
  # Upstream's own main package, verbatim: it wires in logging and metrics registrations.
  for f in "$src"/*.go; do
    [[ "$f" == *_test.go ]] && continue
    cp "$f" "$dir/$bin/"
  done
  chmod -R u+w "$dir/$bin"
  (cd "$dir" && go mod tidy >&2 &&
    go build -trimpath -ldflags "$VERSION_LDFLAGS" -o "$ASSETS/$bin.tmp" "./$bin" && mv "$ASSETS/$bin.tmp" "$ASSETS/$bin")
}

[[ -x "$ASSETS/etcd" ]] || timed etcd build_etcd
if [[ ! -x "$ASSETS/kube-apiserver" ]]; then
  log "building kube-apiserver v$K8S_VERSION (about 6 minutes on 2 cores)"
  timed kube-apiserver build_kube kube-apiserver cmd/kube-apiserver
fi
if [[ ! -x "$ASSETS/kubectl" ]]; then
  if command -v kubectl >/dev/null; then
    ln -sf "$(command -v kubectl)" "$ASSETS/kubectl"
    log "using kubectl from PATH ($(command -v kubectl))"
  else
    log "building kubectl v$K8S_VERSION"
    timed kubectl build_kube kubectl cmd/kubectl
  fi
fi
have_all || die "binaries missing in $ASSETS after the build"
log "binaries ready in $ASSETS"
echo "$ASSETS"
