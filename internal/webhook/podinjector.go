package webhook

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/vendspec"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Names and paths of what injection adds to a pod.
const (
	SidecarName       = "pipes-vend"
	CredentialsVolume = "pipes-credentials"
	TokenVolume       = "pipes-token"
	CredentialsDir    = "/var/run/pipes"
	TokenDir          = "/var/run/secrets/pipes.dev/serviceaccount"
	// CAVolume mounts the namespace's CA bundle ConfigMap (pipesv1.CABundleConfigMap)
	// into the sidecar at CADir; the kubelet updates the file when the operator updates
	// the ConfigMap, and the sidecar reloads it.
	CAVolume      = "pipes-ca"
	CADir         = "/var/run/secrets/pipes.dev/ca"
	SidecarListen = "127.0.0.1:8299"
	// SidecarMetricsPortName names the sidecar's metrics port when the pod asks for one
	// (pipesv1.AnnotationVendMetricsPort); config/prometheus's PodMonitor scrapes it.
	SidecarMetricsPortName = "vend-metrics"
	// SidecarUID is the sidecar's user and group; credential files are readable by the
	// group, which is added to the pod's supplemental groups so app containers can read them.
	SidecarUID = 65532
	// TokenAudience is the projected token's audience (the backend API accepts it).
	TokenAudience = wire.Audience
)

// failurePolicy is Fail: config/webhook gives this webhook an objectSelector on the
// pipes.dev/inject label, so only pods that opt in depend on it, and those are better
// rejected (their ReplicaSet retries) than started without their sidecar.
// sideEffects is NoneOnDryRun: admission creates the namespace's CA bundle ConfigMap,
// except on a dry run.
// +kubebuilder:webhook:path=/mutate--v1-pod,mutating=true,failurePolicy=fail,sideEffects=NoneOnDryRun,timeoutSeconds=5,groups="",resources=pods,verbs=create,versions=v1,name=mpod.pipes.dev,admissionReviewVersions=v1,reinvocationPolicy=Never

// PodInjector adds the vend sidecar to pods labelled pipes.dev/inject: "true".
type PodInjector struct {
	// Image of the vend sidecar.
	Image string
	// APIURL is the backend API as pods reach it.
	APIURL string
	// CA returns the PEM bundle pods must trust for the backend API. Admission writes it
	// into the namespace's CA bundle ConfigMap when that does not exist yet;
	// controllers.CABundleReconciler keeps it current afterwards.
	CA func() ([]byte, error)
	// Client reads CA bundle ConfigMaps (from the manager's cache, which holds only the
	// labelled ones) and creates them; APIReader reads one the cache cannot see.
	Client    client.Client
	APIReader client.Reader
	// SkipNamespaces are never injected (the operator's own, kube-system).
	SkipNamespaces []string
}

var _ admission.Defaulter[*corev1.Pod] = &PodInjector{}

// Default implements admission.Defaulter: it injects, leaves the pod alone, or rejects a
// bad label or annotation with a message that points at it.
func (p *PodInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	inject, ok := pod.Labels[pipesv1.LabelInject]
	if !ok || inject == "false" {
		return nil
	}
	if err := validation.InjectLabel(inject); err != nil {
		return err
	}
	namespace := pod.Namespace
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		namespace = req.Namespace
	}
	if slices.Contains(p.SkipNamespaces, namespace) {
		return nil
	}
	if err := validation.InjectHostNetwork(pod.Spec.HostNetwork, SidecarListen); err != nil {
		return err
	}
	if hasContainer(pod, SidecarName) {
		return nil // already injected: admission may run twice
	}
	raw, ok := pod.Annotations[pipesv1.AnnotationCredentials]
	if !ok {
		return validation.CredentialsAnnotationRequired()
	}
	if _, err := vendspec.Parse(raw); err != nil {
		return fmt.Errorf("annotation %s: %w", pipesv1.AnnotationCredentials, err)
	}
	metricsPort, err := vendMetricsPort(pod)
	if err != nil {
		return err
	}
	dryRun := false
	if req, err := admission.RequestFromContext(ctx); err == nil && req.DryRun != nil {
		dryRun = *req.DryRun
	}
	if !dryRun {
		if err := p.ensureCABundle(ctx, namespace); err != nil {
			return fmt.Errorf("injecting the pipes.dev vend sidecar: %w", err)
		}
	}
	p.inject(pod, raw, metricsPort)
	return nil
}

