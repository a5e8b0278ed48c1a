package devenv

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// TestDefaultKustomizationRenders renders config/default as `kubectl apply -k` would and
// checks the names the manager's flag defaults rely on.
func TestDefaultKustomizationRenders(t *testing.T) {
	objects := renderDefault(t)
	for _, want := range []string{
		"Namespace/pipes-system",
		"CustomResourceDefinition/providers.pipes.dev",
		"CustomResourceDefinition/organizationproviders.pipes.dev",
		"CustomResourceDefinition/connectedaccounts.pipes.dev",
		"ServiceAccount/pipes-controller-manager",
		"ClusterRole/pipes-manager-role",
		"ClusterRoleBinding/pipes-manager-rolebinding",
		"Role/pipes-leader-election-role",
		"Deployment/pipes-controller-manager",
		"Service/pipes-webhook-service", // --webhook-service default
		"Service/pipes-metrics-service",
		"ValidatingWebhookConfiguration/pipes-validating-webhook-configuration", // --webhook-config default
		"MutatingWebhookConfiguration/pipes-mutating-webhook-configuration",     // --mutating-webhook-config default
		"Secret/pipes-webhook-cert",                                             // --cert-secret default
		"Service/pipes-api",                                                     // --api-service default
		"ClusterRole/pipes-vendor",
		"ClusterRole/pipes-backend",
	} {
		if objects[want] == nil {
			t.Errorf("config/default does not render %s", want)
		}
	}
	vwc := objects["ValidatingWebhookConfiguration/pipes-validating-webhook-configuration"]
	if vwc == nil {
		return
	}
	webhooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	if len(webhooks) != 3 {
		t.Fatalf("want 3 webhooks, got %d", len(webhooks))
	}
	for _, w := range webhooks {
		w := w.(map[string]any)
		if w["failurePolicy"] != "Fail" {
			t.Errorf("%s: failurePolicy %v, want Fail", w["name"], w["failurePolicy"])
		}
		svc, _, _ := unstructured.NestedString(w, "clientConfig", "service", "namespace")
		if svc != "pipes-system" {
			t.Errorf("%s: webhook service namespace %q", w["name"], svc)
		}
		exprs, _, _ := unstructured.NestedSlice(w, "namespaceSelector", "matchExpressions")
		if len(exprs) != 1 {
			t.Errorf("%s: the operator's namespace must be excluded by namespaceSelector, got %v", w["name"], exprs)
		}
	}
}

// TestPodWebhookReach renders config/default and checks that the pod webhook is called
// only for pods that opt in with the pipes.dev/inject label, and that those are rejected
// rather than started without their sidecar while the operator is unavailable.
func TestPodWebhookReach(t *testing.T) {
	var pod *admissionv1.MutatingWebhook
	for _, u := range renderDefault(t) {
		if u.GetKind() != "MutatingWebhookConfiguration" {
			continue
		}
		var cfg admissionv1.MutatingWebhookConfiguration
		fromUnstructured(t, u, &cfg)
		for i := range cfg.Webhooks {
			if cfg.Webhooks[i].Name == "mpod.pipes.dev" {
				pod = &cfg.Webhooks[i]
			}
		}
	}
	if pod == nil {
		t.Fatal("config/default renders no pod webhook mpod.pipes.dev")
	}
	sel, err := metav1.LabelSelectorAsSelector(pod.ObjectSelector)
	if err != nil || pod.ObjectSelector == nil {
		t.Fatalf("objectSelector %v (%v): want one selecting pods labelled pipes.dev/inject", pod.ObjectSelector, err)
	}
	for set, want := range map[string]bool{
		"pipes.dev/inject=true": true,
		"app=web":               false, // an ordinary pod never reaches the webhook
		"":                      false,
	} {
		lbls, err := labels.ConvertSelectorToLabelsMap(set)
		if err != nil {
			t.Fatal(err)
		}
		if got := sel.Matches(lbls); got != want {
			t.Errorf("objectSelector %q matches pod labels {%s}: %v, want %v", sel, set, got, want)
		}
	}
	if pod.FailurePolicy == nil || *pod.FailurePolicy != admissionv1.Fail {
		t.Errorf("failurePolicy %v, want Fail: a labelled pod must not start without its sidecar", ptrString(pod.FailurePolicy))
	}
	if pod.TimeoutSeconds == nil || *pod.TimeoutSeconds > 5 {
		t.Errorf("timeoutSeconds %v, want at most 5", pod.TimeoutSeconds)
	}
	if pod.SideEffects == nil || *pod.SideEffects != admissionv1.SideEffectClassNoneOnDryRun {
		t.Errorf("sideEffects %v, want NoneOnDryRun (it creates the namespace's CA bundle ConfigMap, except on dry runs)", ptrString(pod.SideEffects))
	}
	exprs := pod.NamespaceSelector.MatchExpressions
	if len(exprs) != 1 || exprs[0].Key != "kubernetes.io/metadata.name" || exprs[0].Operator != metav1.LabelSelectorOpNotIn {
		t.Errorf("the operator's namespace and kube-system must stay excluded by namespaceSelector, got %v", exprs)
	}
}

