package scale

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

const (
	namespace = "scale"
	provider  = "openai"
	// keyPrefix starts every key the suite stores, so the manager's log can be searched
	// for any of them at once.
	keyPrefix = "sk-scale-"
	workers   = 64
)

// harness is the control plane, the manager process and the suite's clients.
type harness struct {
	t   *testing.T
	env *testenv.Env
	// accounts is an informer on the benchmark's ConnectedAccounts: it records when
	// each one reaches a state, and re-establishes its watch as needed.
	accounts cache.Informer
	cs       *kubernetes.Clientset
	n        int
	dir      string
	binary   string
	kubecfg  string
	salt     string

	mgr      *exec.Cmd
	mgrDone  chan struct{}
	logPath  string
	ports    managerPorts
	restarts int
	// managerArgs are added to the manager's command line (e.g. another rate limit).
	managerArgs []string
}

type managerPorts struct{ metrics, probe, api, pprof, public string }

func startHarness(ctx context.Context, t *testing.T, n int) *harness {
	t.Helper()
	env, err := testenv.Start(testenv.Options{Webhooks: true, NoManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	h := &harness{t: t, env: env, n: n, dir: t.TempDir(), salt: randomHex(4)}
	if *flagReport != "" {
		// Kept beside the report: the manager's logs and heap profiles.
		h.dir = filepath.Join(filepath.Dir(*flagReport), "scale-run")
		must(t, os.RemoveAll(h.dir))
		must(t, os.MkdirAll(h.dir, 0o755))
	}
	if h.cs, err = kubernetes.NewForConfig(env.Config); err != nil {
		t.Fatal(err)
	}
	must(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}))
	informers, err := cache.New(env.Config, cache.Options{Scheme: env.Client.Scheme(), DefaultNamespaces: map[string]cache.Config{namespace: {}}})
	must(t, err)
	if h.accounts, err = informers.GetInformer(ctx, &pipesv1.ConnectedAccount{}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = informers.Start(ctx) }()
	if !informers.WaitForCacheSync(ctx) {
		t.Fatal("informer did not sync")
	}

	// The manager authenticates as its ServiceAccount with config/default's RBAC, as in a
	// cluster: a bearer token and RBAC, not an administrator's client certificate (which
	// kube-apiserver verifies, chain and signature, on every request).
	kc, err := h.env.ManagerKubeconfig(ctx, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h.kubecfg = filepath.Join(h.dir, "kubeconfig")
	must(t, os.WriteFile(h.kubecfg, kc, 0o600))

	root, err := devenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	h.binary = filepath.Join(h.dir, "manager")
	build := exec.CommandContext(ctx, "go", "build", "-o", h.binary, "./cmd/manager")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	must(t, build.Run())
	t.Cleanup(h.stopManager)
	return h
}

// createProvider creates the Provider every account uses (through the manager's webhook).
func (h *harness) createProvider(ctx context.Context, t *testing.T) {
	must(t, h.env.Client.Create(ctx, &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: provider},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, Description: "scale benchmark"},
	}))
}

// startManager runs the manager binary as a deployment runs it (leader election on),
// serving the webhooks the control plane calls and the backend API.
func (h *harness) startManager(ctx context.Context, t *testing.T) {
	t.Helper()
	w := h.env.Env.WebhookInstallOptions
	h.ports = managerPorts{metrics: freeAddr(t), probe: freeAddr(t), api: freeAddr(t), pprof: freeAddr(t), public: freeAddr(t)}
	h.logPath = filepath.Join(h.dir, fmt.Sprintf("manager-%d.log", h.restarts))
	logFile, err := os.Create(h.logPath)
	if err != nil {
		t.Fatal(err)
	}
	h.restarts++
	cmd := exec.Command(h.binary,
		"--namespace", testenv.OperatorNamespace,
		"--leader-elect",
		"--metrics-bind-address", h.ports.metrics,
		"--health-probe-bind-address", h.ports.probe,
		"--pprof-bind-address", h.ports.pprof,
		"--webhook-port", strconv.Itoa(w.LocalServingPort),
		"--webhook-cert-dir", w.LocalServingCertDir,
		"--cert-rotation=false",
		"--api-bind-address", h.ports.api,
		"--api-rate-limit", "100000",
		"--vend-image", "",
	)
	// The public listener (on loopback; without the flag it would take :8082) turns OAuth
	// on: its callback URL is http://<address>/oauth/callback, as in make run.
	cmd.Args = append(cmd.Args, "--public-bind-address", h.ports.public)
	cmd.Args = append(cmd.Args, h.managerArgs...) // later flags win
	cmd.Args = append(cmd.Args, strings.Fields(*flagManagerArgs)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+h.kubecfg)
	// Only the manager's: the control plane, started by this process, keeps its own.
	if *flagManagerEnv != "" {
		cmd.Env = append(cmd.Env, strings.Fields(*flagManagerEnv)...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	must(t, cmd.Start())
	h.mgr, h.mgrDone = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logFile.Close(); close(h.mgrDone) }()
	if err := h.waitReady(ctx, 2*time.Minute); err != nil {
		t.Fatalf("manager did not become ready: %v\n%s", err, tail(h.logPath, 40))
	}
}

// waitReady polls readyz until it answers 200.
func (h *harness) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + h.ports.probe + "/readyz") //nolint:noctx // loopback probe
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-h.mgrDone:
			return fmt.Errorf("manager exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s (last: %v)", timeout, err)
		}
	}
}

