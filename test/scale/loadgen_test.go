package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// loadgenEnv names the config file when this test binary runs as the load generator: a
// separate process, so the figures are what a client sees, not what the handler sees.
const loadgenEnv = "PIPES_SCALE_LOADGEN"

type loadgenConfig struct {
	URL       string
	CAFile    string
	Namespace string
	Tokens    []string
	Users     []string
	Rate      int
	Duration  time.Duration
	// MetricsURL is the manager's /metrics: the handler's own latency histogram is read
	// around the paced run (not the warm-up) for the server's view.
	MetricsURL string
	// Load, when set, runs the load steps of TestBackendAPILoad instead.
	Load *loadSteps
}

type loadgenResult struct {
	FirstCallsMs []float64
	LatenciesMs  []float64
	Errors       int
	Seconds      float64
	CPUSeconds   float64
	ServerP50Ms  float64
	ServerP99Ms  float64
}

// backendAPI measures vend as a client sees it: first calls of new callers (TLS handshake,
// TokenReview and SubjectAccessReview), then a paced run over kept-alive connections.
func (h *harness) backendAPI(ctx context.Context, t *testing.T, callers, rate int, d time.Duration) APIFigures {
	cfg := loadgenConfig{URL: "https://" + h.ports.api, CAFile: filepath.Join(h.dir, "api-ca.crt"), Namespace: namespace, Rate: rate, Duration: d,
		MetricsURL: "http://" + h.ports.metrics + "/metrics"}
	must(t, os.WriteFile(cfg.CAFile, h.env.APICA(), 0o600))
	for i := range callers {
		cfg.Tokens = append(cfg.Tokens, h.callerToken(ctx, t, fmt.Sprintf("caller-%03d", i)))
	}
	for i := range h.n {
		cfg.Users = append(cfg.Users, userID(i))
	}
	raw, err := json.Marshal(cfg)
	must(t, err)
	cfgPath := filepath.Join(h.dir, "loadgen.json")
	must(t, os.WriteFile(cfgPath, raw, 0o600))

	profiled := h.cpuProfile(ctx, "manager-cpu-vend.pprof", int(d.Seconds())/2+1)
	cmd := exec.CommandContext(ctx, os.Args[0]) // this test binary, as the load generator
	cmd.Env = append(os.Environ(), loadgenEnv+"="+cfgPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("load generator: %v\n%s", err, out.String())
	}
	var res loadgenResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("load generator output: %v\n%s", err, out.String())
	}
	if res.Errors > 0 {
		t.Errorf("%d of %d vend requests failed", res.Errors, len(res.LatenciesMs)+res.Errors)
	}
	<-profiled
	sort.Float64s(res.FirstCallsMs)
	sort.Float64s(res.LatenciesMs)
	return APIFigures{
		Callers:        callers,
		FirstCallP50Ms: pct(res.FirstCallsMs, 50), FirstCallP99Ms: pct(res.FirstCallsMs, 99), FirstCallMaxMs: pct(res.FirstCallsMs, 100),
		Rate: rate, Seconds: res.Seconds, Requests: len(res.LatenciesMs), Errors: res.Errors,
		AchievedPerSecond: float64(len(res.LatenciesMs)) / res.Seconds,
		P50Ms:             pct(res.LatenciesMs, 50), P99Ms: pct(res.LatenciesMs, 99), MaxMs: pct(res.LatenciesMs, 100),
		ServerP50Ms: res.ServerP50Ms, ServerP99Ms: res.ServerP99Ms,
		ClientCPUSeconds: res.CPUSeconds,
	}
}

type histogram struct {
	le    []float64
	count []float64 // cumulative
}

func vendHistogram(metricsURL string) histogram {
	var hist histogram
	resp, err := http.Get(metricsURL) //nolint:noctx,gosec // the manager's loopback metrics
	if err != nil {
		return hist
	}
	defer func() { _ = resp.Body.Close() }()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	for _, s := range samples(buf.Bytes(), "pipes_api_request_duration_seconds_bucket") {
		if s.labels["action"] != "vend" {
			continue
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			le = 1e9 // +Inf
		}
		hist.le, hist.count = append(hist.le, le), append(hist.count, s.value)
	}
	return hist
}

func subtractHistogram(a, b histogram) histogram {
	out := histogram{le: a.le, count: make([]float64, len(a.count))}
	for i := range a.count {
		out.count[i] = a.count[i]
		if i < len(b.count) {
			out.count[i] -= b.count[i]
		}
	}
	return out
}

