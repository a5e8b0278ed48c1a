// Package testenv starts what the integration suites test against: the embedded control
// plane (source-built etcd and kube-apiserver) with the project's CRDs and real TLS
// webhooks, and the operator's manager built exactly as in production, with its log
// captured so suites can search it for plaintext.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

// OperatorNamespace is where the suites' operator keeps its keyset.
const OperatorNamespace = "pipes-system"

// VendImage is the sidecar image the suites' pod injector uses.
const VendImage = "pipes.local/vend:test"

// Env is a running control plane and (unless disabled) manager.
type Env struct {
	Env      *envtest.Environment
	Config   *rest.Config
	Client   client.Client // uncached, admin
	Operator *operator.Operator
	Log      *SyncBuffer // everything the manager logged, at every level

	cancel      context.CancelFunc
	done        chan error
	certDir     string
	metricsAddr string
	opts        operator.Options
	log         logr.Logger
	replicas    []*replica
	// restarted are the control-plane processes StopControlPlane's start started again.
	restarted       map[string]*exec.Cmd
	restartedExited []chan struct{}
}

type replica struct {
	cancel  context.CancelFunc
	done    chan error
	certDir string
}

// Options say what to start.
type Options struct {
	// Webhooks installs the webhook configurations and serves them from the manager.
	Webhooks bool
	// NoManager starts only the control plane (CEL-only tests).
	NoManager bool
	// LogTo also receives the manager's log (e.g. GinkgoWriter).
	LogTo io.Writer
	// API serves the backend API on a free loopback port (needs Webhooks, for its certificate).
	API bool
	// APIRateLimit overrides the API's per-caller rate limit.
	APIRateLimit float64
	// CertRotation serves the webhooks (and API) as in a cluster: cert-controller issues
	// the certificate into CertSecret, the manager writes it into an empty directory and
	// injects its CA into the webhook configurations. The control plane cannot call
	// webhooks served so (the certificate names the Service, not 127.0.0.1): for tests of
	// the certificate's life, not of admission.
	CertRotation bool
	// LeaderElection runs the manager with leader election, as deployed (see StartReplica).
	LeaderElection bool
	// Keyset, when set, is a keyset (keyset.json) restored into the keyset Secret before
	// the manager starts, as an administrator restores a backup into a new cluster.
	Keyset []byte
	// Metrics serves the manager's /metrics on a free loopback port (see MetricsURL), as
	// --metrics-bind-address does in a cluster.
	Metrics bool
	// Public serves the public listener (widget script and API) on a free loopback port
	// (see PublicURL), allowing pages of WidgetAllowedOrigins; it needs API.
	Public               bool
	WidgetAllowedOrigins []string
	// WidgetTokenTTL and WidgetKeyRotation override the widget sessions' defaults.
	WidgetTokenTTL    time.Duration
	WidgetKeyRotation time.Duration
}

// CertSecret is the Secret cert-controller keeps the certificate in with Options.CertRotation.
const CertSecret = "pipes-webhook-cert"