func ptrString[T ~string](p *T) string {
	if p == nil {
		return "<unset>"
	}
	return string(*p)
}

// TestManagerRBACIsNarrow checks the manager's rights as config/default grants them: the
// webhook configurations it may change are only its own, by name, and nothing lets it
// patch Secrets (see docs/security.md for why the rest cannot be narrower).
func TestManagerRBACIsNarrow(t *testing.T) {
	objects := renderDefault(t)
	role := objects["ClusterRole/pipes-manager-role"]
	if role == nil {
		t.Fatal("config/default renders no ClusterRole/pipes-manager-role")
	}
	var cr rbacv1.ClusterRole
	fromUnstructured(t, role, &cr)
	own := map[string]string{
		"validatingwebhookconfigurations": "ValidatingWebhookConfiguration/pipes-validating-webhook-configuration",
		"mutatingwebhookconfigurations":   "MutatingWebhookConfiguration/pipes-mutating-webhook-configuration",
	}
	for _, rule := range cr.Rules {
		for _, res := range rule.Resources {
			switch {
			case own[res] != "":
				for _, verb := range rule.Verbs {
					if verb == "list" || verb == "watch" {
						continue // cert-controller's cache; cannot be narrowed by name
					}
					name := strings.SplitN(own[res], "/", 2)[1]
					if len(rule.ResourceNames) != 1 || rule.ResourceNames[0] != name {
						t.Errorf("the manager may %s %s %v; want only its own, %s", verb, res, orAll(rule.ResourceNames), name)
					}
					if objects[own[res]] == nil {
						t.Errorf("RBAC names %s, which config/default does not render", own[res])
					}
				}
			case res == "secrets" && slices.Contains(rule.Verbs, "patch"):
				t.Errorf("the manager may patch Secrets; nothing it runs does")
			}
		}
	}
}

func orAll(names []string) any {
	if len(names) == 0 {
		return "(all of them)"
	}
	return names
}

// renderDefault renders config/default as `kubectl apply -k` would, by kind/name.
// Skipped under -short: kubectl comes with the control-plane binaries, which a fresh
// machine builds first.
func renderDefault(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	if testing.Short() {
		t.Skip("renders with the source-built kubectl")
	}
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	objects, err := Kustomize(root, filepath.Join("config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	return objects
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatal(err)
	}
}

// TestPublicSealingKeysetIsReadableByEveryAuthenticatedUser checks the one right
// config/default grants every authenticated user: get on the public sealing keyset
// ConfigMap, by name, in the operator's namespace, and nothing else.
func TestPublicSealingKeysetIsReadableByEveryAuthenticatedUser(t *testing.T) {
	objects := renderDefault(t)
	var role rbacv1.Role
	var binding rbacv1.RoleBinding
	fromUnstructured(t, objects["Role/pipes-sealing-public-keyset-reader"], &role)
	fromUnstructured(t, objects["RoleBinding/pipes-sealing-public-keyset-reader"], &binding)
	if role.Namespace != "pipes-system" || binding.Namespace != "pipes-system" {
		t.Errorf("the reader Role and binding are in %q and %q, want the operator's namespace", role.Namespace, binding.Namespace)
	}
	want := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{pipesv1.SealingPublicKeysetConfigMap}, Verbs: []string{"get"}}
	if len(role.Rules) != 1 || !equality.Semantic.DeepEqual(role.Rules[0], want) {
		t.Errorf("reader rules %+v, want only %+v", role.Rules, want)
	}
	if len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "Group" || binding.Subjects[0].Name != "system:authenticated" || binding.RoleRef.Name != role.Name {
		t.Errorf("binding %+v, want the Role bound to the group system:authenticated", binding)
	}
}
