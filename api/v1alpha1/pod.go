package v1alpha1

// Labels, annotations and objects of pod injection (the vend sidecar).
const (
	// LabelInject opts a pod into injection ("true"). It is a label, not an annotation,
	// so that the mutating webhook's objectSelector sends only these pods to the
	// operator: no other pod creation in the cluster depends on it.
	LabelInject = "pipes.dev/inject"
	// AnnotationCredentials lists the credentials an injected pod vends:
	// PROVIDER:USER_ID[@ORGANIZATION_ID], comma-separated.
	AnnotationCredentials = "pipes.dev/credentials"
	// AnnotationInjected records that the sidecar was added (and its image).
	AnnotationInjected = "pipes.dev/injected"
	// AnnotationVendMetricsPort, on an injected pod, has the sidecar serve its /metrics
	// (and nothing else) on this port of the pod's IP, for a PodMonitor to scrape. Without
	// it the sidecar's metrics are on loopback only, beside the credentials.
	AnnotationVendMetricsPort = "pipes.dev/vend-metrics-port"

	// CABundleConfigMap is the ConfigMap, in each namespace with injected pods, that
	// holds the CA bundle the sidecars trust for the backend API. The operator creates
	// it (labelled LabelManagedBy) and keeps it equal to the current CA, and the kubelet
	// updates the mounted file, so sidecars follow a CA rotation without a restart.
	CABundleConfigMap = "pipes-api-ca"
	// CABundleKey is CABundleConfigMap's data key (a PEM bundle).
	CABundleKey = "ca.crt"
)