// quantile interpolates linearly within the bucket, as PromQL's histogram_quantile does.
func (h histogram) quantile(q float64) float64 {
	if len(h.count) == 0 || h.count[len(h.count)-1] == 0 {
		return 0
	}
	rank := q * h.count[len(h.count)-1]
	lo, below := 0.0, 0.0
	for i, c := range h.count {
		if c >= rank {
			if h.le[i] >= 1e9 {
				return lo
			}
			return lo + (h.le[i]-lo)*(rank-below)/max(c-below, 1)
		}
		lo, below = h.le[i], c
	}
	return lo
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p/100)]
}

// runLoadgen is the load generator's main.
func runLoadgen() int {
	raw, err := os.ReadFile(os.Getenv(loadgenEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var cfg loadgenConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if cfg.Load != nil {
		return runLoadSteps(cfg)
	}
	ctx := context.Background()
	var res loadgenResult
	clients, err := loadgenClients(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i, c := range clients {
		// First call of a new caller: new connection, token and access reviews not cached.
		start := time.Now()
		if _, err := c.Credentials(ctx, provider, wire.CredentialsRequest{UserID: cfg.Users[i%len(cfg.Users)]}); err != nil {
			res.Errors++
			continue
		}
		res.FirstCallsMs = append(res.FirstCallsMs, ms(time.Since(start)))
	}
	owned := warmUp(ctx, clients, cfg.Users)
	buckets := vendHistogram(cfg.MetricsURL)
	var mu sync.Mutex
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	pace(cfg.Rate, cfg.Duration, func(k int, due time.Time) {
		i := k % len(clients)
		users := owned[i]
		c, user := clients[i], users[rand.IntN(len(users))] //nolint:gosec // load pattern, not security
		resp, err := c.Credentials(ctx, provider, wire.CredentialsRequest{UserID: user})
		lat := ms(time.Since(due))
		mu.Lock()
		defer mu.Unlock()
		if err != nil || !resp.Active {
			res.Errors++
			return
		}
		res.LatenciesMs = append(res.LatenciesMs, lat)
	})
	res.Seconds = time.Since(start).Seconds()
	server := subtractHistogram(vendHistogram(cfg.MetricsURL), buckets)
	res.ServerP50Ms, res.ServerP99Ms = server.quantile(0.5)*1000, server.quantile(0.99)*1000
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	res.CPUSeconds = cpu(ru1) - cpu(ru0)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	return 0
}

// loadgenClients makes one API client per token, each dialing from its own loopback
// address as pods do: the API limits requests with tokens not yet verified per source
// address, and 100 new callers from one address within a second would be (rightly) taken
// for a flood.
func loadgenClients(cfg loadgenConfig) ([]*apiclient.Client, error) {
	clients := make([]*apiclient.Client, len(cfg.Tokens))
	for i, tok := range cfg.Tokens {
		hc, err := apiclient.HTTPClientWithCA(cfg.CAFile, 5*time.Second)
		if err != nil {
			return nil, err
		}
		if tr, ok := hc.Transport.(*http.Transport); ok {
			tr.MaxIdleConnsPerHost = 16
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+(i+1)/250), byte(1+(i+1)%250))}, Timeout: 5 * time.Second}
			tr.DialContext = d.DialContext
		}
		clients[i] = apiclient.New(cfg.URL, apiclient.WithHTTPClient(hc), apiclient.WithToken(tok), apiclient.WithNamespace(cfg.Namespace))
	}
	return clients, nil
}

// warmUp gives each caller its own accounts, as a workload vends its users' credentials
// (caller i the users i, i+callers, ...), and vends each once (not measured), so that
// runs measure the authorization cache warm, as the targets are stated. It returns each
// caller's users.
func warmUp(ctx context.Context, clients []*apiclient.Client, users []string) [][]string {
	owned := make([][]string, len(clients))
	for u, user := range users {
		owned[u%len(clients)] = append(owned[u%len(clients)], user)
	}
	var warm sync.WaitGroup
	for i, c := range clients {
		warm.Go(func() {
			for _, u := range owned[i] {
				_, _ = c.Credentials(ctx, provider, wire.CredentialsRequest{UserID: u})
			}
		})
	}
	warm.Wait()
	return owned
}

// pace calls fn open loop, rate times a second for d: call k is due at start + k/rate
// whether or not earlier ones have answered, and fn counts its latency from due (no
// coordinated omission). It returns once every call has returned.
func pace(rate int, d time.Duration, fn func(k int, due time.Time)) {
	total := int(d.Seconds() * float64(rate))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	start := time.Now()
	for k := range total {
		due := start.Add(time.Duration(k) * time.Second / time.Duration(rate))
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(k, due)
		})
	}
	wg.Wait()
}

func cpu(r syscall.Rusage) float64 {
	return float64(r.Utime.Sec+r.Stime.Sec) + float64(r.Utime.Usec+r.Stime.Usec)/1e6
}
