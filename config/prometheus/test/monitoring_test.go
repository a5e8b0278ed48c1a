// Package test checks what config/prometheus and config/grafana ship against what the
// operator serves: the rules parse with Prometheus's own parser, and every metric (and
// every label value they match on) that the alerts and the dashboard query exists on the
// manager's or the vend sidecar's /metrics, scraped over HTTP from a manager running on
// a real control plane and a sidecar vending from it.
package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/sidecar"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/webhook"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	rulesFile     = "../prometheusrule.yaml"
	dashboardFile = "../../grafana/pipes-operator.json"
	runbook       = "docs/operations.md#troubleshooting"
)

// targetLabels are added by Prometheus (and the monitors' relabelings) when it scrapes,
// so they are not on /metrics.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint", "service"}

// query is one PromQL expression shipped in the rules or the dashboard.
type query struct{ where, expr string }

func alertRules(t *testing.T) []rulefmt.Rule {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &obj); err != nil || obj.Kind != "PrometheusRule" {
		t.Fatalf("%s: not a PrometheusRule: %v", rulesFile, err)
	}
	// The PrometheusRule's spec is a Prometheus rule file: parse it as Prometheus does.
	spec, err := yaml.JSONToYAML(obj.Spec)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("%s does not parse as Prometheus rules: %v", rulesFile, errs)
	}
	var rules []rulefmt.Rule
	for _, g := range groups.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// dashboardQueries returns every target expression of the dashboard's panels, with
// Grafana's interval variables replaced by a duration so that PromQL parses them.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title      string          `json:"title"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels json.RawMessage `json:"panels"`
	}
	var dash struct {
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Templating    struct {
			List []struct {
				Name, Type, Query string
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current Grafana schema (36 or later)", dash.SchemaVersion)
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v struct{ Name, Type, Query string }) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Error("the dashboard needs a datasource template variable named datasource, for Prometheus")
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	var out []query
	var walk func([]json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, r := range raws {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			var nested []json.RawMessage
			_ = json.Unmarshal(p.Panels, &nested)
			walk(nested)
			if len(p.Targets) > 0 && !strings.Contains(string(p.Datasource), "${datasource}") {
				t.Errorf("panel %q: datasource %s, want the ${datasource} variable", p.Title, p.Datasource)
			}
			for _, target := range p.Targets {
				out = append(out, query{where: "dashboard panel " + strconvQuote(p.Title), expr: vars.Replace(target.Expr)})
			}
		}
	}
	walk(dash.Panels)
	if len(out) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return out
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

// TestAlertRules parses the PrometheusRule with Prometheus's rule parser and checks
// that each alert tells the person on call what happened and where to look.
func TestAlertRules(t *testing.T) {
	rules := alertRules(t)
	want := []string{"PipesCredentialsNeedReauthorization", "PipesCredentialsOnOldKeys", "PipesWebhookErrors", "PipesBackendAPIErrors", "PipesVendSidecarStale"}
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		if r.Alert == "" {
			t.Errorf("rule %q: only alerts are shipped", r.Expr)
			continue
		}
		if r.For == 0 {
			t.Errorf("%s: no for:, so one bad scrape pages someone", r.Alert)
		}
		if r.Labels["severity"] == "" {
			t.Errorf("%s: no severity label", r.Alert)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if !strings.HasSuffix(r.Annotations["runbook_url"], runbook) {
			t.Errorf("%s: runbook_url %q, want a link to %s", r.Alert, r.Annotations["runbook_url"], runbook)
		}
	}
	for _, n := range want {
		if !slices.Contains(names, n) {
			t.Errorf("alert %s is missing (have %v)", n, names)
		}
	}
	for _, q := range dashboardQueries(t) {
		if _, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr); err != nil {
			t.Errorf("%s: %q does not parse: %v", q.where, q.expr, err)
		}
	}
}

// selector is one metric a query reads, with the label matchers it uses.
type selector struct {
	name     string
	matchers []*labels.Matcher
}

func selectors(t *testing.T, q query) []selector {
	t.Helper()
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr)
	if err != nil {
		t.Fatalf("%s: %q: %v", q.where, q.expr, err)
	}
	var out []selector
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := selector{name: vs.Name}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				if m.Type == labels.MatchEqual {
					s.name = m.Value
				}
				continue
			}
			s.matchers = append(s.matchers, m)
		}
		if s.name == "" {
			t.Errorf("%s: %q selects no metric by name", q.where, q.expr)
		}
		out = append(out, s)
		return nil
	})
	return out
}

