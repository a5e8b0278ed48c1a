package webhook_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"

	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var _ = Describe("Pod injection", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = "inject-" + rand.String(5)
		Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		_ = env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}})
	})

	pod := func(namespace string, annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "app-", Annotations: annotations},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "app", Image: "app:1"},
				{Name: "worker", Image: "app:1", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}},
			}, Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
		}
	}
	create := func(ctx context.Context, p *corev1.Pod) error { return env.Client.Create(ctx, p) }

	It("leaves pods without the annotation, or with inject=false, untouched", func(ctx SpecContext) {
		for _, ann := range []map[string]string{nil, {"pipes.dev/inject": "false", "pipes.dev/credentials": "openai:u"}} {
			p := pod(ns, ann)
			Expect(create(ctx, p)).To(Succeed())
			Expect(p.Spec.InitContainers).To(BeEmpty())
			Expect(p.Spec.Volumes).To(HaveLen(1))
			Expect(p.Spec.Containers[0].Env).To(BeEmpty())
		}
	})

	It("injects the vend sidecar, volumes and mounts exactly", func(ctx SpecContext) {
		p := pod(ns, map[string]string{"pipes.dev/inject": "true", "pipes.dev/credentials": "github:user_123, openai:user_123@org_9"})
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
		}))
		Expect(s.Env).To(Equal([]corev1.EnvVar{{Name: "PIPES_CA_DATA", Value: string(env.APICA())}}))
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
		}))

		for _, c := range p.Spec.Containers {
			Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "pipes-credentials", MountPath: "/var/run/pipes", ReadOnly: true}), c.Name)
			Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "PIPES_VEND_URL", Value: "http://127.0.0.1:8299"}), c.Name)
		}
		Expect(p.Spec.Containers[1].VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "data", MountPath: "/data"}), "existing mounts are kept")
		Expect(p.Spec.Volumes).To(HaveLen(3))
		Expect(p.Spec.Volumes[1].Name).To(Equal("pipes-credentials"))
		Expect(p.Spec.Volumes[1].EmptyDir.Medium).To(Equal(corev1.StorageMediumMemory))
		Expect(p.Spec.Volumes[1].EmptyDir.SizeLimit.String()).To(Equal("1Mi"))
		Expect(p.Spec.Volumes[2].Name).To(Equal("pipes-token"))
		token := p.Spec.Volumes[2].Projected.Sources[0].ServiceAccountToken
		Expect(token.Audience).To(Equal("pipes.dev"))
		Expect(token.Path).To(Equal("token"))
		Expect(*token.ExpirationSeconds).To(BeEquivalentTo(3600))
		Expect(p.Spec.SecurityContext.SupplementalGroups).To(Equal([]int64{65532}))
		Expect(p.Spec.ServiceAccountName).To(Equal("default"), "the projected token needs a ServiceAccount")
	})

	It("never injects twice", func(ctx SpecContext) {
		p := pod(ns, map[string]string{"pipes.dev/inject": "true", "pipes.dev/credentials": "openai:u"})
		Expect(create(ctx, p)).To(Succeed())
		again := pod(ns, p.Annotations)
		again.Spec = *p.Spec.DeepCopy() // an already-injected spec admitted again (e.g. a re-created pod)
		again.Spec.NodeName = ""
		Expect(create(ctx, again)).To(Succeed())
		Expect(again.Spec.InitContainers).To(HaveLen(1))
		Expect(again.Spec.Volumes).To(HaveLen(len(p.Spec.Volumes)))
		Expect(again.Spec.Containers[0].VolumeMounts).To(HaveLen(len(p.Spec.Containers[0].VolumeMounts)))
	})

	It("never touches the operator's own namespace", func(ctx SpecContext) {
		_ = env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: "default"}})
		p := pod(testenv.OperatorNamespace, map[string]string{"pipes.dev/inject": "true", "pipes.dev/credentials": "openai:u"})
		Expect(create(ctx, p)).To(Succeed())
		Expect(p.Spec.InitContainers).To(BeEmpty())
	})

	DescribeTable("rejects a bad annotation with a message that points at it",
		func(ctx SpecContext, annotations map[string]string, want string) {
			err := create(ctx, pod(ns, annotations))
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(want))
		},
		Entry("inject is not a boolean", map[string]string{"pipes.dev/inject": "yes", "pipes.dev/credentials": "openai:u"},
			`annotation pipes.dev/inject="yes": want "true" or "false"`),
		Entry("credentials missing", map[string]string{"pipes.dev/inject": "true"},
			"annotation pipes.dev/credentials is required"),
		Entry("entry without a user", map[string]string{"pipes.dev/inject": "true", "pipes.dev/credentials": "openai:u, github"},
			`annotation pipes.dev/credentials: entry 2 ("github") is not PROVIDER:USER_ID[@ORGANIZATION_ID]`),
		Entry("not a provider name", map[string]string{"pipes.dev/inject": "true", "pipes.dev/credentials": "Open_AI:u"},
			`"Open_AI" is not a Provider name`),
	)
})
