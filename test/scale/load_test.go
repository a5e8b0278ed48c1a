package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Resilience scenario 3 (docs/reliability.md): the backend API under open-loop load at
// increasing rates from many identities, with the per-identity limit as deployed, then a
// noisy caller far above its limit beside a quiet one. `make chaos` runs it at full size
// with -load.strict; `make test` runs a small smoke version that asserts correctness only.
var (
	flagLoadSteps    = flag.String("load.steps", "100,200", "vend rates (requests/s, all callers together) to hold in turn")
	flagLoadStep     = flag.Duration("load.step-duration", 2*time.Second, "length of each rate step")
	flagLoadCallers  = flag.Int("load.callers", 10, "distinct callers sharing each step's rate")
	flagLoadAccounts = flag.Int("load.accounts", 50, "ConnectedAccounts vended")
	flagLoadQuiet    = flag.Int("load.quiet-rate", 20, "the quiet caller's rate, within its limit")
	flagLoadNoisy    = flag.Int("load.noisy-rate", 250, "the noisy caller's rate, far above its limit")
	flagLoadPhase    = flag.Duration("load.noisy-duration", 3*time.Second, "length of each phase of the noisy-caller test")
	flagLoadBig      = flag.Int("load.unrelated-secrets", 0, "unrelated 1 MiB Secrets (and 1,000 namespaces) added first (scenario 8; make chaos: 300)")
	flagLoadStrict   = flag.Bool("load.strict", false, "also assert the latency promises (make chaos): on a quiet machine only")
	flagLoadReport   = flag.String("load.report", "", "write the JSON report here")
)

// loadRateLimit is the per-identity limit the manager runs with: the deployed default.
const loadRateLimit = 50

// p99Target is the latency a rate must hold to count as held.
const p99Target = 50.0 // ms

// loadSteps configures the load generator for TestBackendAPILoad.
type loadSteps struct {
	Rates                []int
	Step                 time.Duration
	QuietRate, NoisyRate int
	Phase                time.Duration
	// StepCallers share each step; the next two tokens are the quiet and the noisy caller.
	StepCallers int
}

// StepFigures is one rate step, or one caller's phase in the noisy-caller test, as the
// client saw it (latency from each request's scheduled time).
type StepFigures struct {
	Rate                int
	Requests, OK        int
	RateLimited         int // 429: deliberate
	Shed                int // 503 with Retry-After: deliberate, when overloaded
	Errors              int // anything else: never expected
	FirstErrors         []string
	P50Ms, P99Ms, MaxMs float64
	Held                bool // p99 < 50 ms and no errors
	AchievedPerSecond   float64
}

type loadResult struct {
	Steps                        []StepFigures
	QuietAlone, QuietBesideNoisy StepFigures
	Noisy                        StepFigures
}

// LoadReport is what TestBackendAPILoad prints and writes.
type LoadReport struct {
	Date, Machine                string
	Accounts, Callers, RateLimit int
	Steps                        []StepFigures
	HighestHeld                  int // the highest rate with p99 < 50 ms and no errors
	RSSBeforeMiB, RSSAfterMiB    float64
	PeakRSSMiB                   float64
	QuietAlone, QuietBesideNoisy StepFigures
	Noisy                        StepFigures
	QuietP99Ratio                float64
	// Unrelated is the manager's memory before and after the unrelated Secrets and
	// namespaces were added (scenario 8), when they were.
	Unrelated *Memory `json:",omitempty"`
}

