//go:build dev

package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/logsafe"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

// runDev starts the embedded control plane, installs CRDs and webhooks, runs the manager
// against it and writes a kubeconfig for people to use, until interrupted.
func runDev(args []string) (err error) {
	o := operator.Options{Namespace: "pipes-system"}
	zo := zap.Options{Development: true, TimeEncoder: zapcore.ISO8601TimeEncoder}
	fs := flag.NewFlagSet("manager dev", flag.ContinueOnError)
	managerFlags(fs, &o, &zo)
	dir := fs.String("dir", "bin/dev", "where to write kubeconfig and env (removed on exit)")
	if err := fs.Set("namespace", "pipes-system"); err != nil {
		return err
	}
	if err := fs.Set("metrics-bind-address", "127.0.0.1:8080"); err != nil {
		return err
	}
	if err := fs.Set("health-probe-bind-address", "127.0.0.1:8081"); err != nil {
		return err
	}
	if err := fs.Set("api-bind-address", "127.0.0.1:8443"); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := logsafe.Cap(zap.New(zap.UseFlagOptions(&zo)))
	ctrl.SetLogger(log)
	ctx := ctrl.SetupSignalHandler()

	env, err := devenv.Environment(!o.DisableWebhooks)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "starting the embedded control plane (etcd + kube-apiserver)…")
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the embedded control plane: %w", err)
	}
	defer func() {
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
		_ = os.RemoveAll(*dir)
		fmt.Fprintln(os.Stderr, "embedded control plane stopped; removed", *dir)
	}()

	c, err := client.New(cfg, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}); err != nil {
		return err
	}
	admin, err := env.AddUser(envtest.User{Name: "pipes-dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	kubeconfigPath, _ := filepath.Abs(filepath.Join(*dir, "kubeconfig"))
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	if err := devenv.InstallAPIRoles(ctx, c); err != nil {
		return err
	}
	envFile := fmt.Sprintf("export KUBECONFIG=%s\n", kubeconfigPath)
	if o.DisableWebhooks {
		o.APIAddr = "" // the backend API shares the webhooks' generated certificate
	} else {
		w := env.WebhookInstallOptions
		o.WebhookHost, o.WebhookPort, o.WebhookCertDir = w.LocalServingHost, w.LocalServingPort, w.LocalServingCertDir
	}
	if o.APIAddr != "" {
		caPath, _ := filepath.Abs(filepath.Join(*dir, "ca.crt"))
		if err := os.WriteFile(caPath, env.WebhookInstallOptions.LocalServingCAData, 0o600); err != nil {
			return err
		}
		envFile += fmt.Sprintf("export PIPES_API_URL=https://%s\nexport PIPES_API_CA=%s\n", o.APIAddr, caPath)
		o.VendAPIURL = "https://" + o.APIAddr
		o.VendCA = func() ([]byte, error) { return env.WebhookInstallOptions.LocalServingCAData, nil }
	}
	envPath := filepath.Join(*dir, "env")
	if err := os.WriteFile(envPath, []byte(envFile), 0o600); err != nil {
		return err
	}
	op, err := operator.New(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, `
pipes-operator is running on an embedded control plane (Ctrl-C stops everything).
  kubeconfig: %[1]s
  env file:   %[2]s
Try:
  source %[2]s
  kubectl get crd
  kubectl apply -f config/samples/
  kubectl get pipes -A
  or: kubectl --kubeconfig %[1]s apply -f config/samples/
Backend API: $PIPES_API_URL (CA: $PIPES_API_CA); docs/api.md shows how to get a token and call it.

`, kubeconfigPath, envPath)
	return op.Manager.Start(ctx)
}