// stopManager stops the manager as Kubernetes does: SIGTERM, then waits.
func (h *harness) stopManager() {
	if h.mgr == nil {
		return
	}
	_ = h.mgr.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.mgrDone:
	case <-time.After(30 * time.Second):
		_ = h.mgr.Process.Kill()
		<-h.mgrDone
	}
	h.mgr = nil
}

// rss is the manager's resident set and peak resident set, in MiB.
func (h *harness) rss() (cur, peak float64) {
	status := h.memoryStatus()
	return status["VmRSS"], status["VmHWM"]
}

// memoryStatus is the manager's memory figures from /proc/PID/status (VmRSS, VmHWM,
// RssAnon, RssFile, ...), in MiB; empty when it cannot be read.
func (h *harness) memoryStatus() map[string]float64 {
	out := map[string]float64{}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.mgr.Process.Pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		out[strings.TrimSuffix(f[0], ":")] = kb / 1024
	}
	return out
}

// apiWrites counts the writes the API server has served for the resources the operator
// writes, from its own /metrics.
type writeCounts struct {
	Secrets, Accounts, AccountStatus, Events, Leases float64
}

func (w writeCounts) sub(o writeCounts) writeCounts {
	return writeCounts{w.Secrets - o.Secrets, w.Accounts - o.Accounts, w.AccountStatus - o.AccountStatus, w.Events - o.Events, w.Leases - o.Leases}
}

// apiRequests counts every request the API server has served, by verb, resource and
// subresource ("POST secrets", "PATCH connectedaccounts/status", ...).
func (h *harness) apiRequests(ctx context.Context) map[string]float64 {
	raw, err := h.cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		h.t.Fatalf("reading the API server's metrics: %v", err)
	}
	out := map[string]float64{}
	for _, s := range samples(raw, "apiserver_request_total") {
		r := s.labels["resource"]
		if sub := s.labels["subresource"]; sub != "" {
			r += "/" + sub
		}
		out[s.labels["verb"]+" "+r] += s.value
	}
	return out
}

// perAccount is the requests of each kind made per account between two apiRequests,
// leaving out kinds of fewer than 0.05 per account.
func perAccount(after, before map[string]float64, n int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := (v - before[k]) / float64(n); d >= 0.05 {
			out[k] = float64(int(d*100+0.5)) / 100
		}
	}
	return out
}

func (h *harness) apiWrites(ctx context.Context) writeCounts {
	raw, err := h.cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		h.t.Fatalf("reading the API server's metrics: %v", err)
	}
	var w writeCounts
	for _, s := range samples(raw, "apiserver_request_total") {
		switch s.labels["verb"] {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		if !strings.HasPrefix(s.labels["code"], "2") {
			continue
		}
		switch {
		case s.labels["resource"] == "secrets":
			w.Secrets += s.value
		case s.labels["resource"] == "connectedaccounts" && s.labels["subresource"] == "status":
			w.AccountStatus += s.value
		case s.labels["resource"] == "connectedaccounts":
			w.Accounts += s.value
		case s.labels["resource"] == "events":
			w.Events += s.value
		case s.labels["resource"] == "leases":
			w.Leases += s.value
		}
	}
	return w
}

