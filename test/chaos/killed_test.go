package chaos

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// managerKilled is scenario 1: accounts are created and keys rotated through the backend
// API of both managers while the leader is killed with SIGKILL, kills times at random
// points, each killed manager started again at once. Each kill is timed until a new
// leader holds the lease and every acknowledged write shows in the accounts' status.
func (h *harness) managerKilled(ctx context.Context, t *testing.T, kills int) KillFigures {
	ops := plan(0, *flagAccounts, *flagRotations)
	// Long enough that every kill, its lease expiry (15 s: a killed leader cannot release
	// it) and its recovery happen under load.
	over := time.Duration(kills)*18*time.Second + 2*time.Second
	l := h.startLoad(ctx, t, ops, over)
	f := KillFigures{Kills: kills}
	for range kills {
		// A random point of the load.
		time.Sleep(time.Duration(500+rand.IntN(3500)) * time.Millisecond) //nolint:gosec // timing, not security
		// Mid-flight: while a write is being served, if one comes within 5 s.
		for wait := time.Now().Add(5 * time.Second); l.inFlight.Load() == 0 && time.Now().Before(wait); {
			time.Sleep(time.Millisecond)
		}
		leader := h.leader(ctx, t)
		holder := h.leaseHolder(ctx)
		inFlight := l.inFlight.Load()
		killed := time.Now()
		leader.kill()
		restarted := make(chan struct{})
		go func() {
			defer close(restarted)
			if err := h.launch(leader); err != nil {
				t.Errorf("starting manager %d again: %v", leader.slot, err)
				return
			}
			if err := leader.waitReady(ctx, 2*time.Minute); err != nil {
				t.Errorf("manager %d did not become ready again: %v", leader.slot, err)
			}
		}()
		converged := h.waitConverged(ctx, t, 3*time.Minute, "after killing the leader", func() error {
			if now := h.leaseHolder(ctx); now == "" || now == holder {
				return errors.New("no new leader holds the lease")
			}
			return nil
		})
		<-restarted
		f.ConvergeSeconds = append(f.ConvergeSeconds, converged.Sub(killed).Seconds())
		f.InFlightAtKill = append(f.InFlightAtKill, int(inFlight))
		t.Logf("kill of manager %d with %d writes in flight: a new leader converged %.1f s later", leader.slot, inFlight, converged.Sub(killed).Seconds())
	}
	l.wait(ctx, t)
	h.waitConverged(ctx, t, 3*time.Minute, "after the load", nil)
	h.checkAccounts(ctx, t)
	f.Load = l.figures()
	sorted := slices.Clone(f.ConvergeSeconds)
	slices.Sort(sorted)
	if len(sorted) > 0 {
		f.MinSeconds, f.MedianSeconds, f.MaxSeconds = sorted[0], sorted[len(sorted)/2], sorted[len(sorted)-1]
	}
	return f
}
