package webhook

import (
	"context"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/vendspec"
)

// FuzzPodInjector admits pods whose pipes.dev annotations (inject label, credentials,
// vend metrics port) are arbitrary, on a dry run: no panic; a pod is injected only when
// every value is valid (the sidecar gets the credentials vendspec parses, and a metrics
// port in range), else the pod is refused with an error naming the annotation or label.
func FuzzPodInjector(f *testing.F) {
	for _, seed := range []struct{ inject, credentials, port string }{
		{"true", "openai:user_1", ""},
		{"true", "openai:user_1@org_9,github:u", "9100"},
		{"true", "openai:user_1", "8181"},
		{"true", "openai:user_1", "0"},
		{"true", "openai:user_1", "65536"},
		{"true", "openai:user_1", "99999999999999999999"},
		{"true", "openai:user_1", "-1"},
		{"true", "openai:user_1", "+80"},
		{"true", "openai:user_1", "80"},
		{"yes", "openai:user_1", ""},
		{"true", "", ""},
		{"true", "\xff:\xfe", ""},
		{"true", strings.Repeat("openai:u,", 10_000), ""},
		{"true", "openai:user_1,openai:user_1", ""},
		{"false", "anything", "anything"},
	} {
		f.Add(seed.inject, seed.credentials, seed.port, seed.port != "")
	}
	p := &PodInjector{Image: "vend:fuzz", APIURL: "https://pipes-api.pipes-system.svc:8443"}
	dryRun := true
	ctx := admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Namespace: "ns", DryRun: &dryRun}})
	f.Fuzz(func(t *testing.T, inject, credentials, port string, withPort bool) {
		annotations := map[string]string{pipesv1.AnnotationCredentials: credentials}
		if withPort {
			annotations[pipesv1.AnnotationVendMetricsPort] = port
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app", Labels: map[string]string{pipesv1.LabelInject: inject}, Annotations: annotations},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}}},
		}
		err := p.Default(ctx, pod)
		injected := slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == SidecarName }) ||
			slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SidecarName })
		if err != nil {
			if injected {
				t.Fatalf("refused (%v) but injected", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "pipes.dev/") {
				t.Fatalf("the refusal does not name the annotation or label: %v", err)
			}
			return
		}
		if !injected {
			if inject == "true" {
				t.Fatalf("accepted inject=true but not injected")
			}
			return
		}
		if _, err := vendspec.Parse(credentials); err != nil {
			t.Fatalf("injected credentials vendspec refuses: %v", err)
		}
	})
}