// managerMetric sums a metric of the manager's /metrics over the series whose labels match.
func (h *harness) managerMetric(name string, match map[string]string) float64 {
	resp, err := http.Get("http://" + h.ports.metrics + "/metrics") //nolint:noctx // loopback
	if err != nil {
		return -1
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	var sum float64
next:
	for _, s := range samples(raw, name) {
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		sum += s.value
	}
	return sum
}

// waitIdle waits until the manager's ConnectedAccount queue has been empty, with no
// reconcile finishing, for quiet.
func (h *harness) waitIdle(ctx context.Context, quiet time.Duration) {
	last, since := -1.0, time.Now()
	for time.Since(since) < quiet {
		total := h.managerMetric("controller_runtime_reconcile_total", nil)
		depth := h.managerMetric("workqueue_depth", nil)
		if total != last || depth != 0 {
			last, since = total, time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type sample struct {
	labels map[string]string
	value  float64
}

var labelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// samples parses the series of one metric from Prometheus' text format.
func samples(raw []byte, name string) []sample {
	var out []sample
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			for _, m := range labelRE.FindAllStringSubmatch(rest[1:end], -1) {
				s.labels[m[1]] = m[2]
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		s.value, _ = strconv.ParseFloat(f[0], 64)
		out = append(out, s)
	}
	return out
}

// logSummary counts what the manager logged at error level and checks no key leaked.
func (h *harness) logSummary() LogSummary {
	var s LogSummary
	for i := range h.restarts {
		raw, err := os.ReadFile(filepath.Join(h.dir, fmt.Sprintf("manager-%d.log", i)))
		if err != nil {
			h.t.Fatal(err)
		}
		s.Lines += bytes.Count(raw, []byte("\n"))
		for _, line := range bytes.Split(raw, []byte("\n")) {
			if bytes.Contains(line, []byte(`"level":"error"`)) {
				s.Errors++
				if len(s.FirstErrors) < 3 {
					s.FirstErrors = append(s.FirstErrors, string(line[:min(len(line), 600)]))
				}
			}
		}
		s.Conflicts += bytes.Count(raw, []byte("the object has been modified"))
		if bytes.Contains(raw, []byte(keyPrefix)) {
			h.t.Errorf("the manager's log (run %d) contains a stored key", i)
		}
	}
	if s.Errors > 0 {
		h.t.Errorf("the manager logged %d errors; an optimistic-concurrency conflict or a transient failure must be a requeue, not an error; the first:\n%s", s.Errors, strings.Join(s.FirstErrors, "\n"))
	}
	return s
}

func key(i, round int, salt string) string {
	return fmt.Sprintf("%s%06d-r%d-%s", keyPrefix, i, round, salt)
}

func accountName(i int) string { return fmt.Sprintf("user-%06d", i) }
func sourceName(i int) string  { return fmt.Sprintf("src-%06d", i) }
func userID(i int) string      { return fmt.Sprintf("u%06d", i) }

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(n, workers int, fn func(i int) error) error { return testenv.InParallel(n, workers, fn) }

// freeAddr is a free loopback address.
func freeAddr(t *testing.T) string {
	addr, err := testenv.FreeAddr()
	must(t, err)
	return addr
}

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

func machine() string {
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores (%s)", cpu, numCPU(), host)
}

// cpuSeconds is the CPU time so far of the control plane, the manager and this suite
// (the load on the machine's cores, which the first sync shares).
func (h *harness) cpuSeconds() map[string]float64 {
	out := map[string]float64{"suite": procCPU(os.Getpid())}
	if h.mgr != nil {
		out["manager"] = procCPU(h.mgr.Process.Pid)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		name := strings.TrimSpace(string(comm))
		if (name == "etcd" || name == "kube-apiserver") && parentPid(pid) == os.Getpid() {
			out[name] = procCPU(pid)
		}
	}
	return out
}

func cpuDelta(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// procCPU is a process's user and system CPU time, in seconds.
func procCPU(pid int) float64 {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[13], 64)
	st, _ := strconv.ParseFloat(f[14], 64)
	return (ut + st) / 100 // USER_HZ
}

func parentPid(pid int) int {
	f := statFields(pid)
	if len(f) < 4 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[3])
	return ppid
}

// statFields splits /proc/PID/stat, whose second field (comm) may hold spaces.
func statFields(pid int) []string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(raw)
	end := strings.LastIndex(s, ")")
	if end < 0 {
		return nil
	}
	return append([]string{s[:strings.Index(s, " ")], s[strings.Index(s, "(")+1 : end]}, strings.Fields(s[end+1:])...)
}
