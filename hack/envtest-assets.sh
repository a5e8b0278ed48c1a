#!/usr/bin/env bash
# envtest-assets.sh builds the Kubernetes control-plane binaries that envtest, `make run`
# and the e2e harness need (etcd, kube-apiserver, kubectl), from source through the Go
# module proxy, because no prebuilt download is reachable from our machines.
#
# Binaries are cached per user and keyed by version, so a second run (or CI in a fresh
# clone on the same machine) costs nothing. The last line printed on stdout is the
# directory to export as KUBEBUILDER_ASSETS; progress goes to stderr.
# The build functions live in hack/lib/build.sh (shared with hack/e2e-cluster.sh).
#
# Usage: hack/envtest-assets.sh [--print-dir]
#   --print-dir   only print the cache directory (does not build)
set -euo pipefail

# shellcheck disable=SC2034 # read by hack/lib/build.sh
LOG_PREFIX=envtest-assets
# shellcheck source-path=SCRIPTDIR source=lib/build.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/build.sh"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$ASSETS"
  exit 0
fi

require_go

have_all() { [[ -x "$ASSETS/etcd" && -x "$ASSETS/kube-apiserver" && -x "$ASSETS/kubectl" ]]; }
if have_all; then
  echo "$ASSETS"
  exit 0
fi

# One builder at a time: a concurrent caller waits here, then finds the binaries built.
lock_dir "$ASSETS" 9
if have_all; then
  echo "$ASSETS"
  exit 0
fi

go_build_env
mkdir -p "$BUILD_DIR"

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
