package helmchart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	"sigs.k8s.io/yaml"
)

const repoRoot = "../.."

// The committed chart is what `make chart` produces from config/default now, like
// `make verify` checks controller-gen's output.
func TestChartIsGenerated(t *testing.T) {
	want, err := Generate(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range want {
		got, err := os.ReadFile(filepath.Join(ChartDir, path))
		if err != nil {
			t.Errorf("%s is missing: run `make chart` and commit it", path)
			continue
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s differs from what config/default generates (run `make chart`; edit config/ or config/helm/generate.go, not the generated file):\n%s",
				path, cmp.Diff(string(content), string(got)))
		}
	}
	onDisk, err := GeneratedFiles(ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range onDisk {
		if _, ok := want[path]; !ok {
			t.Errorf("%s is generated but config/default no longer produces it: run `make chart`", path)
		}
	}
}

// With the default values, the chart renders exactly the objects of config/default,
// but its Namespace (Helm installs into the release namespace and never deletes it).
func TestDefaultValuesRenderConfigDefault(t *testing.T) {
	objs, err := Kustomize(filepath.Join(repoRoot, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]any{}
	for _, o := range objs {
		if o["kind"] != "Namespace" {
			want[id(o)] = normalize(t, o)
		}
	}
	got := byID(t, render(t, "pipes-system", nil))
	if diff := cmp.Diff(keys(want), keys(got)); diff != "" {
		t.Errorf("helm template (default values) renders other objects than config/default (-kustomize +helm):\n%s", diff)
	}
	for k, w := range want {
		if g, ok := got[k]; ok {
			if diff := cmp.Diff(w, g); diff != "" {
				t.Errorf("%s: helm template (default values) differs from config/default (-kustomize +helm):\n%s", k, diff)
			}
		}
	}
}

func TestHelmLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"default values": nil,
		"cert-manager":   certManagerValues,
		"e2e values": {"image": map[string]any{"repository": "pipes.local/manager", "tag": "e2e", "pullPolicy": "Never"},
			"vend": map[string]any{"image": map[string]any{"repository": "pipes.local/vend", "tag": "e2e"}}},
	} {
		t.Run(name, func(t *testing.T) {
			result := lint.RunAll(ChartDir, vals, "pipes-system")
			for _, m := range result.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				} else {
					t.Logf("helm lint: %s", m)
				}
			}
		})
	}
}

// Nothing names the namespace config/default uses: a release elsewhere is self-contained,
// and its webhooks skip its own namespace (as the manager's injector does).
func TestReleaseNamespace(t *testing.T) {
	objs := render(t, "payments", certManagerValues)
	for _, o := range objs {
		if b, _ := json.Marshal(o); bytes.Contains(b, []byte("pipes-system")) {
			t.Errorf("%s still names pipes-system: %s", id(o), b)
		}
	}
	m := byID(t, objs)
	vwc := m["admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration//pipes-validating-webhook-configuration"]
	w := get(t, vwc, "webhooks", 0)
	if ns := get(t, w, "clientConfig", "service", "namespace"); ns != "payments" {
		t.Errorf("webhook service namespace = %v", ns)
	}
	if v := get(t, w, "namespaceSelector", "matchExpressions", 0, "values"); !slices.Contains(v.([]any), any("payments")) {
		t.Errorf("webhooks do not skip the release namespace: %v", v)
	}
}

