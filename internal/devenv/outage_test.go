package devenv

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/scheme"
)

// TestWebhookOutage is resilience scenario 5: config/default's webhook configurations
// installed as shipped, and no operator answering them, first refusing connections (the
// manager's pods gone), then accepting them and never answering (a hung manager). It
// checks what docs/workloads.md and docs/operations.md promise: the CRDs' CEL rules still
// hold a Provider's method fixed even when validation is configured to fail open; pods
// labelled pipes.dev/inject are refused, never started without their sidecar, within
// the webhook's timeout; every other pod, and labelled ones in the excluded namespaces,
// are admitted as if the operator did not exist.
func TestWebhookOutage(t *testing.T) {
	objects := renderDefault(t)
	env, err := Environment(false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	caPEM, err := WriteServingCerts(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"apps", "pipes-system"} {
		must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	must(t, c.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "before"},
		Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}))

	for _, endpoint := range []struct {
		name     string
		listen   func(t *testing.T) string
		maxDelay time.Duration // a labelled pod's refusal
	}{
		{"refused", closedPort, 2 * time.Second},
		{"hung", silentPort, 5*time.Second + 3*time.Second}, // the webhook's 5 s timeout, plus room for a loaded machine
	} {
		t.Run(endpoint.name, func(t *testing.T) {
			addr := endpoint.listen(t)
			validating, mutating := shippedWebhooks(t, objects, "https://"+addr, caPEM)
			must(t, c.Create(ctx, validating))
			must(t, c.Create(ctx, mutating))
			t.Cleanup(func() {
				_ = c.Delete(context.Background(), validating)
				_ = c.Delete(context.Background(), mutating)
			})
			name := func(s string) string { return endpoint.name + "-" + s }

			// Validation fails closed as shipped: nothing is stored unvalidated.
			err := c.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name("new")},
				Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}})
			expectRefusedBy(t, err, "vprovider.pipes.dev")

			// Configured to fail open (Helm's webhook.validation.failurePolicy=Ignore), the
			// method is still fixed: by the CRD's CEL rule, which needs no operator.
			open := validating.DeepCopy()
			for i := range open.Webhooks {
				open.Webhooks[i].FailurePolicy = ptr.To(admissionv1.Ignore)
			}
			must(t, c.Update(ctx, open))
			var p pipesv1.Provider
			must(t, c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "before"}, &p))
			p.Spec.Method = pipesv1.AuthMethodOAuth
			p.Spec.OAuth = &pipesv1.OAuthSpec{AuthorizationURL: "https://example.com/a", TokenURL: "https://example.com/t", ClientID: "id"}
			err = c.Update(ctx, &p)
			if err == nil || !strings.Contains(err.Error(), "spec.method is immutable") {
				t.Errorf("method change with the webhook down: %v, want the CRD's CEL rule to refuse it", err)
			}

			for _, pod := range []struct {
				namespace string
				labels    map[string]string
				admitted  bool
			}{
				{"apps", nil, true},
				{"apps", map[string]string{"app": "web"}, true},
				{"apps", map[string]string{pipesv1.LabelInject: "true"}, false},
				{"pipes-system", map[string]string{pipesv1.LabelInject: "true"}, true}, // the operator's own namespace is never intercepted
				{"kube-system", map[string]string{pipesv1.LabelInject: "true"}, true},
			} {
				start := time.Now()
				err := c.Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: pod.namespace, GenerateName: name("pod-"), Labels: pod.labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
				})
				took := time.Since(start)
				t.Logf("pod in %s labelled %v: %v after %s", pod.namespace, pod.labels, errOrAdmitted(err), took.Round(time.Millisecond))
				switch {
				case pod.admitted && err != nil:
					t.Errorf("pod in %s labelled %v refused while the operator is down: %v", pod.namespace, pod.labels, err)
				case pod.admitted && took > time.Second:
					t.Errorf("pod in %s labelled %v took %s to admit: it waited on the operator", pod.namespace, pod.labels, took)
				case !pod.admitted:
					expectRefusedBy(t, err, "mpod.pipes.dev")
					if took > endpoint.maxDelay {
						t.Errorf("a labelled pod's refusal took %s, more than %s", took, endpoint.maxDelay)
					}
				}
			}
		})
	}
}

// shippedWebhooks returns config/default's webhook configurations, each webhook calling
// base + its service path instead of the operator's Service (none runs in envtest).
func shippedWebhooks(t *testing.T, objects map[string]*unstructured.Unstructured, base string, caPEM []byte) (*admissionv1.ValidatingWebhookConfiguration, *admissionv1.MutatingWebhookConfiguration) {
	t.Helper()
	var v admissionv1.ValidatingWebhookConfiguration
	var m admissionv1.MutatingWebhookConfiguration
	for _, u := range objects {
		switch u.GetKind() {
		case "ValidatingWebhookConfiguration":
			fromUnstructured(t, u, &v)
		case "MutatingWebhookConfiguration":
			fromUnstructured(t, u, &m)
		}
	}
	if len(v.Webhooks) == 0 || len(m.Webhooks) == 0 {
		t.Fatal("config/default renders no webhook configurations")
	}
	direct := func(cc *admissionv1.WebhookClientConfig) {
		path := ""
		if cc.Service != nil && cc.Service.Path != nil {
			path = *cc.Service.Path
		}
		*cc = admissionv1.WebhookClientConfig{URL: ptr.To(base + path), CABundle: caPEM}
	}
	for i := range v.Webhooks {
		direct(&v.Webhooks[i].ClientConfig)
	}
	for i := range m.Webhooks {
		direct(&m.Webhooks[i].ClientConfig)
	}
	v.ResourceVersion, m.ResourceVersion = "", ""
	return &v, &m
}

// closedPort is an address nothing listens on: the manager's pods are gone.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// silentPort accepts connections and never answers: a hung manager.
func silentPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn) // held open, never read
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func expectRefusedBy(t *testing.T, err error, webhook string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("failed calling webhook %q", webhook)) {
		t.Errorf("got %v, want a refusal naming webhook %s", err, webhook)
	}
}

func errOrAdmitted(err error) string {
	if err == nil {
		return "admitted"
	}
	return "refused"
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