// TestRulesAndDashboardUseServedMetrics runs the operator and a sidecar, drives some
// traffic so that labelled series exist (a vend of each outcome, a rotation the sidecar
// sees), scrapes both over HTTP, and checks the rules' and dashboard's queries against
// what they serve, and what they serve against the naming and cardinality rules.
func TestRulesAndDashboardUseServedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest: starts etcd and kube-apiserver; run without -short (make test)")
	}
	var queries []query
	for _, r := range alertRules(t) {
		queries = append(queries, query{where: "alert " + r.Alert, expr: r.Expr})
	}
	queries = append(queries, dashboardQueries(t)...)

	// testenv finds config/crd and config/webhook from the nearest go.mod upwards, which
	// from here is this module's: start it from the operator's root.
	t.Chdir("../../..")
	e, err := testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 1e6, Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const ns, user, stranger = "apps", "user_private_7f3a", "user_private_c0ffee"
	keys := []string{"sk-monitoring-" + strings.Repeat("1", 30) + "ONE1", "sk-monitoring-" + strings.Repeat("2", 30) + "TWO2"}
	must(t, e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	// Through the validating webhook: webhook metrics.
	must(t, e.Client.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}))
	h, err := apiclient.HTTPClientWithCAData(e.APICA(), 30*time.Second)
	must(t, err)
	backendToken, err := e.ServiceAccountToken(ctx, ns, "backend", "pipes-backend", ns)
	must(t, err)
	backend := apiclient.New(e.APIURL(), apiclient.WithHTTPClient(h), apiclient.WithToken(backendToken))
	_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: user, Secret: keys[0]})
	must(t, err)
	for _, u := range []string{user, stranger} { // ok and not_installed
		_, err = backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: u})
		must(t, err)
	}

	// The sidecar, in this process, vending from the backend API with a pod's token.
	appToken, err := e.ServiceAccountToken(ctx, ns, "app", "pipes-vendor", ns, webhook.TokenAudience)
	must(t, err)
	refs := []wire.CredentialRef{{Provider: "openai", UserID: user}}
	s := sidecar.New(sidecar.Config{Credentials: refs, Dir: filepath.Join(t.TempDir(), "pipes"), WatchTimeout: 5 * time.Second, FileGID: -1},
		apiclient.New(e.APIURL(), apiclient.WithHTTPClient(h), apiclient.WithToken(appToken)), slog.New(slog.DiscardHandler))
	go s.Run(ctx)
	metricsSrv := httptest.NewServer(s.MetricsHandler()) // what --metrics-listen serves
	t.Cleanup(metricsSrv.Close)
	waitFor(t, 20*time.Second, "the sidecar's first credentials", func() bool { ready, _ := s.Ready(); return ready })
	_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: user, Secret: keys[1]})
	must(t, err)
	var sidecarText string
	waitFor(t, 20*time.Second, "the sidecar to observe the rotation", func() bool {
		sidecarText = get(t, metricsSrv.URL+"/metrics")
		return strings.Contains(sidecarText, "pipes_vend_rotation_to_visible_seconds_count 1\n")
	})
	// The measurement is real: a rotation through the backend API reaches the sidecar in
	// well under the 5 s target (the watch wakes on the informer event).
	if !regexp.MustCompile(`pipes_vend_rotation_to_visible_seconds_bucket\{le="5"\} 1\n`).MatchString(sidecarText) {
		t.Errorf("the rotation took longer than 5 s to reach the sidecar:\n%s", sidecarText)
	}

	// The manager: wait until the reconcilers have run (their series exist once they have).
	var managerText string
	waitFor(t, 20*time.Second, "reconcile metrics on the manager's /metrics", func() bool {
		managerText = get(t, e.MetricsURL())
		return strings.Contains(managerText, `controller_runtime_reconcile_total{controller="connectedaccount",result="success"}`)
	})
	served := map[string]*dto.MetricFamily{}
	for source, text := range map[string]string{"manager": managerText, "sidecar": sidecarText} {
		p := expfmt.NewTextParser(model.UTF8Validation)
		families, err := p.TextToMetricFamilies(strings.NewReader(text))
		if err != nil {
			t.Fatalf("the %s's /metrics is not valid Prometheus text: %v", source, err)
		}
		for name, f := range families {
			if _, dup := served[name]; dup {
				t.Errorf("%s is served by both the manager and the sidecar", name)
			}
			served[name] = f
		}
	}

	t.Run("every metric and label value queried is served", func(t *testing.T) {
		for _, q := range queries {
			for _, sel := range selectors(t, q) {
				f := family(served, sel.name)
				if f == nil {
					t.Errorf("%s: %s is not served by the manager or the sidecar (%q)", q.where, sel.name, q.expr)
					continue
				}
				for _, m := range sel.matchers {
					if slices.Contains(targetLabels, m.Name) {
						continue
					}
					if !hasLabel(f, m.Name, "") {
						t.Errorf("%s: %s has no label %q (%q)", q.where, f.GetName(), m.Name, q.expr)
					} else if m.Type == labels.MatchEqual && !hasLabel(f, m.Name, m.Value) {
						t.Errorf("%s: %s never has %s=%q (%q)", q.where, f.GetName(), m.Name, m.Value, q.expr)
					}
				}
			}
		}
	})

	t.Run("pipes metrics follow Prometheus naming, with help text", func(t *testing.T) {
		for name, f := range served {
			if !strings.HasPrefix(name, "pipes_") {
				continue
			}
			if strings.TrimSpace(f.GetHelp()) == "" {
				t.Errorf("%s has no help text", name)
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				if !strings.HasSuffix(name, "_total") {
					t.Errorf("counter %s must end in _total", name)
				}
			case dto.MetricType_HISTOGRAM:
				if !strings.HasSuffix(name, "_seconds") {
					t.Errorf("histogram %s must carry its unit (_seconds)", name)
				}
			case dto.MetricType_GAUGE:
				if strings.HasSuffix(name, "_total") {
					t.Errorf("gauge %s must not end in _total", name)
				}
				if strings.Contains(name, "timestamp") && !strings.HasSuffix(name, "_timestamp_seconds") {
					t.Errorf("timestamp %s must end in _timestamp_seconds", name)
				}
			}
		}
		for _, want := range []string{
			"pipes_connected_accounts", "pipes_credentials_on_old_keys", "pipes_api_requests_total", "pipes_api_request_duration_seconds",
			"pipes_api_auth_cache_requests_total", "pipes_vend_last_success_timestamp_seconds", "pipes_vend_rotation_to_visible_seconds",
			"controller_runtime_reconcile_total", "controller_runtime_reconcile_errors_total", "controller_runtime_webhook_requests_total",
		} {
			if served[want] == nil {
				t.Errorf("%s is not served", want)
			}
		}
	})

	t.Run("no label can grow without bound or carry a secret", func(t *testing.T) {
		// Every label name served, reviewed: each takes a bounded set of values. A new one
		// fails here until it is reviewed and added.
		bounded := []string{
			"action", "result", "review", "state", // pipes_*: routes, outcomes, review kinds, account states
			"controller", "name", "priority", // controller-runtime: our controllers and their work queues
			"webhook", "code", // controller-runtime: our webhook paths, HTTP status codes
			"host", "method", // client-go: the API server it talks to, HTTP verbs
			"version", // go_info
		}
		private := append([]string{user, stranger, ns, backendToken, appToken}, keys...)
		for name, f := range served {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if !slices.Contains(bounded, l.GetName()) {
						t.Errorf("%s has label %q, whose values are not known to be bounded: review it, then add it to the list", name, l.GetName())
					}
					for _, p := range private {
						if strings.Contains(l.GetValue(), p) {
							t.Errorf("%s{%s=%q} carries a user ID, namespace, token or key", name, l.GetName(), l.GetValue())
						}
					}
				}
			}
		}
		for _, k := range keys {
			if strings.Contains(managerText, k) || strings.Contains(sidecarText, k) {
				t.Error("a credential appears in /metrics")
			}
		}
	})
}

// family finds the family a queried name belongs to: itself, or the histogram (or
// summary) whose _bucket, _sum or _count series it is.
func family(served map[string]*dto.MetricFamily, name string) *dto.MetricFamily {
	if f := served[name]; f != nil {
		return f
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if f := served[base]; ok && f != nil &&
			(f.GetType() == dto.MetricType_HISTOGRAM || (suffix != "_bucket" && f.GetType() == dto.MetricType_SUMMARY)) {
			return f
		}
	}
	return nil
}

// hasLabel reports whether any series of f has label name (with value, unless "").
func hasLabel(f *dto.MetricFamily, name, value string) bool {
	if name == "le" && f.GetType() == dto.MetricType_HISTOGRAM {
		return true
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == name && (value == "" || l.GetValue() == value) {
				return true
			}
		}
	}
	return false
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %s", what, within)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