func TestValuesReachTheManifests(t *testing.T) {
	vals := map[string]any{
		"image":     map[string]any{"repository": "registry.example/pipes/manager", "tag": "v1.2.3", "pullPolicy": "Always"},
		"vend":      map[string]any{"image": map[string]any{"repository": "registry.example/pipes/vend", "tag": "v1.2.3"}},
		"replicas":  3,
		"resources": map[string]any{"limits": map[string]any{"memory": "1Gi"}, "requests": map[string]any{"cpu": "200m", "memory": "512Mi"}},
		"webhook":   map[string]any{"validation": map[string]any{"failurePolicy": "Ignore"}},
		"metrics":   map[string]any{"port": 9090},
		"widget":    map[string]any{"allowedOrigins": []any{"https://app.example.com", "http://localhost:3000"}, "publicURL": "https://widget.example.com"},
	}
	m := byID(t, render(t, "pipes-system", vals))
	dep := m["apps/v1/Deployment/pipes-system/pipes-controller-manager"]
	c := get(t, dep, "spec", "template", "spec", "containers", 0)
	for _, check := range []struct {
		what      string
		got, want any
	}{
		{"replicas", get(t, dep, "spec", "replicas"), 3.0},
		{"image", c.(map[string]any)["image"], "registry.example/pipes/manager:v1.2.3"},
		{"imagePullPolicy", c.(map[string]any)["imagePullPolicy"], "Always"},
		{"resources", c.(map[string]any)["resources"], map[string]any{"limits": map[string]any{"memory": "1Gi"}, "requests": map[string]any{"cpu": "200m", "memory": "512Mi"}}},
		{"metrics containerPort", get(t, c, "ports", 2), map[string]any{"name": "metrics", "containerPort": 9090.0}},
		{"metrics Service port", get(t, m["v1/Service/pipes-system/pipes-metrics-service"], "spec", "ports", 0, "port"), 9090.0},
	} {
		if diff := cmp.Diff(check.want, check.got); diff != "" {
			t.Errorf("%s: %s", check.what, diff)
		}
	}
	args := strings.Join(toStrings(c.(map[string]any)["args"]), " ")
	for _, want := range []string{"--vend-image=registry.example/pipes/vend:v1.2.3", "--metrics-bind-address=:9090",
		"--public-bind-address=:8082", "--widget-allowed-origins=https://app.example.com,http://localhost:3000", "--public-url=https://widget.example.com"} {
		if !strings.Contains(args, want) {
			t.Errorf("manager args %q lack %s", args, want)
		}
	}
	for i, w := range get(t, m["admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration//pipes-validating-webhook-configuration"], "webhooks").([]any) {
		if p := w.(map[string]any)["failurePolicy"]; p != "Ignore" {
			t.Errorf("validating webhook %d: failurePolicy %v", i, p)
		}
	}
	if p := get(t, m["admissionregistration.k8s.io/v1/MutatingWebhookConfiguration//pipes-mutating-webhook-configuration"], "webhooks", 0, "failurePolicy"); p != "Fail" {
		t.Errorf("pod injection must keep failurePolicy Fail, got %v", p)
	}

	// Metrics off: no endpoint and no Service.
	m = byID(t, render(t, "pipes-system", map[string]any{"metrics": map[string]any{"enabled": false}}))
	if _, ok := m["v1/Service/pipes-system/pipes-metrics-service"]; ok {
		t.Error("metrics disabled, but the metrics Service is rendered")
	}
	c = get(t, m["apps/v1/Deployment/pipes-system/pipes-controller-manager"], "spec", "template", "spec", "containers", 0)
	if args := toStrings(c.(map[string]any)["args"]); !slices.Contains(args, "--metrics-bind-address=0") {
		t.Errorf("metrics disabled, but the manager args are %q", args)
	}

	// Widget off: no public listener and no Service for it.
	m = byID(t, render(t, "pipes-system", map[string]any{"widget": map[string]any{"enabled": false}}))
	if _, ok := m["v1/Service/pipes-system/pipes-public"]; ok {
		t.Error("widget disabled, but the public Service is rendered")
	}
	c = get(t, m["apps/v1/Deployment/pipes-system/pipes-controller-manager"], "spec", "template", "spec", "containers", 0)
	if args := toStrings(c.(map[string]any)["args"]); !slices.Contains(args, "--public-bind-address=") {
		t.Errorf("widget disabled, but the manager args are %q", args)
	}
}

var certManagerValues = map[string]any{"certificates": map[string]any{"provider": "cert-manager",
	"certManager": map[string]any{"issuerRef": map[string]any{"name": "pipes-ca", "kind": "ClusterIssuer"}}}}