// TestBackendAPILoad is resilience scenario 3.
func TestBackendAPILoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and the manager binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rates := parseRates(t, *flagLoadSteps)
	h := startHarness(ctx, t, *flagLoadAccounts)
	h.managerArgs = []string{"--api-rate-limit", strconv.Itoa(loadRateLimit)}
	limit := h.measureWriteLimit(ctx, t) // creates the accounts' sources
	h.startManager(ctx, t)
	h.createProvider(ctx, t)
	h.firstSync(ctx, t, limit)
	var unrelated *Memory
	if *flagLoadBig > 0 {
		m := h.memory(ctx, t, *flagLoadBig, 1000)
		unrelated = &m
	}

	callers := *flagLoadCallers
	cfg := loadgenConfig{URL: "https://" + h.ports.api, CAFile: filepath.Join(h.dir, "api-ca.crt"), Namespace: namespace,
		Load: &loadSteps{Rates: rates, Step: *flagLoadStep, QuietRate: *flagLoadQuiet, NoisyRate: *flagLoadNoisy, Phase: *flagLoadPhase, StepCallers: callers}}
	must(t, os.WriteFile(cfg.CAFile, h.env.APICA(), 0o600))
	for i := range callers + 2 {
		cfg.Tokens = append(cfg.Tokens, h.callerToken(ctx, t, fmt.Sprintf("load-%03d", i)))
	}
	for i := range h.n {
		cfg.Users = append(cfg.Users, userID(i))
	}

	r := LoadReport{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Accounts: h.n, Callers: callers, RateLimit: loadRateLimit, Unrelated: unrelated}
	r.RSSBeforeMiB, _ = h.rss()
	var res loadResult
	runLoadgenProcess(ctx, t, h, cfg, &res)
	r.RSSAfterMiB, r.PeakRSSMiB = h.rss()
	r.Steps, r.QuietAlone, r.QuietBesideNoisy, r.Noisy = res.Steps, res.QuietAlone, res.QuietBesideNoisy, res.Noisy
	for _, s := range r.Steps {
		if s.Held {
			r.HighestHeld = s.Rate
		}
	}
	r.QuietP99Ratio = r.QuietBesideNoisy.P99Ms / max(r.QuietAlone.P99Ms, 0.001)
	h.logSummary()

	out, err := json.MarshalIndent(r, "", "  ")
	must(t, err)
	t.Logf("report:\n%s", out)
	if *flagLoadReport != "" {
		must(t, os.MkdirAll(filepath.Dir(*flagLoadReport), 0o755))
		must(t, os.WriteFile(*flagLoadReport, out, 0o644))
	}
	fmt.Printf("backend API load (%d callers, limit %d/s each)\n", callers, loadRateLimit)
	for _, s := range r.Steps {
		fmt.Printf("  %5d/s: achieved %6.0f/s  p50 %6.1f ms  p99 %6.1f ms  429 %d  503 %d  errors %d  held %v\n",
			s.Rate, s.AchievedPerSecond, s.P50Ms, s.P99Ms, s.RateLimited, s.Shed, s.Errors, s.Held)
	}
	fmt.Printf("  highest rate held (p99 < %.0f ms, every answer 200): %d/s\n", p99Target, r.HighestHeld)
	if u := r.Unrelated; u != nil {
		fmt.Printf("  %d unrelated 1 MiB Secrets and %d namespaces added first: manager RSS %.1f → %.1f MiB\n", u.UnrelatedSecrets, u.UnrelatedNamespaces, u.RSSBeforeMiB, u.RSSAfterMiB)
	}
	fmt.Printf("  manager RSS %.1f MiB before, %.1f after (peak %.1f)\n", r.RSSBeforeMiB, r.RSSAfterMiB, r.PeakRSSMiB)
	fmt.Printf("  quiet caller at %d/s: p99 %.1f ms alone, %.1f ms beside a caller at %d/s (%.2f×; the noisy one got %d × 429 of %d)\n",
		*flagLoadQuiet, r.QuietAlone.P99Ms, r.QuietBesideNoisy.P99Ms, *flagLoadNoisy, r.QuietP99Ratio, r.Noisy.RateLimited, r.Noisy.Requests)

	// What must hold on any machine: overload answered only by deliberate 429s and 503s
	// with Retry-After (never a 500, a timeout or a dropped connection), nothing shed at
	// the lowest rate, a noisy caller limited, a quiet one never.
	for _, s := range append(r.Steps, r.QuietAlone, r.QuietBesideNoisy, r.Noisy) {
		if s.Errors > 0 {
			t.Errorf("at %d/s, %d requests failed with something other than 429 or 503 with Retry-After: %v", s.Rate, s.Errors, s.FirstErrors)
		}
	}
	if low := r.Steps[0]; low.Shed > 0 {
		t.Errorf("at the lowest rate, %d/s, %d requests were shed (503)", low.Rate, low.Shed)
	}
	for _, s := range r.Steps {
		if per := float64(s.Rate) / float64(callers); per <= loadRateLimit && s.RateLimited > 0 {
			t.Errorf("at %d/s (%.0f/s per caller, within the limit of %d) %d requests got 429", s.Rate, per, loadRateLimit, s.RateLimited)
		}
	}
	if r.QuietAlone.RateLimited+r.QuietBesideNoisy.RateLimited > 0 {
		t.Errorf("the quiet caller, within its limit, got 429 %d times alone and %d times beside the noisy one", r.QuietAlone.RateLimited, r.QuietBesideNoisy.RateLimited)
	}
	if r.Noisy.RateLimited == 0 {
		t.Errorf("the noisy caller, at %d/s against a limit of %d/s, was never limited", *flagLoadNoisy, loadRateLimit)
	}
	if r.Noisy.OK > int(float64(loadRateLimit)*(flagLoadPhase.Seconds()+1))+2*loadRateLimit {
		t.Errorf("the noisy caller got %d answers in %s: more than its limit of %d/s (burst %d) allows", r.Noisy.OK, *flagLoadPhase, loadRateLimit, 2*loadRateLimit)
	}
	if !*flagLoadStrict {
		return
	}
	// Latency promises: on a quiet machine (make chaos).
	if r.HighestHeld == 0 {
		t.Errorf("no rate held p99 < %.0f ms", p99Target)
	}
	if r.QuietP99Ratio > 2 {
		t.Errorf("the quiet caller's p99 went from %.1f ms to %.1f ms beside the noisy one: more than 2×", r.QuietAlone.P99Ms, r.QuietBesideNoisy.P99Ms)
	}
	if grown := r.RSSAfterMiB - r.RSSBeforeMiB; grown > 64 {
		t.Errorf("the manager's RSS grew by %.1f MiB under load", grown)
	}
	if u := r.Unrelated; u != nil && u.AddedMiB > 10 {
		t.Errorf("%d unrelated 1 MiB Secrets and %d namespaces added %.1f MiB to the manager's RSS: its cache holds what it does not own", u.UnrelatedSecrets, u.UnrelatedNamespaces, u.AddedMiB)
	}
}

