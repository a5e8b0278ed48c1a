package webhook

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pipes-dev/pipes-operator/internal/vendspec"
)

// Pod annotations that opt a pod into injection.
const (
	AnnotationInject      = "pipes.dev/inject"
	AnnotationCredentials = "pipes.dev/credentials"
	// AnnotationInjected records that the sidecar was added (and its image).
	AnnotationInjected = "pipes.dev/injected"
)

// Names and paths of what injection adds to a pod.
const (
	SidecarName       = "pipes-vend"
	CredentialsVolume = "pipes-credentials"
	TokenVolume       = "pipes-token"
	CredentialsDir    = "/var/run/pipes"
	TokenDir          = "/var/run/secrets/pipes.dev/serviceaccount"
	SidecarListen     = "127.0.0.1:8299"
	// SidecarUID is the sidecar's user and group; credential files are readable by the
	// group, which is added to the pod's supplemental groups so app containers can read them.
	SidecarUID = 65532
	// TokenAudience is the projected token's audience (the backend API accepts it).
	TokenAudience = "pipes.dev"
)

// +kubebuilder:webhook:path=/mutate--v1-pod,mutating=true,failurePolicy=ignore,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=mpod.pipes.dev,admissionReviewVersions=v1,reinvocationPolicy=Never

// PodInjector adds the vend sidecar to pods annotated pipes.dev/inject: "true".
type PodInjector struct {
	// Image of the vend sidecar.
	Image string
	// APIURL is the backend API as pods reach it.
	APIURL string
	// CA returns the PEM bundle pods must trust for the backend API.
	CA func() ([]byte, error)
	// SkipNamespaces are never injected (the operator's own, kube-system).
	SkipNamespaces []string
}

var _ admission.Defaulter[*corev1.Pod] = &PodInjector{}

// Default implements admission.Defaulter: it injects, leaves the pod alone, or rejects a
// bad annotation with a message that points at it.
func (p *PodInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	inject, ok := pod.Annotations[AnnotationInject]
	if !ok || inject == "false" {
		return nil
	}
	if inject != "true" {
		return fmt.Errorf("annotation %s=%q: want \"true\" or \"false\"", AnnotationInject, inject)
	}
	namespace := pod.Namespace
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		namespace = req.Namespace
	}
	if slices.Contains(p.SkipNamespaces, namespace) {
		return nil
	}
	if hasContainer(pod, SidecarName) {
		return nil // already injected: admission may run twice
	}
	raw, ok := pod.Annotations[AnnotationCredentials]
	if !ok {
		return fmt.Errorf("annotation %s is required with %s=\"true\": list the credentials as PROVIDER:USER_ID[@ORGANIZATION_ID], comma-separated, e.g. \"openai:user_123@org_9\"", AnnotationCredentials, AnnotationInject)
	}
	if _, err := vendspec.Parse(raw); err != nil {
		return fmt.Errorf("annotation %s: %w", AnnotationCredentials, err)
	}
	ca, err := p.CA()
	if err != nil {
		return fmt.Errorf("injecting the pipes.dev vend sidecar: reading the backend API's CA bundle: %w", err)
	}
	p.inject(pod, raw, ca)
	return nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name == name {
			return true
		}
	}
	return false
}

func (p *PodInjector) inject(pod *corev1.Pod, credentials string, ca []byte) {
	probe := &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/vend", "probe", "--listen=" + SidecarListen, "--path=/readyz"}}},
		PeriodSeconds: 2, TimeoutSeconds: 2, FailureThreshold: 3,
	}
	startup := probe.DeepCopy()
	startup.PeriodSeconds, startup.FailureThreshold = 1, 60 // app containers start once credentials are fetched
	sidecar := corev1.Container{
		Name:            SidecarName,
		Image:           p.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		RestartPolicy:   ptr.To(corev1.ContainerRestartPolicyAlways), // a native sidecar: starts first, works in Jobs
		Args: []string{
			"--api-url=" + p.APIURL,
			"--token-file=" + TokenDir + "/token",
			"--credentials=" + credentials,
			"--listen=" + SidecarListen,
			"--dir=" + CredentialsDir,
			"--file-gid=" + strconv.Itoa(SidecarUID),
		},
		Env: []corev1.EnvVar{{Name: "PIPES_CA_DATA", Value: string(ca)}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("48Mi")},
		},
		StartupProbe:   startup,
		ReadinessProbe: probe,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](SidecarUID),
			RunAsGroup:               ptr.To[int64](SidecarUID),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: CredentialsVolume, MountPath: CredentialsDir},
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
		},
	}
	pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: CredentialsVolume, MountPath: CredentialsDir, ReadOnly: true})
		c.Env = append(c.Env, corev1.EnvVar{Name: "PIPES_VEND_URL", Value: "http://" + SidecarListen})
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: CredentialsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi")),
		}}},
		corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: TokenAudience, ExpirationSeconds: ptr.To[int64](3600), Path: "token",
			}}},
		}}},
	)
	if pod.Spec.ServiceAccountName == "" {
		// The ServiceAccount admission plugin normally runs first and sets this; the
		// projected token needs it either way.
		pod.Spec.ServiceAccountName = "default"
	}
	if pod.Spec.SecurityContext == nil {
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if !slices.Contains(pod.Spec.SecurityContext.SupplementalGroups, SidecarUID) {
		pod.Spec.SecurityContext.SupplementalGroups = append(pod.Spec.SecurityContext.SupplementalGroups, SidecarUID)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationInjected] = p.Image
}
