//go:build dev

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/operator"
	"github.com/pipes-dev/pipes-operator/internal/widget"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
)

// The control plane starts through this binary (devenv.Run.Wrap): in those processes,
// become etcd or kube-apiserver before anything else runs.
func init() { devenv.ExecControlPlaneChild() }

// runDev starts the embedded control plane, installs CRDs and webhooks, runs the manager
// against it and writes a kubeconfig for people to use, until stopped.
//
// Everything it starts and writes is in --dir (bin/dev) and is removed on exit, however
// it is stopped: see devSignals, and devenv.Claim and devenv.Run.Wrap for a manager
// killed outright.
func runDev(args []string) (err error) {
	o := operator.Options{Namespace: "pipes-system"}
	zo := zap.Options{Development: true, TimeEncoder: zapcore.ISO8601TimeEncoder}
	fs := flag.NewFlagSet("manager dev", flag.ContinueOnError)
	managerFlags(fs, &o, &zo)
	dir := fs.String("dir", "bin/dev", "where to write kubeconfig, env, certificates, logs and the control plane's data (removed on exit)")
	verbose := fs.Bool("v", false, "print the manager's whole log on the terminal too (it is always in DIR/manager.log); without -v only errors are printed")
	demoAddr := fs.String("demo-bind-address", "127.0.0.1:8090", "serve a page embedding the widget for a demo user there (docs/widget.md); empty disables it")
	for name, value := range map[string]string{
		"namespace":                 "pipes-system",
		"metrics-bind-address":      "127.0.0.1:8080",
		"health-probe-bind-address": "127.0.0.1:8081",
		"api-bind-address":          "127.0.0.1:8443",
		"public-bind-address":       "127.0.0.1:8082",
	} {
		if err := fs.Set(name, value); err != nil {
			return err
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *demoAddr != "" && o.PublicAddr != "" {
		// The demo page is another origin than the widget's, as an application is.
		o.WidgetAllowedOrigins = append(o.WidgetAllowedOrigins, "http://"+*demoAddr)
	} else {
		*demoAddr = ""
	}

	// Stop orderly on any signal; on a second Ctrl-C, kill the control plane at once.
	var forceMu sync.Mutex
	var run *devenv.Run
	ctx := devSignals(func() {
		forceMu.Lock()
		defer forceMu.Unlock()
		if run != nil {
			run.Kill()
			_ = run.Remove()
		}
		fmt.Fprintln(os.Stderr, "forced stop: killed the embedded control plane")
		os.Exit(1)
	})

	// Stop what a previous run killed outright left behind, and start from an empty dir.
	r, killed, err := devenv.Claim(*dir)
	for _, p := range killed {
		fmt.Fprintf(os.Stderr, "stopped %v, left running by a previous run\n", p)
	}
	if err != nil {
		return err
	}
	forceMu.Lock()
	run = r
	forceMu.Unlock()
	defer func() {
		if rmErr := run.Remove(); rmErr != nil && err == nil {
			err = rmErr
		}
		fmt.Fprintln(os.Stderr, "embedded control plane stopped; removed", *dir)
	}()
	// envtest's temporary directories (etcd's data, certificates) go into dir as well,
	// so even a manager killed outright leaves nothing outside it.
	tmp := filepath.Join(run.Dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	if err := os.Setenv("TMPDIR", tmp); err != nil {
		return err
	}

	logPath := filepath.Join(*dir, "manager.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	log := devLogger(zo, logFile, *verbose)
	ctrl.SetLogger(log)
	klog.SetLogger(log) // client-go's own messages, otherwise printed on stderr

	// The webhooks and the backend API are served with a certificate from a CA of this
	// run; PIPES_API_CA is that CA.
	caPEM, err := devenv.WriteServingCerts(run.Dir)
	if err != nil {
		return err
	}
	env, err := devenv.Environment(!o.DisableWebhooks)
	if err != nil {
		return err
	}
	if err := run.Wrap(env, env.BinaryAssetsDirectory); err != nil {
		return err
	}
	if env.ControlPlane.Etcd.Out, err = os.Create(filepath.Join(run.Dir, "etcd.log")); err != nil {
		return err
	}
	env.ControlPlane.Etcd.Err = env.ControlPlane.Etcd.Out
	apiServer := env.ControlPlane.GetAPIServer()
	if apiServer.Out, err = os.Create(filepath.Join(run.Dir, "kube-apiserver.log")); err != nil {
		return err
	}
	apiServer.Err = apiServer.Out

	if ctx.Err() != nil {
		return nil // stopped before anything started
	}
	fmt.Fprintln(os.Stderr, "starting the embedded control plane (etcd + kube-apiserver)…")
	cfg, err := env.Start()
	defer func() {
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	if err != nil {
		return fmt.Errorf("starting the embedded control plane: %w", err)
	}
	err = serve(ctx, env, cfg, o, log, caPEM, *dir, logPath, *verbose, *demoAddr)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // stopped while starting
	}
	return err
}

// serve sets the control plane up for the manager and people, runs the manager, prints
// the banner once everything serves, and returns when the manager stops.
func serve(ctx context.Context, env *envtest.Environment, cfg *rest.Config, o operator.Options, log logr.Logger, caPEM []byte, dir, logPath string, verbose bool, demoAddr string) error {
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
	kubeconfigPath, _ := filepath.Abs(filepath.Join(dir, "kubeconfig"))
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	if err := devenv.InstallAPIRoles(ctx, c); err != nil {
		return err
	}
	certDir, _ := filepath.Abs(dir)
	envFile := fmt.Sprintf("export KUBECONFIG=%s\n", kubeconfigPath)
	if o.DisableWebhooks {
		o.APIAddr = "" // the backend API is served along with the webhooks
	} else {
		w := &env.WebhookInstallOptions
		if err := devenv.TrustCA(ctx, c, w, caPEM); err != nil {
			return err
		}
		o.WebhookHost, o.WebhookPort, o.WebhookCertDir = w.LocalServingHost, w.LocalServingPort, certDir
	}
	if o.APIAddr != "" {
		o.APICertDir = certDir
		envFile += fmt.Sprintf("export PIPES_API_URL=https://%s\nexport PIPES_API_CA=%s\n", o.APIAddr, filepath.Join(certDir, devenv.CAFile))
		o.VendAPIURL = "https://" + o.APIAddr
		o.VendCA = func() ([]byte, error) { return caPEM, nil }
	}
	envPath := filepath.Join(dir, "env")
	if err := os.WriteFile(envPath, []byte(envFile), 0o600); err != nil {
		return err
	}
	op, err := operator.New(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- op.Manager.Start(ctx) }()
	if err := waitServing(ctx, op, o, caPEM, done); err != nil {
		return err
	}

	logs := logPath + " (make run RUN_ARGS=-v prints it here too; here: errors only)"
	if verbose {
		logs = logPath + " (and here)"
	}
	api := "Backend API: $PIPES_API_URL (CA: $PIPES_API_CA, the dev CA that issued its certificate); docs/api.md shows how to get a token and call it.\n"
	if o.APIAddr == "" {
		api = ""
	}
	if op.API != nil && op.API.OAuth != nil {
		api += fmt.Sprintf("OAuth callback: %s (register it as your OAuth apps' redirect URI; docs/oauth.md)\n", op.API.OAuth.CallbackURL())
	}
	if demoAddr != "" && op.Public != nil {
		demo, err := serveDemo(ctx, op, demoAddr)
		if err != nil {
			return err
		}
		api += demo
	}
	fmt.Printf(`
pipes-operator is running on an embedded control plane (Ctrl-C stops everything).
  kubeconfig: %[1]s
  env file:   %[2]s
  log:        %[3]s
Try:
  source %[2]s
  kubectl get crd
  kubectl apply -f config/samples/
  kubectl get pipes -A
  or: kubectl --kubeconfig %[1]s apply -f config/samples/
%[4]s
`, kubeconfigPath, envPath, logs, api)
	return <-done
}

// waitServing returns once the manager has started everything: caches synced and
// controllers started, and the webhook server and backend API answering TLS handshakes
// with the dev CA's certificate.
func waitServing(ctx context.Context, op *operator.Operator, o operator.Options, caPEM []byte, done <-chan error) error {
	select {
	case <-op.Manager.Elected():
	case err := <-done:
		return managerStopped(err)
	case <-ctx.Done():
		return ctx.Err()
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	for {
		serving := true
		if !o.DisableWebhooks {
			serving = handshake(net.JoinHostPort(o.WebhookHost, strconv.Itoa(o.WebhookPort)), roots) == nil
		}
		if serving && op.API != nil {
			serving = op.API.Addr() != "" && handshake(op.API.Addr(), roots) == nil
		}
		if serving && op.Public != nil {
			serving = op.Public.Addr() != ""
		}
		if serving {
			return nil
		}
		select {
		case err := <-done:
			return managerStopped(err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func managerStopped(err error) error {
	if err == nil {
		return errors.New("the manager stopped while starting")
	}
	return err
}

func handshake(addr string, roots *x509.CertPool) error {
	d := &net.Dialer{Timeout: time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		return err
	}
	return conn.Close()
}

// serveDemo serves the widget demo page (widget.Demo) on addr until ctx ends, minting a
// token per page load for ?user= (default demo_user) in ?organization= (default
// org_demo) of ?namespace= (default: default, where config/samples go), and returns the
// banner's lines about it.
func serveDemo(ctx context.Context, op *operator.Operator, addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("widget demo page (--demo-bind-address): %w", err)
	}
	demo := &widget.Demo{
		ScriptURL: "http://" + op.Public.Addr() + op.Public.Assets.ScriptPath(),
		Mint: func(r *http.Request, admin bool) (string, error) {
			q := r.URL.Query()
			c := widgettoken.Claims{Namespace: orDefault(q.Get("namespace"), "default"), UserID: orDefault(q.Get("user"), "demo_user"),
				OrganizationID: orDefault(q.Get("organization"), "org_demo")}
			if admin {
				c.Scopes = []string{widgettoken.ScopeManage}
			}
			tok, _, err := op.Widgets.Issue(c)
			return tok, err
		},
	}
	srv := &http.Server{Handler: demo, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return fmt.Sprintf(`Widget demo: http://%[1]s/ (user demo_user in organization org_demo of namespace default; /admin is
  their organization's admin; ?user=, ?organization=, ?namespace= choose others). Apply config/samples/, paste
  a key there, then vend it as the application's backend does (docs/widget.md):
  kubectl create serviceaccount backend; kubectl create rolebinding backend --clusterrole=pipes-backend --serviceaccount=default:backend
  curl --cacert $PIPES_API_CA -H "Authorization: Bearer $(kubectl create token backend --audience pipes.dev)" \
    $PIPES_API_URL/namespaces/default/data-integrations/openai/credentials -d '{"user_id":"demo_user","organization_id":"org_demo"}'
`, ln.Addr().String()), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