func parseRates(t *testing.T, s string) []int {
	var rates []int
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r <= 0 {
			t.Fatalf("-load.steps: %q is not a rate", f)
		}
		rates = append(rates, r)
	}
	return rates
}

// runLoadgenProcess runs this test binary as the load generator with cfg and decodes its
// output into res.
func runLoadgenProcess(ctx context.Context, t *testing.T, h *harness, cfg loadgenConfig, res any) {
	raw, err := json.Marshal(cfg)
	must(t, err)
	cfgPath := filepath.Join(h.dir, "loadgen.json")
	must(t, os.WriteFile(cfgPath, raw, 0o600))
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), loadgenEnv+"="+cfgPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("load generator: %v\n%s", err, out.String())
	}
	if err := json.Unmarshal(out.Bytes(), res); err != nil {
		t.Fatalf("load generator output: %v\n%s", err, out.String())
	}
}

// stepRecorder collects one step's answers.
type stepRecorder struct {
	mu  sync.Mutex
	lat []float64
	f   StepFigures
}

func (s *stepRecorder) record(due time.Time, err error, resp *wire.CredentialsResponse) {
	lat := ms(time.Since(due))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.Requests++
	var apiErr *apiclient.Error
	switch {
	case err == nil && resp.Active:
		s.f.OK++
		s.lat = append(s.lat, lat)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusTooManyRequests:
		s.f.RateLimited++
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable && apiErr.RetryAfter > 0:
		s.f.Shed++
	default:
		s.f.Errors++
		if len(s.f.FirstErrors) < 3 {
			s.f.FirstErrors = append(s.f.FirstErrors, fmt.Sprint(err))
		}
	}
}

func (s *stepRecorder) figures(rate int, d time.Duration) StepFigures {
	sort.Float64s(s.lat)
	f := s.f
	f.Rate, f.AchievedPerSecond = rate, float64(f.Requests)/d.Seconds()
	f.P50Ms, f.P99Ms, f.MaxMs = pct(s.lat, 50), pct(s.lat, 99), pct(s.lat, 100)
	f.Held = f.Errors == 0 && f.RateLimited == 0 && f.Shed == 0 && f.P99Ms < p99Target
	return f
}

// runLoadSteps is the load generator's main for TestBackendAPILoad.
func runLoadSteps(cfg loadgenConfig) int {
	ctx := context.Background()
	l := cfg.Load
	clients, err := loadgenClients(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stepClients := clients[:l.StepCallers]
	owned := warmUp(ctx, clients, cfg.Users)
	vend := func(i int, rec *stepRecorder, due time.Time) {
		users := owned[i]
		resp, err := clients[i].Credentials(ctx, provider, wire.CredentialsRequest{UserID: users[rand.IntN(len(users))]}) //nolint:gosec // load pattern
		rec.record(due, err, resp)
	}
	var res loadResult
	for _, rate := range l.Rates {
		var rec stepRecorder
		start := time.Now()
		pace(rate, l.Step, func(k int, due time.Time) { vend(k%len(stepClients), &rec, due) })
		res.Steps = append(res.Steps, rec.figures(rate, time.Since(start)))
		time.Sleep(time.Second) // each caller's bucket refills between steps
	}
	quietIndex, noisyIndex := l.StepCallers, l.StepCallers+1
	var alone stepRecorder
	start := time.Now()
	pace(l.QuietRate, l.Phase, func(_ int, due time.Time) { vend(quietIndex, &alone, due) })
	res.QuietAlone = alone.figures(l.QuietRate, time.Since(start))

	var beside, loud stepRecorder
	var wg sync.WaitGroup
	start = time.Now()
	wg.Go(func() { pace(l.NoisyRate, l.Phase, func(_ int, due time.Time) { vend(noisyIndex, &loud, due) }) })
	pace(l.QuietRate, l.Phase, func(_ int, due time.Time) { vend(quietIndex, &beside, due) })
	wg.Wait()
	d := time.Since(start)
	res.QuietBesideNoisy, res.Noisy = beside.figures(l.QuietRate, d), loud.figures(l.NoisyRate, d)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	return 0
}
