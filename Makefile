# pipes-operator. README's two commands: `make run` and `make test`.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

CONTROLLER_GEN := go tool controller-gen
# golangci-lint has a module of its own, so its dependencies never move the operator's pins.
GOLANGCI_LINT := go tool -modfile=$(CURDIR)/hack/tools/go.mod golangci-lint
# Go modules of their own (their dependencies must not move the operator's pins): the
# Helm chart's generator and tests, and the metrics/alerts test.
NESTED_MODULES := config/helm config/prometheus/test
ASSETS = $(shell hack/envtest-assets.sh)
GO_TEST_FLAGS ?=

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*##/ {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: generate
generate: ## Generate deepcopy code (zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Generate CRDs, RBAC and webhook configurations into config/.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths=./controllers/... paths=./internal/... output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) webhook paths=./internal/webhook/... output:webhook:artifacts:config=config/webhook

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet.
	go vet ./...
	go vet -tags dev ./cmd/manager
	go vet -tags e2e ./test/e2e

.PHONY: lint
lint: ## golangci-lint (.golangci.yml), also with the dev and e2e build tags.
	$(GOLANGCI_LINT) run --allow-parallel-runners ./...
	$(GOLANGCI_LINT) run --allow-parallel-runners --build-tags dev,e2e ./cmd/manager/... ./test/e2e/...
	@for m in $(NESTED_MODULES); do echo "lint $$m"; (cd $$m && $(GOLANGCI_LINT) run --allow-parallel-runners ./...) || exit 1; done

.PHONY: verify
verify: generate manifests ## Regenerate and fail if generated files drift; gofmt, vet and lint.
	@drift=$$(git status --porcelain -- api config); if [ -n "$$drift" ]; then \
		echo "generated files are out of date; run 'make generate manifests' and commit:"; echo "$$drift"; git diff --stat -- api config; exit 1; fi
	@hack/check-tracked-files.sh
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then \
		echo "not gofmt-formatted (run 'make fmt'):"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go vet -tags dev ./cmd/manager
	go vet -tags e2e ./test/e2e
	@for m in $(NESTED_MODULES); do go -C $$m vet ./... || exit 1; done
	@$(MAKE) --no-print-directory lint
	@"$$(hack/envtest-assets.sh)/kubectl" kustomize config/default >/dev/null && echo "config/default renders"

.PHONY: envtest-assets
envtest-assets: ## Build (once) etcd, kube-apiserver and kubectl from source; print their directory.
	@hack/envtest-assets.sh

.PHONY: build
build: plugin ## Build the manager, vend and kubectl-pipes binaries (static) into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/vend ./cmd/vend

.PHONY: plugin
plugin: ## Build the kubectl plugin into bin/kubectl-pipes (put it on PATH: kubectl pipes; docs/kubectl-plugin.md).
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/kubectl-pipes ./cmd/kubectl-pipes

.PHONY: plugin-release
plugin-release: ## Build kubectl-pipes archives for every krew platform and the filled krew manifest into bin/krew/ (VERSION=…).
	hack/krew-release.sh $(VERSION)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
PLATFORMS ?= linux/amd64 linux/arm64
IMAGE_REPO ?= pipes-operator
# Reproducible: no paths, no build id, no VCS stamp beyond the labels below.
GO_BUILD_REPRO = CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w -buildid='

