package controllers

import (
	"hash/fnv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// stableJitter is a jitter function for refreshPoint drawn once per token: the same
// account and expiry always give the same part of d. A jitter drawn anew on every
// reconcile would move the refresh point back and forth, and the requeues would end it
// at the latest point for every token alike, undoing the spread.
func stableJitter(uid types.UID, expiry time.Time) func(time.Duration) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid))
	_, _ = h.Write([]byte(expiry.UTC().Format(time.RFC3339Nano)))
	sum := h.Sum64()
	return func(d time.Duration) time.Duration {
		if d <= 0 {
			return 0
		}
		return time.Duration(sum % uint64(d)) //nolint:gosec // G115: below d, a positive int64
	}
}

// overdueSpread spreads the refreshes of tokens found past their refresh point while
// still valid — after the leader was away longer than the lead (an outage, a long
// election) — over the first half of what is left of each one's validity (at most
// RefreshLead/2), instead of all at once. Each token's moment is drawn when it is
// first found overdue and kept until it is refreshed, so requeues converge on it.
type overdueSpread struct {
	mu sync.Mutex
	at map[types.UID]overdueRefresh
}

type overdueRefresh struct {
	expiry, at time.Time
}

// delay is how long the overdue token of account uid, expiring at expiry, still waits (0:
// refresh now). random returns a duration below its argument.
func (o *overdueSpread) delay(uid types.UID, expiry, now time.Time, random func(time.Duration) time.Duration) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.at[uid]
	if !ok || !e.expiry.Equal(expiry) {
		window := min(expiry.Sub(now)/2, RefreshLead/2)
		if window <= 0 {
			return 0 // expired: a vend would refresh it anyway
		}
		if o.at == nil {
			o.at = map[types.UID]overdueRefresh{}
		}
		e = overdueRefresh{expiry: expiry, at: now.Add(random(window))}
		o.at[uid] = e
	}
	if wait := e.at.Sub(now); wait > 0 {
		return wait
	}
	delete(o.at, uid)
	return 0
}

// forget drops uid's moment (its account is gone).
func (o *overdueSpread) forget(uid types.UID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.at, uid)
}