// vendMetricsPort reads the pipes.dev/vend-metrics-port annotation: 0 when absent.
func vendMetricsPort(pod *corev1.Pod) (int32, error) {
	raw, ok := pod.Annotations[pipesv1.AnnotationVendMetricsPort]
	if !ok {
		return 0, nil
	}
	reserved, _ := strconv.Atoi(sidecarListenPort)
	return validation.VendMetricsPort(raw, reserved, func(port int32) string {
		for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
			for _, cp := range c.Ports {
				if cp.ContainerPort == port {
					return c.Name
				}
			}
		}
		return ""
	})
}

var _, sidecarListenPort, _ = net.SplitHostPort(SidecarListen)

// ensureCABundle creates the namespace's CA bundle ConfigMap if it does not exist. An
// existing one is left to CABundleReconciler, unless the operator does not manage it:
// the sidecar would trust whatever CA it holds.
func (p *PodInjector) ensureCABundle(ctx context.Context, namespace string) error {
	key := client.ObjectKey{Namespace: namespace, Name: pipesv1.CABundleConfigMap}
	var cm corev1.ConfigMap
	err := p.Client.Get(ctx, key, &cm)
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading ConfigMap %q in namespace %q: %w", key.Name, namespace, err)
	}
	ca, err := p.CA()
	if err != nil {
		return fmt.Errorf("reading the backend API's CA bundle: %w", err)
	}
	cm = corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: key.Name, Labels: map[string]string{pipesv1.LabelManagedBy: pipesv1.ManagedByValue}},
		Data:       map[string]string{pipesv1.CABundleKey: string(ca)},
	}
	err = p.Client.Create(ctx, &cm)
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ConfigMap %q in namespace %q for the backend API's CA bundle: %w", key.Name, namespace, err)
	}
	// Created meanwhile (the cache lags), or not ours (the cache holds only labelled ones).
	if err := p.APIReader.Get(ctx, key, &cm); err != nil {
		return fmt.Errorf("reading ConfigMap %q in namespace %q: %w", key.Name, namespace, err)
	}
	if cm.Labels[pipesv1.LabelManagedBy] != pipesv1.ManagedByValue {
		return fmt.Errorf("ConfigMap %q in namespace %q exists but is not managed by pipes-operator (label %s=%s): "+
			"the sidecar would trust the CA in it for the backend API; delete it, and the operator creates it with the right CA",
			key.Name, namespace, pipesv1.LabelManagedBy, pipesv1.ManagedByValue)
	}
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

func (p *PodInjector) inject(pod *corev1.Pod, credentials string, metricsPort int32) {
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
			"--ca-file=" + CADir + "/" + pipesv1.CABundleKey,
		},
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
			{Name: CAVolume, MountPath: CADir, ReadOnly: true},
		},
	}
	if metricsPort > 0 {
		// All interfaces, so Prometheus reaches it on the pod IP; the sidecar serves only
		// /metrics there (no labels, nothing about users or values).
		sidecar.Args = append(sidecar.Args, fmt.Sprintf("--metrics-listen=:%d", metricsPort))
		sidecar.Ports = []corev1.ContainerPort{{Name: SidecarMetricsPortName, ContainerPort: metricsPort, Protocol: corev1.ProtocolTCP}}
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
		corev1.Volume{Name: CAVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: pipesv1.CABundleConfigMap},
			Items:                []corev1.KeyToPath{{Key: pipesv1.CABundleKey, Path: pipesv1.CABundleKey}},
			DefaultMode:          ptr.To[int32](0o444), // public; readable by the sidecar's uid
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
	pod.Annotations[pipesv1.AnnotationInjected] = p.Image
}
