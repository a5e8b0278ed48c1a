package backendapi

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// rateLimited is a 429 saying who was limited (what, formatted) and when to retry.
func rateLimited(delay time.Duration, what string, args ...any) error {
	e := errorf(http.StatusTooManyRequests, wire.CodeRateLimited, "%s; retry after %s", fmt.Sprintf(what, args...), delay.Round(time.Millisecond))
	e.header = http.Header{"Retry-After": {strconv.Itoa(int(math.Ceil(delay.Seconds())))}}
	return e
}

// remoteIP is the request's source address without the port.
func remoteIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// limiterSweepInterval is how often the limiters of keys gone quiet are dropped.
const limiterSweepInterval = time.Minute

// limiters are token buckets by key (an identity, or a source address): rate per second,
// bursts of twice that.
type limiters struct {
	rate      float64
	buckets   sync.Map     // key -> *rate.Limiter
	lastSweep atomic.Int64 // unix nanoseconds of the last sweep
}

// newLimiters refills perSecond, or def when that is not positive.
func newLimiters(perSecond, def float64) *limiters {
	if perSecond <= 0 {
		perSecond = def
	}
	return &limiters{rate: perSecond}
}

// take takes a token from key's bucket and returns 0, or, when there is none, takes
// nothing and returns how long until there is one. (Not ReserveN and Cancel: under
// concurrency a cancelled reservation does not give its token back once later ones
// exist, and a busy key would starve far below its rate.)
func (l *limiters) take(now time.Time, key string) time.Duration {
	if last := l.lastSweep.Load(); now.UnixNano()-last > int64(limiterSweepInterval) && l.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		l.sweep(now)
	}
	b := l.get(key)
	if b.AllowN(now, 1) {
		return 0
	}
	return max(time.Millisecond, time.Duration((1-b.TokensAt(now))/l.rate*float64(time.Second)))
}

func (l *limiters) get(key string) *rate.Limiter {
	if b, ok := l.buckets.Load(key); ok {
		return b.(*rate.Limiter)
	}
	b, _ := l.buckets.LoadOrStore(key, rate.NewLimiter(rate.Limit(l.rate), int(math.Max(1, 2*l.rate))))
	return b.(*rate.Limiter)
}

// sweep drops the buckets that have refilled to their burst: a new one would be the
// same, so memory follows the keys active in the last few seconds rather than every key
// ever seen. (A request racing the sweep may be counted on a bucket just dropped: at
// most one request's worth of leniency.)
func (l *limiters) sweep(now time.Time) {
	l.buckets.Range(func(key, b any) bool {
		if lim := b.(*rate.Limiter); lim.TokensAt(now) >= float64(lim.Burst()) {
			l.buckets.CompareAndDelete(key, b)
		}
		return true
	})
}
