package backendapi

import (
	"testing"
	"time"
)

func countLimiters(s *Server) int {
	n := 0
	s.limiters.Range(func(any, any) bool { n++; return true })
	return n
}

// Limiters of identities gone quiet are dropped; a busy identity keeps its (drained) one.
func TestSweepLimitersKeepsOnlyActiveIdentities(t *testing.T) {
	s := &Server{Options: Options{RateLimit: 1}} // burst 2, refills in 2 s
	now := time.Now()
	for _, user := range []string{"quiet-a", "quiet-b", "busy"} {
		s.limiter(user).AllowN(now, 1)
	}
	s.limiter("busy").AllowN(now.Add(2*time.Second), 2) // drained again, 2 s later

	s.sweepLimiters(now.Add(2500 * time.Millisecond))
	if _, ok := s.limiters.Load("busy"); !ok {
		t.Fatal("the sweep dropped the limiter of an identity still rate-limited: its next request would get a full burst")
	}
	if n := countLimiters(s); n != 1 {
		t.Fatalf("%d limiters after the sweep, want 1 (the quiet identities' buckets are full again)", n)
	}
	if s.limiter("busy").AllowN(now.Add(2500*time.Millisecond), 1) {
		t.Fatal("the busy identity got a token it had not earned back")
	}

	s.sweepLimiters(now.Add(time.Hour))
	if n := countLimiters(s); n != 0 {
		t.Fatalf("%d limiters an hour later, want 0", n)
	}
}