// Start starts the control plane and the manager and waits until the manager's caches
// (and webhook server) are ready.
func Start(o Options) (*Env, error) {
	env, err := devenv.Environment(o.Webhooks)
	if err != nil {
		return nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	e := &Env{Env: env, Config: cfg, Log: &SyncBuffer{}}
	if e.Client, err = client.New(cfg, client.Options{Scheme: operator.Scheme()}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: OperatorNamespace}}); err != nil {
		return nil, err
	}
	if err := devenv.InstallAPIRoles(ctx, e.Client); err != nil {
		return nil, err
	}
	if o.Keyset != nil {
		restored := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: OperatorNamespace, Name: "pipes-keyset"},
			Data:       map[string][]byte{keyring.SecretKey: o.Keyset},
		}
		if err := e.Client.Create(ctx, restored); err != nil {
			return nil, err
		}
	}
	if o.NoManager {
		return e, nil
	}
	var out io.Writer = e.Log
	if o.LogTo != nil {
		out = io.MultiWriter(e.Log, o.LogTo)
	}
	log := zap.New(zap.WriteTo(out), zap.UseDevMode(true), zap.Level(zapcore.Level(-10)))
	// As cmd/manager does: controller-runtime's own loggers (the caches' informers) write
	// to the manager's log instead of warning on stderr that none was set.
	ctrllog.SetLogger(log)
	opts := operator.Options{
		Namespace: OperatorNamespace, MetricsAddr: "0", ProbeAddr: "0",
		DisableWebhooks: !o.Webhooks, SkipNameValidation: true,
	}
	if o.Webhooks {
		w := env.WebhookInstallOptions
		opts.WebhookHost, opts.WebhookPort, opts.WebhookCertDir = w.LocalServingHost, w.LocalServingPort, w.LocalServingCertDir
	}
	if o.API {
		opts.APIAddr, opts.APIRateLimit = "127.0.0.1:0", o.APIRateLimit
	}
	if o.Public {
		opts.PublicAddr, opts.WidgetAllowedOrigins = "127.0.0.1:0", o.WidgetAllowedOrigins
		opts.WidgetTokenTTL, opts.WidgetKeyRotation = o.WidgetTokenTTL, o.WidgetKeyRotation
	}
	if o.Metrics {
		// controller-runtime does not say which port ":0" got: take a free one first.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		e.metricsAddr = l.Addr().String()
		_ = l.Close()
		opts.MetricsAddr = e.metricsAddr
	}
	if o.Webhooks {
		opts.VendImage, opts.VendAPIURL = VendImage, "https://pipes-api.pipes-system.svc"
		opts.VendCA = func() ([]byte, error) { return env.WebhookInstallOptions.LocalServingCAData, nil }
	}
	if o.CertRotation {
		if e.certDir, err = os.MkdirTemp("", "pipes-certs-"); err != nil {
			return nil, err
		}
		opts.WebhookCertDir, opts.VendCA = e.certDir, nil
		opts.CertRotation = &operator.CertRotation{
			SecretName: CertSecret, ServiceName: "pipes-webhook-service", ExtraServiceNames: []string{"pipes-api"},
			WebhookConfigName: "validating-webhook-configuration", MutatingConfigName: "mutating-webhook-configuration",
		}
		// Shipped empty by config/webhook: cert-controller fills it but does not create it.
		if err := e.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: OperatorNamespace, Name: CertSecret}}); err != nil {
			return nil, err
		}
	}
	opts.LeaderElection, opts.LeaderElectionID = o.LeaderElection, "pipes-operator.pipes.dev"
	e.opts, e.log = opts, log
	if e.Operator, err = operator.New(ctx, cfg, opts, log); err != nil {
		return nil, err
	}
	e.done = make(chan error, 1)
	go func() { e.done <- e.Operator.Manager.Start(ctx) }()
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	defer syncCancel()
	if !e.Operator.Manager.GetCache().WaitForCacheSync(syncCtx) {
		return nil, fmt.Errorf("manager cache did not sync")
	}
	if o.Webhooks {
		checker := e.Operator.Manager.GetWebhookServer().StartedChecker()
		for checker(nil) != nil {
			select {
			case <-syncCtx.Done():
				return nil, fmt.Errorf("webhook server did not start")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	for (o.API && e.Operator.API.Addr() == "") || (o.Public && e.Operator.Public.Addr() == "") {
		select {
		case <-syncCtx.Done():
			return nil, fmt.Errorf("backend API or public listener did not start")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return e, nil
}

// StartReplica starts a second manager against the control plane, as a Deployment's
// second replica: built with the same options (start the first with LeaderElection, so
// that this one waits for the lease), but serving webhooks on its own port from its own
// cert dir (with CertRotation). It returns once the manager runs, with the webhook
// server's address and that dir; Stop stops it.
func (e *Env) StartReplica() (webhookAddr, certDir string, err error) {
	opts, _, err := e.startReplica(false)
	if err != nil {
		return "", "", err
	}
	return net.JoinHostPort(opts.WebhookHost, strconv.Itoa(opts.WebhookPort)), opts.WebhookCertDir, nil
}

// StartAPIReplica starts a second manager as StartReplica does, also serving the backend
// API on a loopback port of its own, and returns it once that API serves: the replica
// that is not the leader, for tests of what every replica must do.
func (e *Env) StartAPIReplica() (*operator.Operator, error) {
	_, op, err := e.startReplica(true)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for op.API.Addr() == "" || (op.Public != nil && op.Public.Addr() == "") {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the replica's backend API did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return op, nil
}

func (e *Env) startReplica(api bool) (operator.Options, *operator.Operator, error) {
	opts := e.opts
	opts.MetricsAddr = "0" // the port is the first manager's
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return opts, nil, err
	}
	opts.WebhookPort = l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	if !api {
		opts.APIAddr, opts.PublicAddr = "", ""
	}
	if opts.PublicAddr != "" && opts.PublicURL == "" {
		// One URL for every replica, as an Ingress gives them: the first one's listener.
		opts.PublicURL = e.PublicURL()
	}
	if opts.CertRotation != nil {
		if opts.WebhookCertDir, err = os.MkdirTemp("", "pipes-certs-"); err != nil {
			return opts, nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	op, err := operator.New(ctx, e.Config, opts, e.log.WithName("replica"))
	if err != nil {
		cancel()
		return opts, nil, err
	}
	r := &replica{cancel: cancel, done: make(chan error, 1), certDir: opts.WebhookCertDir}
	go func() { r.done <- op.Manager.Start(ctx) }()
	e.replicas = append(e.replicas, r)
	return opts, op, nil
}

// MetricsURL is the manager's metrics endpoint with Options.Metrics ("" without).
func (e *Env) MetricsURL() string {
	if e.metricsAddr == "" {
		return ""
	}
	return "http://" + e.metricsAddr + "/metrics"
}

// CertDir is the directory the manager writes its certificate into with Options.CertRotation.
func (e *Env) CertDir() string { return e.certDir }

// APIURL is the backend API's base URL.
func (e *Env) APIURL() string { return "https://" + e.Operator.API.Addr() }

// PublicURL is the public listener's base URL (plain HTTP on loopback), with Options.Public.
func (e *Env) PublicURL() string { return "http://" + e.Operator.Public.Addr() }

// APICA is the PEM CA bundle the backend API's certificate chains to.
func (e *Env) APICA() []byte { return e.Env.WebhookInstallOptions.LocalServingCAData }

// Stop stops the manager (and replicas), then the control plane, and returns the first
// error any of them ended with.
func (e *Env) Stop() error {
	var errs []error
	if e.cancel != nil {
		e.cancel()
	}
	if e.done != nil {
		errs = append(errs, <-e.done)
	}
	for _, r := range e.replicas {
		r.cancel()
		errs = append(errs, <-r.done)
		_ = os.RemoveAll(r.certDir)
	}
	if e.certDir != "" {
		_ = os.RemoveAll(e.certDir)
	}
	errs = append(errs, e.stopRestarted(), e.Env.Stop())
	return errors.Join(errs...)
}

// EtcdDataDir is the directory holding etcd's database files.
func (e *Env) EtcdDataDir() string { return e.Env.ControlPlane.Etcd.DataDir }

// SyncBuffer is a bytes.Buffer safe for concurrent writers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of everything written.
func (b *SyncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
