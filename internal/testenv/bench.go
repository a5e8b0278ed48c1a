package testenv

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// MeasureParallel runs call from 4×GOMAXPROCS goroutines for b.N calls in all and
// reports throughput (req/s) and latency percentiles (p50-ms, p99-ms).
func MeasureParallel(b *testing.B, call func() error) {
	var mu sync.Mutex
	var latencies []time.Duration
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var local []time.Duration
		for pb.Next() {
			t := time.Now()
			if err := call(); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t))
		}
		mu.Lock()
		latencies = append(latencies, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	n := len(latencies)
	if n == 0 {
		return
	}
	slices.Sort(latencies)
	pct := func(q float64) float64 { return float64(latencies[min(n-1, int(q*float64(n)))].Microseconds()) / 1000 }
	b.ReportMetric(float64(n)/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
