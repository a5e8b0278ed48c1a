package chaos

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// Report is what make chaos prints and writes as JSON.
type Report struct {
	Date       string
	Machine    string
	Accounts   int // per scenario
	Rotations  int // per scenario
	BigCluster BigCluster
	Killed     KillFigures
	Restarts   RestartFigures
	Logs       LogSummary
}

// BigCluster is what was added before the run (scenario 8's hook), and how long it took.
type BigCluster struct {
	Secrets, Namespaces int
	Seconds             float64
}

// LoadFigures are the writes a scenario made through the backend API.
type LoadFigures struct {
	Writes  int // acknowledged
	Retries int // attempts that failed and were retried
	Seconds float64
	// FailedAttempts counts the failed attempts by what they ended with.
	FailedAttempts map[string]int64
}

// KillFigures are scenario 1's.
type KillFigures struct {
	Kills int
	// ConvergeSeconds is, per kill, the time from SIGKILL until a new leader held the
	// lease and every write acknowledged so far showed in the accounts' status.
	ConvergeSeconds                       []float64
	MinSeconds, MedianSeconds, MaxSeconds float64
	// InFlightAtKill is, per kill, the writes in flight when it struck.
	InFlightAtKill []int
	Load           LoadFigures
}

// RestartFigures are scenario 2's.
type RestartFigures struct {
	Outages  []Outage
	Load     LoadFigures
	Sidecars SidecarFigures
	// RotationReachedAllSeconds is the time from an upsert after the restarts until every
	// sidecar served the new key over loopback and in its file.
	RotationReachedAllSeconds float64
}

// Outage is one control-plane process's restart.
type Outage struct {
	Process string
	// Killed says it did not stop within the grace period after SIGTERM and was killed.
	Killed bool
	// StopSeconds is how long the process took to stop; DownSeconds from the stop signal
	// until it was healthy again.
	StopSeconds, DownSeconds float64
	// ConvergedSeconds is from healthy again until every acknowledged write showed in
	// status, both managers were ready and every sidecar's last sync had succeeded.
	ConvergedSeconds float64
}

// SidecarFigures are what the sidecars were seen serving through the restarts.
type SidecarFigures struct {
	Sidecars        int
	Samples         int // readiness and one credential, every 100 ms per sidecar
	Violations      int // not ready, or not the last good value
	DegradedSamples int // ready, saying it serves the last good values
	// SidecarsThatSawDegraded is how many sidecars reported degraded at least once: a
	// sidecar whose long poll the backend API kept answering from its cache never does.
	SidecarsThatSawDegraded int
	sawDegraded             []bool
}

// LogSummary is what the managers and sidecars logged.
type LogSummary struct {
	Lines, Errors int
}

// Summary is the human-readable table make chaos prints.
func (r *Report) Summary() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("chaos suite, %s, %s, %d accounts and %d rotations per scenario", r.Date, r.Machine, r.Accounts, r.Rotations)
	if r.BigCluster.Secrets > 0 {
		p("  big cluster first                  %d unrelated 1 MiB Secrets, %d namespaces (%.0f s)", r.BigCluster.Secrets, r.BigCluster.Namespaces, r.BigCluster.Seconds)
	}
	k := r.Killed
	p("  1 leader killed (SIGKILL) x%d       kill to converged: min %.1f s, median %.1f s, max %.1f s (each: %s); writes in flight at each kill: %v",
		k.Kills, k.MinSeconds, k.MedianSeconds, k.MaxSeconds, seconds(k.ConvergeSeconds), k.InFlightAtKill)
	p("    load                             %d writes acknowledged in %.0f s, %d retried attempts %v", k.Load.Writes, k.Load.Seconds, k.Load.Retries, k.Load.FailedAttempts)
	for _, o := range r.Restarts.Outages {
		p("  2 %-14s restarted         down %.1f s (stop %.1f s, SIGKILL after the grace period: %v), converged %.1f s after healthy", o.Process, o.DownSeconds, o.StopSeconds, o.Killed, o.ConvergedSeconds)
	}
	s := r.Restarts.Sidecars
	p("    sidecars                         %d: %d samples, %d violations, %d degraded samples, %d of them saw degraded; rotation after the restarts reached all in %.2f s",
		s.Sidecars, s.Samples, s.Violations, s.DegradedSamples, s.SidecarsThatSawDegraded, r.Restarts.RotationReachedAllSeconds)
	p("    load                             %d writes acknowledged in %.0f s, %d retried attempts %v", r.Restarts.Load.Writes, r.Restarts.Load.Seconds, r.Restarts.Load.Retries, r.Restarts.Load.FailedAttempts)
	p("  logs                               %d lines, %d at error level, no key", r.Logs.Lines, r.Logs.Errors)
	return b.String()
}

func seconds(s []float64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprintf("%.1f", v)
	}
	return strings.Join(parts, " ")
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
	return fmt.Sprintf("%s, %d cores (%s)", cpu, runtime.NumCPU(), host)
}
