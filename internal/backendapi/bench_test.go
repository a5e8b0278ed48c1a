package backendapi_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

	testenv.MeasureParallel(b, func() error {
		resp, err := c.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"})
		if err == nil && resp.Credential.GetValue() != key {
			err = fmt.Errorf("vend returned %+v", resp)
		}
		return err
	})
}
