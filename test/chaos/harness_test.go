package chaos

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

const (
	namespace = "chaos"
	provider  = "openai"
	// keyPrefix starts every key the suite stores, so the logs can be searched for any of
	// them at once.
	keyPrefix = "sk-chaos-"
	// leaseName is the manager's leader-election Lease (in testenv.OperatorNamespace).
	leaseName = "pipes-operator.pipes.dev"
)

// harness is the control plane, the two manager processes, and the suite's clients.
type harness struct {
	t        *testing.T
	env      *testenv.Env
	dir      string
	binary   string // the manager
	vend     string // the sidecar
	kubecfg  string
	salt     string
	managers [2]*manager
	proxy    *webhookProxy
	// backend is a backend API client per manager (slot), as the application's backend.
	backend [2]*apiclient.Client
	caFile  string
	tracker *tracker
}

func startHarness(ctx context.Context, t *testing.T) *harness {
	t.Helper()
	env, err := testenv.Start(testenv.Options{Webhooks: true, NoManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping the control plane: %v", err)
		}
	})
	h := &harness{t: t, env: env, dir: t.TempDir(), salt: randomHex(4), tracker: newTracker()}
	h.tracker.salt = h.salt
	if *flagReport != "" {
		// Kept beside the report: every process's log.
		h.dir = filepath.Join(filepath.Dir(*flagReport), "chaos-run")
		must(t, os.RemoveAll(h.dir))
		must(t, os.MkdirAll(h.dir, 0o750))
	}
	h.binary, h.vend = filepath.Join(h.dir, "manager"), filepath.Join(h.dir, "vend")
	must(t, testenv.BuildBinary(ctx, "./cmd/manager", h.binary))
	must(t, testenv.BuildBinary(ctx, "./cmd/vend", h.vend))
	must(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}))

	// The managers authenticate as their ServiceAccount with config/default's RBAC, as
	// test/scale's does.
	kc, err := env.ManagerKubeconfig(ctx, 2*time.Hour)
	must(t, err)
	h.kubecfg = filepath.Join(h.dir, "kubeconfig")
	must(t, os.WriteFile(h.kubecfg, kc, 0o600))
	h.caFile = filepath.Join(h.dir, "api-ca.crt")
	must(t, os.WriteFile(h.caFile, env.APICA(), 0o600))

	// The control plane calls the webhooks at one address: a Service in front of both
	// replicas, as kube-proxy gives one in a cluster.
	for slot := range h.managers {
		h.managers[slot] = h.newManager(t, slot)
	}
	w := env.Env.WebhookInstallOptions
	h.proxy, err = newWebhookProxy(net.JoinHostPort(w.LocalServingHost, strconv.Itoa(w.LocalServingPort)),
		h.managers[0].webhook, h.managers[1].webhook)
	must(t, err)
	t.Cleanup(h.proxy.close)
	t.Cleanup(h.stopManagers)
	for _, m := range h.managers {
		h.startManager(ctx, t, m)
	}

	token, err := env.ServiceAccountToken(ctx, namespace, "backend", "pipes-backend", namespace, "pipes.dev")
	must(t, err)
	for slot, m := range h.managers {
		hc, err := apiclient.HTTPClientWithCAData(env.APICA(), 30*time.Second)
		must(t, err)
		h.backend[slot] = apiclient.New("https://"+m.api, apiclient.WithHTTPClient(hc), apiclient.WithToken(token), apiclient.WithNamespace(namespace))
	}
	must(t, env.Client.Create(ctx, &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: provider},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, Description: "chaos suite"},
	}))

	// Every account's status, as the leader reports it, through an informer (which
	// re-establishes its watch across the control plane's restarts).
	informers, err := cache.New(env.Config, cache.Options{Scheme: env.Client.Scheme(), DefaultNamespaces: map[string]cache.Config{namespace: {}}})
	must(t, err)
	inf, err := informers.GetInformer(ctx, &pipesv1.ConnectedAccount{})
	must(t, err)
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    h.tracker.observe,
		UpdateFunc: func(_, obj any) { h.tracker.observe(obj) },
	})
	must(t, err)
	informerCtx, stopInformers := context.WithCancel(ctx)
	t.Cleanup(stopInformers)
	go func() { _ = informers.Start(informerCtx) }()
	if !informers.WaitForCacheSync(ctx) {
		t.Fatal("informer did not sync")
	}
	return h
}

// bigCluster adds what issue #15's scenario 8 adds before the run: 300 unrelated 1 MiB
// Secrets and 1,000 namespaces.
func (h *harness) bigCluster(ctx context.Context, t *testing.T) BigCluster {
	start := time.Now()
	must(t, testenv.AddUnrelated(ctx, h.env.Client, 300, 1000))
	return BigCluster{Secrets: 300, Namespaces: 1000, Seconds: time.Since(start).Seconds()}
}

// manager is one replica's slot: its ports stay the same across restarts, as a pod's
// Service endpoints do.
type manager struct {
	slot                         int
	metrics, probe, api, webhook string
	mu                           sync.Mutex
	cmd                          *exec.Cmd
	done                         chan struct{}
	logs                         []string
	starts                       int
}

func (h *harness) newManager(t *testing.T, slot int) *manager {
	m := &manager{slot: slot}
	for _, p := range []*string{&m.metrics, &m.probe, &m.api, &m.webhook} {
		addr, err := testenv.FreeAddr()
		must(t, err)
		*p = addr
	}
	return m
}

