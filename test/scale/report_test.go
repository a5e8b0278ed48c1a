package scale

import (
	"fmt"
	"runtime"
	"strings"
)

// Report is what make bench-scale prints and writes as JSON.
type Report struct {
	Date           string
	Machine        string
	N              int
	WriteLimit     WriteLimit
	FirstSync      FirstSync
	Rotation       Rotation
	KeysetRotation KeysetRotation
	Memory         Memory
	API            APIFigures
	Restart        Restart
	OAuthRefresh   OAuthRefresh
	ManagerLog     LogSummary
}

// WriteLimit is the API server's Secret write rate in this run, measured by creating the
// sources; an account needs two writes (its Secret and its status), hence the ceiling.
type WriteLimit struct {
	Secrets                 int
	Seconds                 float64
	SecretWritesPerSecond   float64
	AccountCeilingPerSecond float64
}

type FirstSync struct {
	Accounts         int
	Seconds          float64 // first create to last account connected
	CreateSeconds    float64 // how long the N creates took
	PerSecond        float64
	LatencyP50Ms     float64 // create to connected, per account
	LatencyP99Ms     float64
	ShareOfCeiling   float64 // PerSecond / WriteLimit.AccountCeilingPerSecond
	WritesPerAccount map[string]float64
	RSSMiB           float64
	PeakRSSMiB       float64
	// CPUSeconds by process during the first sync: where the machine's cores went.
	CPUSeconds map[string]float64
	Cores      CoreTime
	// RequestsPerAccount: every API server request of the first sync, by verb and
	// resource, per account (the suite's own creates included).
	RequestsPerAccount map[string]float64
}

type Rotation struct {
	Accounts              int
	Seconds               float64
	PerSecond             float64
	WatchedAccounts       int
	WatchersSawAllSeconds float64
	WritesPerAccount      map[string]float64
	CPUSeconds            map[string]float64
	Cores                 CoreTime
	RequestsPerAccount    map[string]float64
}

// CoreTime is a phase's CPU time spread over the machine's cores, in seconds of wall
// time. ControlPlane, kube-apiserver's and etcd's alone, is the least the phase could
// have taken on this machine had the operator and the suite cost nothing; All, every
// measured process's, shows whether the cores were saturated (All close to the phase's
// duration).
type CoreTime struct {
	ControlPlaneSeconds float64
	AllSeconds          float64
}

func coreTime(cpu map[string]float64) CoreTime {
	var all float64
	for _, v := range cpu {
		all += v
	}
	cores := float64(numCPU())
	return CoreTime{ControlPlaneSeconds: (cpu["kube-apiserver"] + cpu["etcd"]) / cores, AllSeconds: all / cores}
}

type KeysetRotation struct {
	Accounts                  int
	Seconds                   float64
	PerSecond                 float64
	NewAccountDuringItSeconds float64
	WritesPerAccount          map[string]float64
}

type Memory struct {
	Accounts            int
	UnrelatedSecrets    int
	UnrelatedNamespaces int
	RSSBeforeMiB        float64
	RSSAfterMiB         float64
	AddedMiB            float64
	PeakRSSMiB          float64
	HeapInuseBeforeMiB  float64
	HeapInuseAfterMiB   float64
	HeapProfile         string
	// Breakdown is taken after the memory phase, right after a collection.
	Breakdown RSSBreakdown
}

// RSSBreakdown is the manager's resident memory by origin, in MiB: Anon and File are the
// kernel's view (File: the binary's pages), the rest Go's runtime statistics.
type RSSBreakdown struct {
	AnonMiB, FileMiB                       float64
	LiveHeapMiB, HeapInuseMiB, HeapHeldMiB float64
	StacksMiB, RuntimeMiB                  float64
}

type APIFigures struct {
	Callers int
	// Client's view: a separate process, TLS, keep-alive.
	FirstCallP50Ms, FirstCallP99Ms, FirstCallMaxMs float64
	Rate                                           int
	Seconds                                        float64
	Requests, Errors                               int
	AchievedPerSecond                              float64
	P50Ms, P99Ms, MaxMs                            float64
	// Server's view: the handler's own histogram over the same run.
	ServerP50Ms, ServerP99Ms float64
	ClientCPUSeconds         float64
}

type Restart struct {
	Accounts       int
	ReadySeconds   float64
	VendingSeconds float64
	Writes         writeCounts
}

// OAuthRefresh is the leader refreshing N OAuth tokens issued together, with the same
// lifetime, ahead of their expiry, as the provider (internal/oauthtest) saw it. The
// token endpoint figures count requests up to the moment every account showed its
// refreshed token.
type OAuthRefresh struct {
	Accounts             int
	Seconds              float64 // the whole phase, checks included
	TokenLifetimeSeconds float64
	ImportSeconds        float64 // issue to the last import answered (backend API, 64 workers)
	ConnectedSeconds     float64 // issue to the last imported account connected
	// FirstRequestAfterIssueSeconds: when the leader began to refresh.
	FirstRequestAfterIssueSeconds float64
	TokenRequests                 int     // at the token endpoint
	FailedTokenRequests           int     // answered otherwise than with a refreshed token
	PeakPerSecond                 int     // most token requests within any one second
	MeanPerSecond                 float64 // TokenRequests / WindowSeconds (at least 1 s)
	WindowSeconds                 float64 // first to last token request
	RefreshSeconds                float64 // first token request to the last account showing its new version
	RefreshesPerSecond            float64 // Accounts / RefreshSeconds
	// RefreshedBeforeExpiry: accounts whose issued refresh token the provider rotated
	// before their issued access token expired; MinMarginSeconds is the least time left
	// (negative: refreshed after expiry).
	RefreshedBeforeExpiry int
	MinMarginSeconds      float64
	DoubleSpends          int   // refresh tokens presented again after rotation (must be 0)
	NeedsReauthorization  int   // accounts in needs_reauthorization afterwards (must be 0)
	PerSecond             []int // token requests in each whole second from the first
	WritesPerAccount      map[string]float64
	CPUSeconds            map[string]float64
	RequestsPerAccount    map[string]float64
}

