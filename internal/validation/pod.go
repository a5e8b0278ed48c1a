package validation

import (
	"fmt"
	"strconv"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// The rules for pods that ask for the vend sidecar (label pipes.dev/inject). Each returns
// the whole sentence the pod's author sees when admission refuses the pod.

// InjectLabel checks the value of the pipes.dev/inject label.
func InjectLabel(value string) error {
	if value == "true" || value == "false" {
		return nil
	}
	return fmt.Errorf("label %s=%q: want \"true\" or \"false\"", pipesv1.LabelInject, value)
}

// InjectHostNetwork refuses the sidecar to a host-network pod: it serves credentials on
// listen, which in the node's network namespace every host-network pod could read.
func InjectHostNetwork(hostNetwork bool, listen string) error {
	if !hostNetwork {
		return nil
	}
	return fmt.Errorf("spec.hostNetwork is true: the pipes.dev vend sidecar serves credentials on %s, "+
		"which in a host-network pod is the node's loopback, readable by every host-network pod on the node; "+
		"run the pod without hostNetwork, or have it read credentials through the backend API with its own ServiceAccount token", listen)
}

// CredentialsAnnotationRequired is the rule that an injected pod lists its credentials.
func CredentialsAnnotationRequired() error {
	return fmt.Errorf("annotation %s is required with label %s=\"true\": list the credentials as PROVIDER:USER_ID[@ORGANIZATION_ID], comma-separated, e.g. \"openai:user_123@org_9\"",
		pipesv1.AnnotationCredentials, pipesv1.LabelInject)
}

// VendMetricsPort parses the pipes.dev/vend-metrics-port annotation: a port number other
// than reserved (the credentials port) that no container of the pod uses (usedBy names
// the container using a port, or "").
func VendMetricsPort(raw string, reserved int, usedBy func(port int32) string) (int32, error) {
	port, err := strconv.ParseInt(raw, 10, 32)
	if err != nil || port < 1 || port > 65535 || int(port) == reserved {
		return 0, fmt.Errorf("annotation %s=%q: want a port number (1-65535) other than %d, which serves credentials on loopback", pipesv1.AnnotationVendMetricsPort, raw, reserved)
	}
	if c := usedBy(int32(port)); c != "" {
		return 0, fmt.Errorf("annotation %s=%q: container %q already uses port %d; choose a free one for the sidecar's metrics", pipesv1.AnnotationVendMetricsPort, raw, c, port)
	}
	return int32(port), nil
}

// APIKeyForOAuthProvider is the backend API's rule that OAuth providers take no API key.
func APIKeyForOAuthProvider(slug string) string {
	return fmt.Sprintf("data integration %q uses OAuth: its users connect through the OAuth flow, not with an API key", slug)
}

// TokenForAPIKeyProvider is the backend API's rule that API-key providers have no access token.
func TokenForAPIKeyProvider(slug string) string {
	return fmt.Sprintf("data integration %q uses API keys, which have no access token: use POST /data-integrations/%s/credentials", slug, slug)
}
