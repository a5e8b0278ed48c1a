package backendapi_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// BenchmarkVend measures POST /data-integrations/{slug}/credentials end to end (TLS,
// TokenReview and SubjectAccessReview answers cached as in production, cache reads,
// decryption) against the embedded control plane, with 8 concurrent callers.
// It reports requests per second and latency percentiles.
func BenchmarkVend(b *testing.B) {
	ctx := context.Background()
	e, err := testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = e.Stop() }()
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	ns := "bench"
	must(e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(e.Client.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}))
	token, err := e.ServiceAccountToken(ctx, ns, "app", "pipes-backend", ns)
	must(err)
	caFile := filepath.Join(b.TempDir(), "ca.crt")
	must(os.WriteFile(caFile, e.APICA(), 0o600))
	h, err := apiclient.HTTPClientWithCA(caFile, 10*time.Second)
	must(err)
	c := apiclient.New(e.APIURL(), apiclient.WithHTTPClient(h), apiclient.WithToken(token))
	key := "sk-bench-" + strings.Repeat("k", 48)
	_, err = c.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u", Secret: key})
	must(err)

	var mu sync.Mutex
	var latencies []time.Duration
	b.SetParallelism(4) // 4 × GOMAXPROCS(2) = 8 concurrent callers
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var local []time.Duration
		for pb.Next() {
			t := time.Now()
			resp, err := c.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"})
			if err != nil || resp.Credential.GetValue() != key {
				b.Errorf("vend: %v", err)
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
	slices.Sort(latencies)
	if n := len(latencies); n > 0 {
		pct := func(p float64) float64 { return float64(latencies[min(n-1, int(p*float64(n)))].Microseconds()) / 1000 }
		b.ReportMetric(float64(n)/elapsed.Seconds(), "req/s")
		b.ReportMetric(pct(0.50), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
	}
}
