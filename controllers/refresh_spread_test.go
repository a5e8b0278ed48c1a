package controllers

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/pipes-dev/pipes-operator/internal/credential"
)

// refreshMoment follows the reconciles of one account as the work queue runs them
// (each requeued after refreshAhead's delay) from start, and says when its token is
// refreshed.
func refreshMoment(r *ConnectedAccountReconciler, uid types.UID, stored credential.Stored, start time.Time) time.Time {
	now := start
	for range 1000 {
		wait := r.refreshWait(uid, stored, now)
		if wait == 0 {
			return now
		}
		now = now.Add(wait)
	}
	panic("no refresh after 1,000 reconciles")
}

// spread counts refreshes per second: the busiest second and the seconds spanned.
func spread(moments []time.Time) (peak, window int) {
	perSecond := map[int64]int{}
	first, last := int64(1<<62), int64(0)
	for _, m := range moments {
		at := m.Unix()
		perSecond[at]++
		first, last = min(first, at), max(last, at)
	}
	for _, n := range perSecond {
		peak = max(peak, n)
	}
	return peak, int(last - first + 1)
}

// TestRefreshesOfTokensIssuedTogetherAreSpread: 10,000 accounts connected in the same
// second with tokens that live an hour, their reconciles followed through every requeue.
// The refreshes must spread over the jitter window (half the lead), not gather at its
// end: a jitter drawn anew on each reconcile did exactly that.
func TestRefreshesOfTokensIssuedTogetherAreSpread(t *testing.T) {
	const accounts = 10000
	issued := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	stored := credential.Stored{RotatedAt: issued, TokenExpiry: issued.Add(time.Hour)}
	r := &ConnectedAccountReconciler{}
	moments := make([]time.Time, accounts)
	for i := range moments {
		moments[i] = refreshMoment(r, types.UID(fmt.Sprintf("uid-%d", i)), stored, issued)
		if lo, hi := stored.TokenExpiry.Add(-RefreshLead-RefreshLead/2), stored.TokenExpiry.Add(-RefreshLead); moments[i].Before(lo) || moments[i].After(hi) {
			t.Fatalf("refreshed at %s, outside [%s, %s]", moments[i], lo, hi)
		}
	}
	peak, window := spread(moments)
	if want := int((RefreshLead / 2).Seconds()); window < want-1 {
		t.Errorf("the refreshes span %d s, want about %d s (half the lead)", window, want)
	}
	if even := accounts / window; peak > 2*even {
		t.Errorf("the busiest second has %d refreshes, over twice the even spread of %d/s", peak, even)
	}
}

// TestOverdueRefreshesAreSpread: the leader comes back after an outage to find 10,000
// tokens past their refresh point, 4 minutes left on each: they are refreshed over the
// next 2 minutes, not at once; an expired one at once.
func TestOverdueRefreshesAreSpread(t *testing.T) {
	const accounts = 10000
	issued := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	stored := credential.Stored{RotatedAt: issued, TokenExpiry: issued.Add(time.Hour)}
	back := stored.TokenExpiry.Add(-4 * time.Minute)
	r := &ConnectedAccountReconciler{}
	moments := make([]time.Time, accounts)
	for i := range moments {
		moments[i] = refreshMoment(r, types.UID(fmt.Sprintf("uid-%d", i)), stored, back)
		if moments[i].After(back.Add(2 * time.Minute)) {
			t.Fatalf("an overdue token waits until %s, past half of what is left of it", moments[i])
		}
	}
	peak, window := spread(moments)
	if window < 100 || peak > 2*accounts/window {
		t.Errorf("overdue refreshes: %d s, busiest second %d", window, peak)
	}
	if len(r.overdue.at) != 0 {
		t.Errorf("%d overdue moments kept after their refresh", len(r.overdue.at))
	}
	if got := refreshMoment(r, "expired", stored, stored.TokenExpiry.Add(time.Second)); !got.Equal(stored.TokenExpiry.Add(time.Second)) {
		t.Errorf("an expired token waits until %s", got)
	}
}

// refreshDelay is how long until stored's token is due, from now (0: now).
func refreshDelay(stored credential.Stored, now time.Time, jitter func(time.Duration) time.Duration) time.Duration {
	return max(refreshPoint(stored, jitter).Sub(now), 0)
}

func TestRefreshDelay(t *testing.T) {
	now := time.Now()
	none := func(time.Duration) time.Duration { return 0 }
	most := func(d time.Duration) time.Duration { return d - 1 }
	hour := credential.Stored{RotatedAt: now, TokenExpiry: now.Add(time.Hour)}
	if got := refreshDelay(hour, now, none); got != time.Hour-RefreshLead {
		t.Errorf("an hour's token is refreshed after %s, want %s", got, time.Hour-RefreshLead)
	}
	if got := refreshDelay(hour, now, most); got < time.Hour-RefreshLead-RefreshLead/2 {
		t.Errorf("jitter brought a refresh forward by more than half the lead: %s", got)
	}
	short := credential.Stored{RotatedAt: now, TokenExpiry: now.Add(8 * time.Second)}
	if got := refreshDelay(short, now, none); got != 6*time.Second {
		t.Errorf("an 8 s token is refreshed after %s, want a quarter of its life before expiry", got)
	}
	if got := refreshDelay(short, now.Add(7*time.Second), none); got != 0 {
		t.Errorf("a token inside its lead waits %s, want 0 (refresh now)", got)
	}
	a, b := stableJitter("uid", hour.TokenExpiry), stableJitter("uid", hour.TokenExpiry)
	if a(time.Hour) != b(time.Hour) || a(time.Hour) == stableJitter("other", hour.TokenExpiry)(time.Hour) {
		t.Error("stableJitter is not one draw per account and expiry")
	}
}
