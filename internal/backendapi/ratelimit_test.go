package backendapi

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func countBuckets(l *limiters) int {
	n := 0
	l.buckets.Range(func(any, any) bool { n++; return true })
	return n
}

// Buckets of keys (identities, source addresses) gone quiet are dropped; a busy key keeps
// its (drained) one.
func TestSweepKeepsOnlyActiveKeys(t *testing.T) {
	l := newLimiters(1, 50) // burst 2, refills in 2 s
	now := time.Now()
	for _, key := range []string{"quiet-a", "quiet-b", "busy"} {
		l.get(key).AllowN(now, 1)
	}
	l.get("busy").AllowN(now.Add(2*time.Second), 2) // drained again, 2 s later

	l.sweep(now.Add(2500 * time.Millisecond))
	if _, ok := l.buckets.Load("busy"); !ok {
		t.Fatal("the sweep dropped the bucket of a key still rate-limited: its next request would get a full burst")
	}
	if n := countBuckets(l); n != 1 {
		t.Fatalf("%d buckets after the sweep, want 1 (the quiet keys' buckets are full again)", n)
	}
	if l.take(now.Add(2500*time.Millisecond), "busy") == 0 {
		t.Fatal("the busy key got a token it had not earned back")
	}

	l.sweep(now.Add(time.Hour))
	if n := countBuckets(l); n != 0 {
		t.Fatalf("%d buckets an hour later, want 0", n)
	}
}

// take sweeps at most once a minute, as requests arrive: no goroutine of its own.
func TestTakeSweepsQuietKeys(t *testing.T) {
	l := newLimiters(1, 50)
	now := time.Now()
	for _, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		if l.take(now, ip) != 0 {
			t.Fatalf("%s limited on its first request", ip)
		}
	}
	l.take(now.Add(2*limiterSweepInterval), "192.0.2.9")
	if n := countBuckets(l); n != 1 {
		t.Fatalf("%d buckets after a request two minutes later, want 1 (only the new key's)", n)
	}
}

// A bucket hammered from many goroutines still lets its rate through: refused requests
// take nothing from it (a reservation cancelled after later ones were made would not give
// its token back, starving the key below its rate).
func TestTakeKeepsTheRateUnderContention(t *testing.T) {
	l := newLimiters(50, 50) // burst 100
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for time.Since(start) < time.Second {
				if l.take(time.Now(), "k") == 0 {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	want := 100 + 50*time.Since(start).Seconds()
	if got := float64(allowed.Load()); got < 0.9*want || got > want+5 {
		t.Fatalf("%.0f requests allowed in %s, want about %.0f (burst 100, then 50/s)", got, time.Since(start).Round(time.Millisecond), want)
	}
}
