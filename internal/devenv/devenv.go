// Package devenv owns the embedded control plane (source-built etcd and kube-apiserver via
// envtest) that `make run` and the integration tests start, with the project's CRDs and
// webhook configurations installed from config/.
package devenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Root is the module root: the nearest directory upwards from the working directory
// that holds go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory; run from inside the pipes-operator checkout")
		}
		dir = parent
	}
}

// Assets returns the directory of etcd, kube-apiserver and kubectl: KUBEBUILDER_ASSETS
// when set, else what hack/envtest-assets.sh builds (once) and prints.
func Assets(root string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "hack", "envtest-assets.sh")) //nolint:gosec // G204: the checkout's own script
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the control-plane binaries with hack/envtest-assets.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1], nil
}

// Environment is an envtest environment with the project's CRDs and, when webhooks is
// true, its webhook configurations pointed at a local server with generated certificates.
func Environment(webhooks bool) (*envtest.Environment, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	assets, err := Assets(root)
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	if webhooks {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths:            []string{filepath.Join(root, "config", "webhook", "manifests.yaml")},
			LocalServingHost: "127.0.0.1",
		}
	}
	return env, nil
}

// InstallAPIRoles creates the ClusterRoles of config/rbac/api_roles.yaml with the name
// prefix config/default gives them (pipes-vendor, pipes-backend).
func InstallAPIRoles(ctx context.Context, c client.Client) error {
	root, err := Root()
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(root, "config", "rbac", "api_roles.yaml"))
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var role rbacv1.ClusterRole
		if err := dec.Decode(&role); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("config/rbac/api_roles.yaml: %w", err)
		}
		role.Name = "pipes-" + role.Name
		if err := c.Create(ctx, &role); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
}
