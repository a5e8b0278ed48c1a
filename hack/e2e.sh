#!/usr/bin/env bash
# e2e.sh is `make e2e`: start the single-node cluster (hack/e2e-cluster.sh), build the
# manager and vend images from this checkout (tagged e2e, and e2e-next for the Helm
# upgrade), import them, run the Ginkgo suite in test/e2e against config/e2e and then the
# Helm chart in config/helm, and tear everything down again (also on failure or Ctrl-C;
# E2E_KEEP=1 keeps the cluster for debugging, `make e2e-down` removes it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cluster=hack/e2e-cluster.sh
log() { echo "e2e: $*" >&2; }

[[ $EUID -eq 0 ]] || { log "error: the e2e cluster runs containerd and kubelet, which need root"; exit 1; }

teardown() {
  local status=$?
  if [[ -n "${E2E_KEEP:-}" ]]; then
    log "E2E_KEEP is set: the cluster keeps running (KUBECONFIG=$($cluster kubeconfig)); 'make e2e-down' removes it"
  else
    $cluster down || status=1
  fi
  # Repeat the failures last, where a truncated CI log still shows them.
  if [[ $status -ne 0 && -s "${suite_log:-}" ]]; then
    log "failures (full output above):"
    grep -F -A15 -e '[FAILED]' -e '[PANICKED]' "$suite_log" | head -120 >&2 || true
  fi
  log "finished in $((SECONDS))s with status $status"
  exit "$status"
}
trap teardown EXIT

start=$SECONDS
$cluster up
log "cluster up in $((SECONDS - start))s"

start=$SECONDS
out="$ROOT/bin/e2e"
mkdir -p "$out"
export CGO_ENABLED=0
go build -trimpath -ldflags='-s -w' -o "$out/manager" ./cmd/manager
go build -trimpath -ldflags='-s -w' -o "$out/vend" ./cmd/vend
# e2e-next: the same binaries under another tag, for the Helm upgrade spec.
for tag in e2e e2e-next; do
  go run ./hack/image --tag "pipes.local/manager:$tag" --binary "$out/manager=/manager" --entrypoint /manager --out "$out/manager-$tag.tar"
  go run ./hack/image --tag "pipes.local/vend:$tag" --binary "$out/vend=/vend" --entrypoint /vend --out "$out/vend-$tag.tar"
done
$cluster load-image "$out"/manager-e2e.tar "$out"/vend-e2e.tar "$out"/manager-e2e-next.tar "$out"/vend-e2e-next.tar
log "images built and imported in $((SECONDS - start))s"

# The helm CLI pinned in config/helm/go.mod (a module of its own: Helm's dependencies
# never move the operator's), for the Helm install and upgrade specs.
start=$SECONDS
go -C config/helm build -o "$out/helm" helm.sh/helm/v4/cmd/helm
log "helm built in $((SECONDS - start))s"

# The kubectl plugin, run by the suite as a person runs it.
go build -o "$out/kubectl-pipes" ./cmd/kubectl-pipes

start=$SECONDS
suite_log="$out/suite.log"
E2E_KUBECONFIG="$($cluster kubeconfig)" \
E2E_KUBECTL="$(hack/envtest-assets.sh)/kubectl" \
E2E_HELM="$out/helm" \
E2E_PLUGIN="$out/kubectl-pipes" \
E2E_LOG_DIR="$($cluster logs)" \
  go test -tags e2e -count=1 -timeout 30m ./test/e2e/ -v -ginkgo.v 2>&1 | tee "$suite_log"
log "suite passed in $((SECONDS - start))s"
