package devenv

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// TestDefaultKustomizationRenders renders config/default as `kubectl apply -k` would and
// checks the names the manager's flag defaults rely on.
func TestDefaultKustomizationRenders(t *testing.T) {
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := Assets(root)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(root, "config", "default")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v", err)
	}
	objects := map[string]*unstructured.Unstructured{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		objects[u.GetKind()+"/"+u.GetName()] = &u
	}
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