type LogSummary struct {
	Lines, Errors, Conflicts int
	FirstErrors              []string `json:",omitempty"`
}

func numCPU() int { return runtime.NumCPU() }

// Summary is the human-readable table make bench-scale prints.
func (r *Report) Summary() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("scale benchmark, %s, %s, N=%d", r.Date, r.Machine, r.N)
	p("  API server Secret writes/s          %8.0f   (account ceiling %.0f/s)", r.WriteLimit.SecretWritesPerSecond, r.WriteLimit.AccountCeilingPerSecond)
	f := r.FirstSync
	p("  first sync                          %8.1f s  %6.0f accounts/s  p50 %.0f ms  p99 %.0f ms  %.0f%% of ceiling  RSS %.0f MiB (peak %.0f)",
		f.Seconds, f.PerSecond, f.LatencyP50Ms, f.LatencyP99Ms, 100*f.ShareOfCeiling, f.RSSMiB, f.PeakRSSMiB)
	p("    writes per account                %v", f.WritesPerAccount)
	p("    CPU seconds by process            %v", f.CPUSeconds)
	p("    over %d cores                      control plane alone %.1f s, all processes %.1f s", numCPU(), f.Cores.ControlPlaneSeconds, f.Cores.AllSeconds)
	p("    API requests per account          %v", f.RequestsPerAccount)
	p("  rotation storm                      %8.1f s  %6.0f accounts/s  watchers (%d accounts) saw all in %.1f s",
		r.Rotation.Seconds, r.Rotation.PerSecond, r.Rotation.WatchedAccounts, r.Rotation.WatchersSawAllSeconds)
	p("    CPU seconds by process            %v", r.Rotation.CPUSeconds)
	p("    over %d cores                      control plane alone %.1f s, all processes %.1f s", numCPU(), r.Rotation.Cores.ControlPlaneSeconds, r.Rotation.Cores.AllSeconds)
	p("    API requests per account          %v", r.Rotation.RequestsPerAccount)
	p("  keyset re-encryption                %8.1f s  %6.0f accounts/s  new account during it: %.2f s",
		r.KeysetRotation.Seconds, r.KeysetRotation.PerSecond, r.KeysetRotation.NewAccountDuringItSeconds)
	m := r.Memory
	p("  memory                              RSS %.0f MiB -> %.0f MiB (+%.1f) with %d unrelated 1 MiB Secrets and %d namespaces; heap in use %.0f -> %.0f MiB",
		m.RSSBeforeMiB, m.RSSAfterMiB, m.AddedMiB, m.UnrelatedSecrets, m.UnrelatedNamespaces, m.HeapInuseBeforeMiB, m.HeapInuseAfterMiB)
	bd := m.Breakdown
	p("    resident after a collection       anon %.0f MiB + file %.0f MiB; live heap %.0f, heap in use %.0f, held free %.0f, stacks %.0f, runtime %.0f MiB",
		bd.AnonMiB, bd.FileMiB, bd.LiveHeapMiB, bd.HeapInuseMiB, bd.HeapHeldMiB, bd.StacksMiB, bd.RuntimeMiB)
	a := r.API
	p("  vend, client view (%d callers)     first call p50 %.1f ms p99 %.1f ms; %d req/s for %.0f s: p50 %.2f ms p99 %.2f ms max %.1f ms, %d errors",
		a.Callers, a.FirstCallP50Ms, a.FirstCallP99Ms, a.Rate, a.Seconds, a.P50Ms, a.P99Ms, a.MaxMs, a.Errors)
	p("  vend, server view                   p50 %.2f ms p99 %.2f ms", a.ServerP50Ms, a.ServerP99Ms)
	p("  restart                             ready %.1f s, vending %.1f s, writes: %+v", r.Restart.ReadySeconds, r.Restart.VendingSeconds, r.Restart.Writes)
	o := r.OAuthRefresh
	p("  OAuth refresh, %d tokens of %.0f s  imported in %.1f s; first refresh %.1f s after issue; %d token requests over %.1f s: peak %d/s, mean %.0f/s",
		o.Accounts, o.TokenLifetimeSeconds, o.ImportSeconds, o.FirstRequestAfterIssueSeconds, o.TokenRequests, o.WindowSeconds, o.PeakPerSecond, o.MeanPerSecond)
	p("    refreshed                         all %.1f s after the first request (%.0f refreshes/s); %d of %d before expiry (least margin %.1f s); %d failed requests, %d double spends, %d needs_reauthorization",
		o.RefreshSeconds, o.RefreshesPerSecond, o.RefreshedBeforeExpiry, o.Accounts, o.MinMarginSeconds, o.FailedTokenRequests, o.DoubleSpends, o.NeedsReauthorization)
	p("    CPU seconds by process            %v (phase: %.0f s)", o.CPUSeconds, o.Seconds)
	p("    API requests per account          %v", o.RequestsPerAccount)
	p("  manager log                         %d lines, %d errors, %d conflicts", r.ManagerLog.Lines, r.ManagerLog.Errors, r.ManagerLog.Conflicts)
	return b.String()
}
