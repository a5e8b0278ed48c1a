package controllers

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/credential"
)

// BenchmarkRefreshSpread: 10,000 accounts connected within the same second with tokens
// that live an hour (as after a migration or an outage): when does the leader refresh
// them? It reports the busiest second's token-endpoint requests (peak-req/s) against an
// even spread over the jitter window (mean-req/s).
func BenchmarkRefreshSpread(b *testing.B) {
	const accounts = 10000
	issued := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	stored := credential.Stored{RotatedAt: issued, TokenExpiry: issued.Add(time.Hour)}
	var peak, window int
	for range b.N {
		perSecond := map[int64]int{}
		first, last := int64(1<<62), int64(0)
		for range accounts {
			at := issued.Add(refreshDelay(stored, issued, rand.N[time.Duration])).Unix()
			perSecond[at]++
			first, last = min(first, at), max(last, at)
		}
		peak, window = 0, int(last-first+1)
		for _, n := range perSecond {
			peak = max(peak, n)
		}
		if peak > 2*accounts/window {
			b.Fatalf("the busiest second has %d refreshes, over twice the even spread of %d/s over %d s", peak, accounts/window, window)
		}
	}
	b.ReportMetric(float64(peak), "peak-req/s")
	b.ReportMetric(float64(accounts)/float64(window), "mean-req/s")
	b.ReportMetric(float64(window), "window-s")
}

func TestRefreshDelay(t *testing.T) {
	now := time.Now()
	none := func(time.Duration) time.Duration { return 0 }
	most := func(d time.Duration) time.Duration { return d - 1 }
	hour := credential.Stored{RotatedAt: now, TokenExpiry: now.Add(time.Hour)}
	if got := refreshDelay(hour, now, none); got != time.Hour-RefreshLead+time.Second {
		t.Errorf("an hour's token is refreshed after %s, want %s", got, time.Hour-RefreshLead+time.Second)
	}
	if got := refreshDelay(hour, now, most); got < time.Hour-RefreshLead-RefreshLead/2 {
		t.Errorf("jitter brought a refresh forward by more than half the lead: %s", got)
	}
	short := credential.Stored{RotatedAt: now, TokenExpiry: now.Add(8 * time.Second)}
	if got := refreshDelay(short, now, none); got != 7*time.Second {
		t.Errorf("an 8 s token is refreshed after %s, want a quarter before expiry plus a second", got)
	}
	if got := refreshDelay(short, now.Add(7*time.Second), none); got != 0 {
		t.Errorf("a token inside its lead waits %s, want 0 (refresh now)", got)
	}
}