func TestCertManager(t *testing.T) {
	m := byID(t, render(t, "pipes-system", certManagerValues))
	cert, ok := m["cert-manager.io/v1/Certificate/pipes-system/pipes-webhook-cert"]
	if !ok {
		t.Fatalf("no Certificate rendered; objects: %v", keys(m))
	}
	wantSpec := map[string]any{
		"secretName": "pipes-webhook-cert",
		// The names cert-controller's certificate has: the webhook Service, and the backend
		// API Service that injected sidecars call (https://pipes-api.<ns>.svc).
		"dnsNames": []any{"pipes-webhook-service.pipes-system.svc", "pipes-webhook-service.pipes-system.svc.cluster.local",
			"pipes-api.pipes-system.svc", "pipes-api.pipes-system.svc.cluster.local"},
		"issuerRef": map[string]any{"name": "pipes-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
	}
	if diff := cmp.Diff(wantSpec, cert["spec"]); diff != "" {
		t.Errorf("Certificate spec: %s", diff)
	}
	if _, ok := m["v1/Secret/pipes-system/pipes-webhook-cert"]; ok {
		t.Error("the chart must not own the Secret cert-manager writes")
	}
	for _, cfg := range []string{"ValidatingWebhookConfiguration//pipes-validating-webhook-configuration", "MutatingWebhookConfiguration//pipes-mutating-webhook-configuration"} {
		a := get(t, m["admissionregistration.k8s.io/v1/"+cfg], "metadata", "annotations")
		if diff := cmp.Diff(map[string]any{"cert-manager.io/inject-ca-from": "pipes-system/pipes-webhook-cert"}, a); diff != "" {
			t.Errorf("%s annotations: %s", cfg, diff)
		}
	}
	pod := get(t, m["apps/v1/Deployment/pipes-system/pipes-controller-manager"], "spec", "template", "spec")
	if args := toStrings(get(t, pod, "containers", 0, "args")); !slices.Contains(args, "--cert-rotation=false") {
		t.Errorf("manager args %q lack --cert-rotation=false", args)
	}
	if diff := cmp.Diff([]any{map[string]any{"name": "webhook-certs", "secret": map[string]any{"secretName": "pipes-webhook-cert"}}}, get(t, pod, "volumes")); diff != "" {
		t.Errorf("the cert dir must mount cert-manager's Secret: %s", diff)
	}
	if diff := cmp.Diff(map[string]any{"name": "webhook-certs", "mountPath": "/tmp/k8s-webhook-server/serving-certs"}, get(t, pod, "containers", 0, "volumeMounts", 0)); diff != "" {
		t.Errorf("the Secret must be mounted at the manager's --webhook-cert-dir default: %s", diff)
	}

	noIssuer := map[string]any{"certificates": map[string]any{"provider": "cert-manager"}}
	if _, err := renderErr("pipes-system", noIssuer); err == nil || !strings.Contains(err.Error(), "certificates.certManager.issuerRef.name is required") {
		t.Errorf("cert-manager without an issuer: err = %v", err)
	}
}

// values.schema.json turns a typo into an install error, not a silently ignored value.
func TestSchemaRejectsBadValues(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"unknown provider":      {"certificates": map[string]any{"provider": "vault"}},
		"unknown failurePolicy": {"webhook": map[string]any{"validation": map[string]any{"failurePolicy": "Maybe"}}},
		"misspelled key":        {"replica": 3},
		"origin with a path":    {"widget": map[string]any{"allowedOrigins": []any{"https://app.example/embed"}}},
		"wildcard origin":       {"widget": map[string]any{"allowedOrigins": []any{"*"}}},
		"origins in one string": {"widget": map[string]any{"allowedOrigins": "https://a.example,https://b.example"}},
	} {
		if _, err := renderErr("pipes-system", vals); err == nil {
			t.Errorf("%s: rendered without an error", name)
		}
	}
}

// renderErr is `helm template --include-crds` through Helm's install action with a
// client-only dry run (what the helm CLI's template command does).
func renderErr(namespace string, vals map[string]any) ([]map[string]any, error) {
	chrt, err := loader.Load(ChartDir)
	if err != nil {
		return nil, err
	}
	install := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = "pipes"
	install.Namespace = namespace
	install.Replace = true
	install.IncludeCRDs = true
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return nil, err
	}
	var objs []map[string]any
	for _, doc := range strings.Split(rel.(*release.Release).Manifest, "\n---\n") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs, nil
}

func render(t *testing.T, namespace string, vals map[string]any) []map[string]any {
	t.Helper()
	objs, err := renderErr(namespace, vals)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// byID keys objects by apiVersion/kind/namespace/name, failing on a duplicate.
func byID(t *testing.T, objs []map[string]any) map[string]map[string]any {
	t.Helper()
	m := map[string]map[string]any{}
	for _, o := range objs {
		if _, dup := m[id(o)]; dup {
			t.Errorf("rendered twice: %s", id(o))
		}
		m[id(o)] = normalize(t, o)
	}
	return m
}

func id(o map[string]any) string {
	meta, _ := o["metadata"].(map[string]any)
	ns, _ := meta["namespace"].(string) // "" for cluster-scoped objects
	return fmt.Sprintf("%v/%v/%s/%v", o["apiVersion"], o["kind"], ns, meta["name"])
}

// normalize round-trips an object through JSON, so that numbers compare alike whichever
// YAML decoder produced them.
func normalize(t *testing.T, o map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var n map[string]any
	if err := json.Unmarshal(b, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// get follows a path of map keys (string) and list indices (int).
func get(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a map at %q", path, p)
			}
			v = m[p]
		case int:
			l, ok := v.([]any)
			if !ok || p >= len(l) {
				t.Fatalf("%v: no item %d", path, p)
			}
			v = l[p]
		}
	}
	return v
}

func toStrings(v any) []string {
	var s []string
	for _, x := range v.([]any) {
		s = append(s, fmt.Sprint(x))
	}
	return s
}

func keys(m map[string]map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

// A values target that config/default no longer has stops the generator, rather than
// leaving the chart without that value.
func TestGenerateFailsWhenAValuesTargetIsGone(t *testing.T) {
	dflt, err := filepath.Abs(filepath.Join(repoRoot, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir := filepath.Join(root, "config", "default")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base, err := filepath.Rel(dir, dflt) // kustomize takes no absolute base
	if err != nil {
		t.Fatal(err)
	}
	kustomization := "resources:\n- " + base + "\npatches:\n- patch: |-\n    $patch: delete\n    apiVersion: v1\n    kind: Service\n    metadata: {name: pipes-metrics-service, namespace: pipes-system}\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(root); err == nil || !strings.Contains(err.Error(), "no Service/pipes-metrics-service") {
		t.Errorf("err = %v", err)
	}
}
