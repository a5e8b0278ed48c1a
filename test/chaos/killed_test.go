package chaos

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// managerKilled is scenario 1: accounts are created and keys rotated through the backend
// API of both managers while the leader is killed with SIGKILL, kills times, each killed
// manager started again at once. The writes come in kills+1 bursts of 5 s; each kill
// strikes at a random point of a burst, so that writes are in flight on the leader and
// go on through the leaderless time that follows. Each kill is timed until a new leader
// holds the lease and every acknowledged write shows in the accounts' status.
func (h *harness) managerKilled(ctx context.Context, t *testing.T, kills int) KillFigures {
	ops := plan(0, *flagAccounts, *flagRotations)
	f := KillFigures{Kills: kills, Load: LoadFigures{FailedAttempts: map[string]int64{}}}
	per := (len(ops) + kills) / (kills + 1)
	for k := 0; k <= kills; k++ {
		burst := ops[min(k*per, len(ops)):min((k+1)*per, len(ops))]
		l := h.startLoad(ctx, t, burst, 5*time.Second)
		if k == kills {
			l.wait(ctx, t)
			f.Load.add(l.figures())
			break
		}
		time.Sleep(time.Duration(500+rand.IntN(2500)) * time.Millisecond) //nolint:gosec // timing, not security
		// Mid-flight: while a write is being served, if one comes within 2 s.
		for wait := time.Now().Add(2 * time.Second); l.inFlight.Load() == 0 && time.Now().Before(wait); {
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
		l.wait(ctx, t)
		f.Load.add(l.figures())
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
	h.waitConverged(ctx, t, 3*time.Minute, "after the load", nil)
	h.checkAccounts(ctx, t)
	sorted := slices.Clone(f.ConvergeSeconds)
	slices.Sort(sorted)
	if len(sorted) > 0 {
		f.MinSeconds, f.MedianSeconds, f.MaxSeconds = sorted[0], sorted[len(sorted)/2], sorted[len(sorted)-1]
	}
	return f
}

// add sums another load's figures into f.
func (f *LoadFigures) add(o LoadFigures) {
	f.Writes += o.Writes
	f.Retries += o.Retries
	f.Seconds += o.Seconds
	if f.FailedAttempts == nil {
		f.FailedAttempts = map[string]int64{}
	}
	for k, v := range maps.All(o.FailedAttempts) {
		f.FailedAttempts[k] += v
	}
}