.PHONY: images
images: ## Build the manager and vend images for $(PLATFORMS) as OCI layouts in bin/images/ (no container engine needed).
	@for p in $(PLATFORMS); do arch=$${p#linux/}; \
		echo "building linux/$$arch"; \
		GOOS=linux GOARCH=$$arch $(GO_BUILD_REPRO) -o bin/linux_$$arch/manager ./cmd/manager; \
		GOOS=linux GOARCH=$$arch $(GO_BUILD_REPRO) -o bin/linux_$$arch/vend ./cmd/vend; done
	@for c in manager vend; do \
		go run ./hack/image --tag $(IMAGE_REPO)/$$c:$(VERSION) --binary "bin/linux_{arch}/$$c=/$$c" --entrypoint /$$c \
			$(foreach p,$(PLATFORMS),--platform $(p)) --file LICENSE=/LICENSE \
			--label org.opencontainers.image.title=pipes-operator-$$c --label org.opencontainers.image.version=$(VERSION) \
			--label org.opencontainers.image.revision=$(REVISION) --label org.opencontainers.image.licenses=Apache-2.0 \
			--label org.opencontainers.image.description="pipes-operator $$c" \
			--oci-layout bin/images/$$c; done
	@echo "push with any OCI tool, e.g. skopeo copy --all oci:bin/images/manager:$(VERSION) docker://REGISTRY/pipes-operator/manager:$(VERSION)"

.PHONY: deploy
deploy: ## Install pipes-operator from config/default into the cluster in $$KUBECONFIG (images: see make images).
	"$$(hack/envtest-assets.sh)/kubectl" apply --server-side -k config/default

.PHONY: undeploy
undeploy: ## Remove the operator, keeping its CRDs, accounts and the pipes-system namespace with the keyset (config/undeploy says why).
	"$$(hack/envtest-assets.sh)/kubectl" delete --ignore-not-found -k config/undeploy

.PHONY: test
test: ## Unit tests and envtest integration suites against source-built etcd and kube-apiserver.
	@assets=$$(hack/envtest-assets.sh) && \
	KUBEBUILDER_ASSETS=$$assets go test $(GO_TEST_FLAGS) ./...
	KUBEBUILDER_ASSETS=$$(hack/envtest-assets.sh) go -C config/prometheus/test test $(GO_TEST_FLAGS) ./...
	go -C config/helm test $(GO_TEST_FLAGS) ./...

.PHONY: test-short
test-short: ## Unit tests only (go test -short): the envtest suites skip, no control plane is started.
	go test -short $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: ## Benchmarks (encryption, vend API).
	@assets=$$(hack/envtest-assets.sh) && \
	KUBEBUILDER_ASSETS=$$assets go test -run='^$$' -bench=. -benchmem ./...

SCALE_N ?= 10000
.PHONY: widget-screenshots
widget-screenshots: ## Run the widget's browser suite (test/widget) and write its screenshots into docs/images/ (commit the ones docs/widget.md shows).
	@assets=$$(hack/envtest-assets.sh) && \
	KUBEBUILDER_ASSETS=$$assets WIDGET_SCREENSHOTS_DIR=$(CURDIR)/docs/images go test -count=1 ./test/widget/

.PHONY: bench-scale
bench-scale: ## Scale benchmark (docs/performance.md): SCALE_N accounts (default 10000), manager as a separate process; prints the figures, writes bin/scale/report.json and profiles. SCALE_ARGS adds flags (e.g. -scale.manager-env=GOGC=25, -scale.manager-args=--account-workers=64); the whole test output is in bin/scale/test.log.
	@mkdir -p bin/scale && assets=$$(hack/envtest-assets.sh) && \
	if KUBEBUILDER_ASSETS=$$assets go test ./test/scale/ -run TestScale -count=1 -v -timeout 60m -args \
		-scale.n=$(SCALE_N) -scale.unrelated-secrets=300 -scale.namespaces=1000 -scale.callers=100 -scale.rate=1000 \
		-scale.vend-duration=20s -scale.watched=1000 -scale.token-lifetime=2m -scale.report=$(CURDIR)/bin/scale/report.json $(SCALE_ARGS) \
		> bin/scale/test.log 2>&1; then sed -n '/^scale benchmark/,/^$$/p' bin/scale/test.log; \
	else tail -40 bin/scale/test.log; echo "make bench-scale failed: bin/scale/test.log"; exit 1; fi

CHAOS_BIG_CLUSTER ?= true
CHAOS_UNRELATED = $(if $(filter true,$(CHAOS_BIG_CLUSTER)),300,0)
.PHONY: chaos
chaos: ## Resilience suite at full size (docs/reliability.md): the leader killed 5 times under load, kube-apiserver and etcd restarted, the backend API under stepped load with a noisy caller; prints the figures, writes bin/chaos/report.json and bin/chaos/load.json.
	@mkdir -p bin/chaos && assets=$$(hack/envtest-assets.sh) && \
	(KUBEBUILDER_ASSETS=$$assets go test ./test/chaos/ -run TestChaos -count=1 -v -timeout 60m -args \
		-chaos.accounts=1000 -chaos.rotations=200 -chaos.kills=5 -chaos.sidecars=4 -chaos.big-cluster=$(CHAOS_BIG_CLUSTER) \
		-chaos.report=$(CURDIR)/bin/chaos/report.json >bin/chaos/test.log 2>&1 || { tail -n 80 bin/chaos/test.log; exit 1; }) && \
	sed -n '/^chaos suite/,/^$$/p' bin/chaos/test.log && \
	(KUBEBUILDER_ASSETS=$$assets go test ./test/scale/ -run TestBackendAPILoad -count=1 -v -timeout 30m -args \
		-load.steps=250,500,1000,1500,2000,3000 -load.step-duration=10s -load.callers=100 -load.accounts=1000 \
		-load.quiet-rate=20 -load.noisy-rate=500 -load.noisy-duration=10s -load.unrelated-secrets=$(CHAOS_UNRELATED) -load.strict \
		-load.report=$(CURDIR)/bin/chaos/load.json >bin/chaos/load.log 2>&1 || { tail -n 80 bin/chaos/load.log; exit 1; }) && \
	sed -n '/^backend API load/,/quiet caller/p' bin/chaos/load.log

.PHONY: run
run: ## Run the operator on an embedded control plane; writes bin/dev/kubeconfig and bin/dev/env.
	@assets=$$(hack/envtest-assets.sh) && \
	go build -tags dev -o bin/manager-dev ./cmd/manager && \
	KUBEBUILDER_ASSETS=$$assets exec bin/manager-dev dev $(RUN_ARGS)

.PHONY: install
install: ## Install the CRDs into the cluster in $$KUBECONFIG.
	"$$(hack/envtest-assets.sh)/kubectl" apply --server-side -k config/crd

.PHONY: run-cluster
run-cluster: install ## Run the manager locally against the cluster in $$KUBECONFIG (no webhooks: the cluster cannot reach this machine).
	"$$(hack/envtest-assets.sh)/kubectl" create namespace pipes-system --dry-run=client -o yaml | "$$(hack/envtest-assets.sh)/kubectl" apply -f -
	go run ./cmd/manager --namespace pipes-system --disable-webhooks --cert-rotation=false --api-bind-address= --vend-image= --metrics-bind-address=127.0.0.1:8080 --health-probe-bind-address=127.0.0.1:8081 $(RUN_ARGS)

.PHONY: fuzz
fuzz: ## Run every fuzz target (found anew each run) for FUZZTIME each (default 30s), one at a time; fails if any fails.
	hack/fuzz.sh

.PHONY: e2e
e2e: ## Real-cluster end-to-end suite: cluster up, images, test/e2e, cluster down (root); see docs/e2e.md.
	hack/e2e.sh

.PHONY: e2e-up
e2e-up: ## Start the single-node e2e cluster (root; builds its binaries once); see docs/e2e.md.
	hack/e2e-cluster.sh up

.PHONY: e2e-down
e2e-down: ## Stop the e2e cluster and remove every trace of it.
	hack/e2e-cluster.sh down

# The Helm chart (config/helm/pipes-operator) is generated from config/default; its
# generator, its tests and the pinned helm CLI form a Go module of their own (config/helm),
# so that Helm's dependencies never move the operator's pins. See docs/operations.md.
.PHONY: chart
chart: ## Regenerate the Helm chart's templates/ and crds/ from config/default (after make manifests).
	cd config/helm && go run ./gen-chart

.PHONY: chart-verify
chart-verify: ## Vet config/helm; fail if the chart differs from config/default; helm lint and template tests.
	go -C config/helm vet ./...
	go -C config/helm test $(GO_TEST_FLAGS) ./...
