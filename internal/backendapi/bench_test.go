package backendapi_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// BenchmarkVend measures vending end to end (TLS, TokenReview and SubjectAccessReview
// answers cached as in production, cache reads, decryption) against the embedded control
// plane, with 8 concurrent callers: an API key (POST …/credentials), and an OAuth access
// token that needs no refresh (POST …/token). It reports requests per second and latency
// percentiles.
func BenchmarkVend(b *testing.B) {
	if testing.Short() {
		b.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	ctx := context.Background()
	e, err := testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 1e6, Public: true})
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
	must(e.Client.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "github"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth,
		OAuth: &pipesv1.OAuthSpec{AuthorizationURL: "https://github.com/login/oauth/authorize", TokenURL: "https://github.com/login/oauth/access_token",
			ClientID: "id", ClientSecretRef: &pipesv1.SecretKeyReference{Name: "gh", Key: "secret"}}}}))
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
	access := "gho_bench_" + strings.Repeat("a", 30)
	expires := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	req, _ := http.NewRequest(http.MethodPost, e.APIURL()+"/user_management/users/u/connected_accounts/github",
		strings.NewReader(`{"access_token":"`+access+`","refresh_token":"r","expires_at":"`+expires+`"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := h.Do(req)
	must(err)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("importing the OAuth token: %d", resp.StatusCode)
	}

	b.Run("api-key", func(b *testing.B) {
		testenv.MeasureParallel(b, func() error {
			resp, err := c.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"})
			if err == nil && resp.Credential.GetValue() != key {
				err = fmt.Errorf("vend returned %+v", resp)
			}
			return err
		})
	})
	b.Run("oauth", func(b *testing.B) {
		testenv.MeasureParallel(b, func() error {
			resp, err := c.Token(ctx, "github", wire.CredentialsRequest{UserID: "u"})
			if err == nil && resp.Credential.GetValue() != access {
				err = fmt.Errorf("vend returned %+v", resp)
			}
			return err
		})
	})
}

// BenchmarkUnauthenticatedFlood floods the API with random bearer tokens from
// 64×GOMAXPROCS goroutines against the embedded control plane, and reports how many
// TokenReviews reach the API server per second (reviews/s) and at most at once
// (max-in-flight), with RequireAudience as deployed (one review per new token).
// one-source: every request from one address, under the pre-authentication limit
// (20/s, burst 40). many-sources: that limit lifted, as for a flood from countless
// addresses: only the cap of 32 TokenReviews in flight holds (the rest get 503).
func BenchmarkUnauthenticatedFlood(b *testing.B) {
	if testing.Short() {
		b.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	e, err := testenv.Start(testenv.Options{Webhooks: true, API: true})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = e.Stop() }()
	h, err := floodClient(e.APICA())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name    string
		preAuth float64
	}{{"one-source", 0}, {"many-sources", 1e9}} {
		counter := &countingClient{Client: e.Client}
		tr := backendapi.NewTokenReviewer(counter, 10*time.Second)
		tr.RequireAudience = true
		url, stop, err := serveExtra(e, tr, nil, backendapi.Options{RateLimit: 1e6, PreAuthRateLimit: bc.preAuth})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			var ok, busy atomic.Int64
			before := counter.reviews.Load()
			b.SetParallelism(64)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					switch sendRandomToken(h, url) {
					case http.StatusOK:
						ok.Add(1)
					case http.StatusServiceUnavailable:
						busy.Add(1)
					}
				}
			})
			elapsed := time.Since(start).Seconds()
			b.StopTimer()
			if ok.Load() > 0 {
				b.Fatalf("%d random tokens were answered 200", ok.Load())
			}
			b.ReportMetric(float64(b.N)/elapsed, "req/s")
			b.ReportMetric(float64(counter.reviews.Load()-before)/elapsed, "reviews/s")
			b.ReportMetric(float64(counter.maxInFlight.Load()), "max-in-flight")
			b.ReportMetric(float64(busy.Load())/elapsed, "503/s")
		})
		if err := stop(); err != nil {
			b.Fatal(err)
		}
	}
}
