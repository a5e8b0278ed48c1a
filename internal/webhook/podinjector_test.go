package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var _ = Describe("Pod injection", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = "inject-" + rand.String(5)
		Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		_ = env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}})
	})

	// pod is a two-container pod; inject is its pipes.dev/inject label ("" for none) and
	// credentials its pipes.dev/credentials annotation ("" for none).
	pod := func(namespace, inject, credentials string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "app-"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "app", Image: "app:1"},
				{Name: "worker", Image: "app:1", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}},
			}, Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
		}
		if inject != "" {
			p.Labels = map[string]string{"pipes.dev/inject": inject}
		}
		if credentials != "" {
			p.Annotations = map[string]string{"pipes.dev/credentials": credentials}
		}
		return p
	}
	create := func(ctx context.Context, p *corev1.Pod) error { return env.Client.Create(ctx, p) }

	It("leaves pods without the label, or with inject=false, untouched", func(ctx SpecContext) {
		for _, inject := range []string{"", "false"} {
			p := pod(ns, inject, "openai:u")
			Expect(create(ctx, p)).To(Succeed())
			Expect(p.Spec.InitContainers).To(BeEmpty())
			Expect(p.Spec.Volumes).To(HaveLen(1))
			Expect(p.Spec.Containers[0].Env).To(BeEmpty())
		}
	})

	It("injects the vend sidecar, volumes and mounts exactly into a pod labelled pipes.dev/inject", func(ctx SpecContext) {
		p := pod(ns, "true", "github:user_123, openai:user_123@org_9")
		Expect(create(ctx, p)).To(Succeed())

		Expect(p.Annotations).To(HaveKeyWithValue("pipes.dev/injected", testenv.VendImage))
		Expect(p.Spec.InitContainers).To(HaveLen(1))
		s := p.Spec.InitContainers[0]
		Expect(s.Name).To(Equal("pipes-vend"))
		Expect(s.Image).To(Equal(testenv.VendImage))
		Expect(s.RestartPolicy).To(Equal(ptr.To(corev1.ContainerRestartPolicyAlways)))
		Expect(s.Args).To(Equal([]string{
			"--api-url=https://pipes-api.pipes-system.svc",
			"--token-file=/var/run/secrets/pipes.dev/serviceaccount/token",
			"--credentials=github:user_123, openai:user_123@org_9",
			"--listen=127.0.0.1:8299",
			"--dir=/var/run/pipes",
			"--file-gid=65532",
			"--ca-file=/var/run/secrets/pipes.dev/ca/ca.crt",
		}))
		Expect(s.Env).To(BeEmpty(), "the CA is mounted (and follows rotation), not baked into the environment")
		Expect(s.Resources.Requests).To(Equal(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")}))
		Expect(s.Resources.Limits).To(Equal(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("48Mi")}))
		probe := []string{"/vend", "probe", "--listen=127.0.0.1:8299", "--path=/readyz"}
		Expect(s.ReadinessProbe.Exec.Command).To(Equal(probe))
		Expect(s.StartupProbe.Exec.Command).To(Equal(probe))
		Expect(s.StartupProbe.FailureThreshold).To(BeEquivalentTo(60))
		Expect(s.SecurityContext).To(Equal(&corev1.SecurityContext{
			RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
			ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}))
		Expect(s.VolumeMounts).To(Equal([]corev1.VolumeMount{
			{Name: "pipes-credentials", MountPath: "/var/run/pipes"},
			{Name: "pipes-token", MountPath: "/var/run/secrets/pipes.dev/serviceaccount", ReadOnly: true},
			{Name: "pipes-ca", MountPath: "/var/run/secrets/pipes.dev/ca", ReadOnly: true},
		}))

		for _, c := range p.Spec.Containers {
			Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "pipes-credentials", MountPath: "/var/run/pipes", ReadOnly: true}), c.Name)
			Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "PIPES_VEND_URL", Value: "http://127.0.0.1:8299"}), c.Name)
		}
		Expect(p.Spec.Containers[1].VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "data", MountPath: "/data"}), "existing mounts are kept")
		Expect(p.Spec.Volumes).To(HaveLen(4))
		Expect(p.Spec.Volumes[1].Name).To(Equal("pipes-credentials"))
		Expect(p.Spec.Volumes[1].EmptyDir.Medium).To(Equal(corev1.StorageMediumMemory))
		Expect(p.Spec.Volumes[1].EmptyDir.SizeLimit.String()).To(Equal("1Mi"))
		Expect(p.Spec.Volumes[2].Name).To(Equal("pipes-token"))
		token := p.Spec.Volumes[2].Projected.Sources[0].ServiceAccountToken
		Expect(token.Audience).To(Equal("pipes.dev"))
		Expect(token.Path).To(Equal("token"))
		Expect(*token.ExpirationSeconds).To(BeEquivalentTo(3600))
		Expect(p.Spec.Volumes[3]).To(Equal(corev1.Volume{Name: "pipes-ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "pipes-api-ca"},
			Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			DefaultMode:          ptr.To[int32](0o444),
		}}}))
		for _, c := range p.Spec.Containers {
			Expect(c.VolumeMounts).NotTo(ContainElement(HaveField("Name", "pipes-ca")), "only the sidecar needs the CA")
		}
		Expect(p.Spec.SecurityContext.SupplementalGroups).To(Equal([]int64{65532}))
		Expect(p.Spec.ServiceAccountName).To(Equal("default"), "the projected token needs a ServiceAccount")
	})

	It("creates the namespace's CA bundle ConfigMap the sidecar mounts, except on a dry run", func(ctx SpecContext) {
		key := client.ObjectKey{Namespace: ns, Name: "pipes-api-ca"}
		Expect(env.Client.Create(ctx, pod(ns, "true", "openai:u"), client.DryRunAll)).To(Succeed())
		Expect(apierrors.IsNotFound(env.Client.Get(ctx, key, &corev1.ConfigMap{}))).To(BeTrue(), "a dry run must not write")

		Expect(create(ctx, pod(ns, "true", "openai:u"))).To(Succeed())
		var cm corev1.ConfigMap
		Expect(env.Client.Get(ctx, key, &cm)).To(Succeed())
		Expect(cm.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "pipes-operator"))
		Expect(cm.Data).To(Equal(map[string]string{"ca.crt": string(env.APICA())}))
		Expect(cm.BinaryData).To(BeEmpty())

		Expect(create(ctx, pod(ns, "true", "openai:u"))).To(Succeed(), "the next pod finds it")
	})

	It("refuses to mount a CA bundle ConfigMap the operator does not manage", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pipes-api-ca"},
			Data:       map[string]string{"ca.crt": "someone else's CA"},
		})).To(Succeed())
		err := create(ctx, pod(ns, "true", "openai:u"))
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(And(
			ContainSubstring(`ConfigMap "pipes-api-ca" in namespace "`+ns+`"`),
			ContainSubstring("app.kubernetes.io/managed-by=pipes-operator"),
			ContainSubstring("delete it"),
		))
	})

	It("serves the sidecar's metrics on the port pipes.dev/vend-metrics-port names, for a PodMonitor", func(ctx SpecContext) {
		p := pod(ns, "true", "openai:u")
		p.Annotations["pipes.dev/vend-metrics-port"] = "9299"
		Expect(create(ctx, p)).To(Succeed())
		s := p.Spec.InitContainers[0]
		Expect(s.Args).To(ContainElement("--metrics-listen=:9299"))
		Expect(s.Args).To(ContainElement("--listen=127.0.0.1:8299"), "credentials stay on loopback")
		Expect(s.Ports).To(Equal([]corev1.ContainerPort{{Name: "vend-metrics", ContainerPort: 9299, Protocol: corev1.ProtocolTCP}}))

		without := pod(ns, "true", "openai:u")
		Expect(create(ctx, without)).To(Succeed())
		Expect(without.Spec.InitContainers[0].Ports).To(BeEmpty(), "no port is opened unless asked for")
		Expect(without.Spec.InitContainers[0].Args).NotTo(ContainElement(HavePrefix("--metrics-listen")))
	})

	It("rejects a metrics port that is not a free port number, naming the annotation", func(ctx SpecContext) {
		for value, want := range map[string]string{
			"http":  "want a port number",
			"0":     "want a port number",
			"70000": "want a port number",
			"8299":  "other than 8299, which serves credentials",
			"8080":  `container "app" already uses port 8080`,
		} {
			p := pod(ns, "true", "openai:u")
			p.Annotations["pipes.dev/vend-metrics-port"] = value
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
			err := create(ctx, p)
			Expect(err).To(HaveOccurred(), value)
			Expect(err.Error()).To(And(ContainSubstring(`annotation pipes.dev/vend-metrics-port="`+value+`"`), ContainSubstring(want)), value)
		}
	})

	It("never injects twice", func(ctx SpecContext) {
		p := pod(ns, "true", "openai:u")
		Expect(create(ctx, p)).To(Succeed())
		again := pod(ns, "true", "openai:u")
		again.Spec = *p.Spec.DeepCopy() // an already-injected spec admitted again (e.g. a re-created pod)
		again.Spec.NodeName = ""
		Expect(create(ctx, again)).To(Succeed())
		Expect(again.Spec.InitContainers).To(HaveLen(1))
		Expect(again.Spec.Volumes).To(HaveLen(len(p.Spec.Volumes)))
		Expect(again.Spec.Containers[0].VolumeMounts).To(HaveLen(len(p.Spec.Containers[0].VolumeMounts)))
	})

	It("never touches the operator's own namespace", func(ctx SpecContext) {
		_ = env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: "default"}})
		p := pod(testenv.OperatorNamespace, "true", "openai:u")
		Expect(create(ctx, p)).To(Succeed())
		Expect(p.Spec.InitContainers).To(BeEmpty())
	})

	It("refuses a host-network pod: its loopback port would be the node's", func(ctx SpecContext) {
		p := pod(ns, "true", "openai:u")
		p.Spec.HostNetwork = true
		err := create(ctx, p)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(And(
			ContainSubstring("spec.hostNetwork"),
			ContainSubstring("127.0.0.1:8299"),
			ContainSubstring("every host-network pod on the node"),
			ContainSubstring("run the pod without hostNetwork"),
			ContainSubstring("backend API"),
		))
	})

	DescribeTable("rejects a bad label or annotation with a message that points at it",
		func(ctx SpecContext, inject, credentials string, want string) {
			err := create(ctx, pod(ns, inject, credentials))
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(want))
		},
		Entry("inject is not a boolean", "yes", "openai:u",
			`label pipes.dev/inject="yes": want "true" or "false"`),
		Entry("credentials missing", "true", "",
			"annotation pipes.dev/credentials is required"),
		Entry("entry without a user", "true", "openai:u, github",
			`annotation pipes.dev/credentials: entry 2 ("github") is not PROVIDER:USER_ID[@ORGANIZATION_ID]`),
		Entry("not a provider name", "true", "Open_AI:u",
			`"Open_AI" is not a Provider name`),
	)

	Context("with the webhook configuration users deploy", func() {
		// envtest installs config/webhook/manifests.yaml (generated from the markers);
		// the objectSelector comes from the kustomize patch in config/webhook, so the
		// specs here apply that rendered selector to the envtest configuration first.
		BeforeEach(func(ctx SpecContext) { applyShippedPodWebhookSelector(ctx) })

		It("is called for labelled pods only: an annotated, unlabelled pod never reaches it", func(ctx SpecContext) {
			before := podWebhookCalls()
			legacy := pod(ns, "", "openai:u")
			legacy.Annotations["pipes.dev/inject"] = "true" // the opt-in before it became a label
			Expect(create(ctx, legacy)).To(Succeed())
			Expect(legacy.Spec.InitContainers).To(BeEmpty())
			Expect(podWebhookCalls()).To(Equal(before), "the API server must not call the pod webhook for a pod without the label")

			labelled := pod(ns, "true", "openai:u")
			Expect(create(ctx, labelled)).To(Succeed())
			Expect(labelled.Spec.InitContainers).To(HaveLen(1))
			Expect(podWebhookCalls()).To(BeNumerically(">", before))
		})
	})
})