// startManager runs the manager binary as a deployment runs it (leader election on) and
// waits until it is ready.
func (h *harness) startManager(ctx context.Context, t *testing.T, m *manager) {
	t.Helper()
	if err := h.launch(m); err != nil {
		t.Fatal(err)
	}
	if err := m.waitReady(ctx, 2*time.Minute); err != nil {
		t.Fatalf("manager %d did not become ready: %v\n%s", m.slot, err, tail(m.log(), 40))
	}
}

func (h *harness) launch(m *manager) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, webhookPort, _ := net.SplitHostPort(m.webhook)
	logPath := filepath.Join(h.dir, fmt.Sprintf("manager-%d-%d.log", m.slot, m.starts))
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	m.starts++
	m.logs = append(m.logs, logPath)
	cmd := exec.Command(h.binary,
		"--namespace", testenv.OperatorNamespace,
		"--leader-elect",
		"--metrics-bind-address", m.metrics,
		"--health-probe-bind-address", m.probe,
		"--webhook-port", webhookPort,
		"--webhook-cert-dir", h.env.Env.WebhookInstallOptions.LocalServingCertDir,
		"--cert-rotation=false",
		"--api-bind-address", m.api,
		"--api-rate-limit", "100000",
		"--public-bind-address", "",
		"--vend-image", "",
	)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+h.kubecfg)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logFile.Close(); close(done) }()
	m.cmd, m.done = cmd, done
	return nil
}

func (m *manager) log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.logs[len(m.logs)-1]
}

func (m *manager) process() (*exec.Cmd, chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd, m.done
}

// pid is the running process's id (0 if it has exited).
func (m *manager) pid() int {
	cmd, done := m.process()
	select {
	case <-done:
		return 0
	default:
		return cmd.Process.Pid
	}
}

// waitReady polls readyz until it answers 200.
func (m *manager) waitReady(ctx context.Context, timeout time.Duration) error {
	_, done := m.process()
	deadline := time.Now().Add(timeout)
	for {
		if httpStatus(ctx, "http://"+m.probe+"/readyz") == http.StatusOK {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("manager exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
	}
}

// kill kills the manager with SIGKILL, as a node failure or the OOM killer does.
func (m *manager) kill() {
	cmd, done := m.process()
	_ = cmd.Process.Kill()
	<-done
}

// leads says whether the manager holds the lease, from its own leader-election metric.
func (m *manager) leads(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.metrics+"/metrics", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "leader_election_master_status{") && strings.HasSuffix(line, " 1") {
			return true
		}
	}
	return false
}

// stopManagers stops both managers as Kubernetes does: SIGTERM, then waits.
func (h *harness) stopManagers() {
	for _, m := range h.managers {
		if m == nil || m.pid() == 0 {
			continue
		}
		cmd, done := m.process()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
}

// leader waits until one of the running managers reports that it leads.
func (h *harness) leader(ctx context.Context, t *testing.T) *manager {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		for _, m := range h.managers {
			if m.pid() != 0 && m.leads(ctx) {
				return m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no manager leads after 2 minutes")
	return nil
}

// leaseHolder is the identity the leader-election Lease names ("" if none or unreadable).
func (h *harness) leaseHolder(ctx context.Context) string {
	var lease coordinationv1.Lease
	if err := h.env.Client.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: leaseName}, &lease); err != nil {
		return ""
	}
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// webhookProxy forwards TCP connections to the first replica that accepts one, taking
// turns, as a Service does for the webhooks: TLS goes through untouched.
type webhookProxy struct {
	ln      net.Listener
	targets []string
	next    atomic.Uint32
	wg      sync.WaitGroup
}

func newWebhookProxy(listen string, targets ...string) (*webhookProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &webhookProxy{ln: ln, targets: targets}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.forward(c) })
		}
	})
	return p, nil
}

func (p *webhookProxy) forward(c net.Conn) {
	defer func() { _ = c.Close() }()
	first := int(p.next.Add(1))
	for k := range p.targets {
		up, err := net.DialTimeout("tcp", p.targets[(first+k)%len(p.targets)], time.Second)
		if err != nil {
			continue
		}
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
		<-done
		_ = up.Close()
		_ = c.Close()
		<-done
		return
	}
}

func (p *webhookProxy) close() {
	_ = p.ln.Close()
}

// logSummary counts what the processes logged at error level and checks that no key
// reached a log.
func (h *harness) logSummary(t *testing.T) LogSummary {
	var s LogSummary
	var paths []string
	for _, m := range h.managers {
		paths = append(paths, m.logs...)
	}
	sidecarLogs, _ := filepath.Glob(filepath.Join(h.dir, "vend-*.log"))
	paths = append(paths, sidecarLogs...)
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
			continue
		}
		s.Lines += bytes.Count(raw, []byte("\n"))
		for _, line := range bytes.Split(raw, []byte("\n")) {
			if bytes.Contains(line, []byte(`"level":"error"`)) || bytes.Contains(line, []byte(`"level":"ERROR"`)) {
				s.Errors++
			}
		}
		if bytes.Contains(raw, []byte(keyPrefix)) {
			t.Errorf("%s contains a stored key", filepath.Base(path))
		}
	}
	return s
}

func httpStatus(ctx context.Context, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// key is round's key of account i; its last four ("-r01") tell the rounds apart.
func key(i, round int, salt string) string {
	return fmt.Sprintf("%s%06d-%s-r%02d", keyPrefix, i, salt, round)
}

func userID(i int) string { return fmt.Sprintf("u%06d", i) }

func last4(s string) string { return s[len(s)-4:] }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(path string, lines int) string {
	raw, _ := os.ReadFile(path)
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
