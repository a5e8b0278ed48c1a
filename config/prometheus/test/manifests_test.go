package test

import (
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/webhook"
)

// render runs kubectl kustomize (the source-built one) on a directory of the checkout.
func render(t *testing.T, dir string) map[string]*unstructured.Unstructured {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	objects, err := devenv.Kustomize(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	return objects
}

// monitor is what the checks need of a ServiceMonitor or PodMonitor.
type monitor struct {
	Metadata struct {
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			Any bool `json:"any"`
		} `json:"namespaceSelector"`
		Endpoints           []endpoint `json:"endpoints"`
		PodMetricsEndpoints []endpoint `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type endpoint struct {
	Port        string `json:"port"`
	Relabelings []struct {
		TargetLabel string `json:"targetLabel"`
		Replacement string `json:"replacement"`
	} `json:"relabelings"`
}

func (e endpoint) job() string {
	for _, r := range e.Relabelings {
		if r.TargetLabel == "job" {
			return r.Replacement
		}
	}
	return ""
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if u == nil {
		t.Fatal("object missing")
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatal(err)
	}
}

// TestMonitorsScrapeWhatIsDeployed renders config/prometheus beside config/default and
// checks that the ServiceMonitor selects the manager's metrics Service and port, that the
// PodMonitor selects injected pods and the port the injector names, and that every job
// the rules and dashboard select on is one the monitors set.
func TestMonitorsScrapeWhatIsDeployed(t *testing.T) {
	if testing.Short() {
		t.Skip("renders with the source-built kubectl")
	}
	mon := render(t, "config/prometheus")
	deployed := render(t, "config/default")
	if len(mon) != 3 || mon["PrometheusRule/pipes-alerts"] == nil {
		t.Fatalf("config/prometheus renders %d objects, want a ServiceMonitor, a PodMonitor and PrometheusRule/pipes-alerts", len(mon))
	}
	for name, u := range mon {
		if u.GetNamespace() != "pipes-system" {
			t.Errorf("%s is in namespace %q, want pipes-system, beside the operator", name, u.GetNamespace())
		}
	}

	var sm monitor
	fromUnstructured(t, mon["ServiceMonitor/pipes-controller-manager"], &sm)
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints: %+v", sm.Spec.Endpoints)
	}
	var scraped []string
	for name, u := range deployed {
		if u.GetKind() != "Service" || u.GetNamespace() != sm.Metadata.Namespace {
			continue
		}
		var svc corev1.Service
		fromUnstructured(t, u, &svc)
		if !k8slabels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(k8slabels.Set(svc.Labels)) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.Name == sm.Spec.Endpoints[0].Port {
				scraped = append(scraped, name)
			}
		}
	}
	if !slices.Equal(scraped, []string{"Service/pipes-metrics-service"}) {
		t.Errorf("the ServiceMonitor scrapes %v, want exactly Service/pipes-metrics-service", scraped)
	}

	var pm monitor
	fromUnstructured(t, mon["PodMonitor/pipes-vend-sidecars"], &pm)
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port != webhook.SidecarMetricsPortName {
		t.Errorf("the PodMonitor must scrape the port the injector names %q: %+v", webhook.SidecarMetricsPortName, pm.Spec.PodMetricsEndpoints)
	}
	if want := map[string]string{pipesv1.LabelInject: "true"}; !maps.Equal(pm.Spec.Selector.MatchLabels, want) || !pm.Spec.NamespaceSelector.Any {
		t.Errorf("the PodMonitor must select injected pods (%v) in every namespace: %+v", want, pm.Spec)
	}

	jobs := []string{sm.Spec.Endpoints[0].job()}
	if len(pm.Spec.PodMetricsEndpoints) == 1 {
		jobs = append(jobs, pm.Spec.PodMetricsEndpoints[0].job())
	}
	var queries []query
	for _, r := range alertRules(t) {
		queries = append(queries, query{where: "alert " + r.Alert, expr: r.Expr})
	}
	for _, q := range append(queries, dashboardQueries(t)...) {
		for _, sel := range selectors(t, q) {
			for _, m := range sel.matchers {
				if m.Name == "job" && (m.Type != labels.MatchEqual || !slices.Contains(jobs, m.Value)) {
					t.Errorf("%s selects %s, but the monitors set job to one of %q", q.where, m, jobs)
				}
			}
		}
	}
}