// podWebhookCalls is how many admission requests the manager's pod webhook has served
// (controller-runtime's counter, in this process's registry).
func podWebhookCalls() float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	var n float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_webhook_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "webhook" && l.GetValue() == "/mutate--v1-pod" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// shippedPodWebhook renders config/default as `kubectl apply -k` does and returns its pod webhook.
func shippedPodWebhook() admissionv1.MutatingWebhook {
	root, err := devenv.Root()
	Expect(err).NotTo(HaveOccurred())
	assets, err := devenv.Assets(root)
	Expect(err).NotTo(HaveOccurred())
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(root, "config", "default")).Output()
	Expect(err).NotTo(HaveOccurred())
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var cfg admissionv1.MutatingWebhookConfiguration
		err := dec.Decode(&cfg)
		if errors.Is(err, io.EOF) {
			break
		}
		Expect(err).NotTo(HaveOccurred())
		for _, w := range cfg.Webhooks {
			if cfg.Kind == "MutatingWebhookConfiguration" && w.Name == "mpod.pipes.dev" {
				return w
			}
		}
	}
	Fail("config/default renders no mutating webhook mpod.pipes.dev")
	return admissionv1.MutatingWebhook{}
}

// applyShippedPodWebhookSelector gives envtest's pod webhook the objectSelector of
// config/default, and waits until the API server uses it.
func applyShippedPodWebhookSelector(ctx context.Context) {
	shipped := shippedPodWebhook()
	Expect(shipped.ObjectSelector).NotTo(BeNil(), "config/default must give the pod webhook an objectSelector")
	var cfg admissionv1.MutatingWebhookConfiguration
	Expect(env.Client.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, &cfg)).To(Succeed())
	for i := range cfg.Webhooks {
		if cfg.Webhooks[i].Name != "mpod.pipes.dev" || equality.Semantic.DeepEqual(cfg.Webhooks[i].ObjectSelector, shipped.ObjectSelector) {
			continue
		}
		cfg.Webhooks[i].ObjectSelector = shipped.ObjectSelector
		Expect(env.Client.Update(ctx, &cfg)).To(Succeed())
		// The API server reloads webhook configurations asynchronously: wait until an
		// unlabelled pod (a dry run) no longer reaches the webhook.
		probe := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "selector-probe"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "c"}}},
		}
		Eventually(func(g Gomega) {
			before := podWebhookCalls()
			g.Expect(env.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)).To(Succeed())
			g.Expect(podWebhookCalls()).To(Equal(before))
		}).Should(Succeed())
	}
}
