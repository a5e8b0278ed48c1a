package backendapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var (
	env     *testenv.Env
	apiHTTP *http.Client
)

func TestBackendAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "Backend API (envtest, real TokenReview and SubjectAccessReview)")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(20 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	var err error
	env, err = testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 20, LogTo: GinkgoWriter,
		Public: true, WidgetAllowedOrigins: []string{allowedOrigin}})
	Expect(err).NotTo(HaveOccurred())
	apiHTTP = httpClientTrusting(env.APICA())
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

func httpClientTrusting(ca []byte) *http.Client {
	path := filepath.Join(GinkgoT().TempDir(), "ca.crt")
	Expect(os.WriteFile(path, ca, 0o600)).To(Succeed())
	h, err := apiclient.HTTPClientWithCA(path, 30*time.Second)
	Expect(err).NotTo(HaveOccurred())
	return h
}

func newNamespace(ctx context.Context) string {
	ns := "api-" + rand.String(6)
	Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	return ns
}

// serviceAccountToken creates a ServiceAccount, binds it to clusterRole in bindNamespace
// (none if clusterRole is empty) and mints a token for it with the TokenRequest API.
func serviceAccountToken(ctx context.Context, ns, name, clusterRole, bindNamespace string, audiences ...string) string {
	tok, err := env.ServiceAccountToken(ctx, ns, name, clusterRole, bindNamespace, audiences...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return tok
}

func token(ctx context.Context, ns, name string, audiences ...string) string {
	tok, err := env.Token(ctx, ns, name, audiences...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return tok
}

func bind(ctx context.Context, ns, name string, role rbacv1.RoleRef, saNamespace, sa string) {
	ExpectWithOffset(1, env.Bind(ctx, ns, name, role, saNamespace, sa)).To(Succeed())
}

// api returns a client for tok acting in namespace ns (through /namespaces/{ns}).
func api(tok, ns string) *apiclient.Client { return apiAt(env.APIURL(), tok, ns) }

func apiKeyProvider(ns, name string) *pipesv1.Provider {
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, DisplayName: "OpenAI", Description: "completions on your behalf"},
	}
}

func oauthProvider(ns, name string) *pipesv1.Provider {
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, OAuth: &pipesv1.OAuthSpec{
			AuthorizationURL: "https://github.com/login/oauth/authorize", TokenURL: "https://github.com/login/oauth/access_token",
			ClientID: "id", ClientSecretRef: &pipesv1.SecretKeyReference{Name: "gh", Key: "secret"}, Scopes: []string{"repo"},
		}},
	}
}

// startServer serves the backend API from the suite's manager with its own authenticator
// and options (see serveExtra) until the spec ends.
func startServer(authn backendapi.Authenticator, o backendapi.Options) string {
	url, stop, err := serveExtra(env, authn, nil, o)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
	return url
}

// serveExtra serves the backend API from e's manager (its cache, store and recorder) with
// its own authenticator, authorizer (nil: SubjectAccessReviews through e's client) and
// options on a free loopback port: for specs that need another configuration, or limiter
// state of their own. stop stops it.
func serveExtra(e *testenv.Env, authn backendapi.Authenticator, authz backendapi.Authorizer, o backendapi.Options) (url string, stop func() error, err error) {
	base := e.Operator.API
	if authz == nil {
		authz = backendapi.NewAccessReviewer(e.Client, 10*time.Second)
	}
	s := &backendapi.Server{
		Client: base.Client, Informers: base.Informers, APIReader: base.APIReader, Store: base.Store, Recorder: base.Recorder,
		Authn: authn, Authz: authz, Log: base.Log.WithName("extra"), Options: o,
	}
	s.Options.Addr, s.Options.CertDir = "127.0.0.1:0", e.Env.WebhookInstallOptions.LocalServingCertDir
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	stop = func() error { cancel(); return <-done }
	for deadline := time.Now().Add(10 * time.Second); s.Addr() == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return "", nil, errors.Join(errors.New("the extra backend API server did not start"), stop())
		}
	}
	return "https://" + s.Addr(), stop, nil
}

// countingClient counts the TokenReviews sent through it, and how many ran at once.
type countingClient struct {
	client.Client
	reviews, inFlight, maxInFlight atomic.Int64
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if _, ok := obj.(*authnv1.TokenReview); ok {
		c.reviews.Add(1)
		n := c.inFlight.Add(1)
		defer c.inFlight.Add(-1)
		for m := c.maxInFlight.Load(); n > m; m = c.maxInFlight.Load() { // raise the maximum to n
			if c.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
	}
	return c.Client.Create(ctx, obj, opts...)
}

// sendRandomToken sends POST /data-integrations/openai/credentials with a fresh random
// bearer token and returns the status (0 for a transport error).
func sendRandomToken(h *http.Client, url string) int {
	req, _ := http.NewRequest(http.MethodPost, url+"/data-integrations/openai/credentials", strings.NewReader(`{"user_id":"u"}`))
	req.Header.Set("Authorization", "Bearer "+rand.String(40))
	resp, err := h.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// flood calls sendRandomToken from workers goroutines for d and counts the answers by status.
func flood(h *http.Client, url string, workers int, d time.Duration) map[int]int {
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				status := sendRandomToken(h, url)
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return statuses
}

// floodClient is an HTTP client trusting ca that keeps many connections open, as a flood would.
func floodClient(ca []byte) (*http.Client, error) {
	h, err := apiclient.HTTPClientWithCAData(ca, 10*time.Second)
	if err != nil {
		return nil, err
	}
	h.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	return h, nil
}

// apiAt returns a client of the server at url for tok acting in namespace ns ("" for its own).
func apiAt(url, tok, ns string) *apiclient.Client {
	opts := []apiclient.Option{apiclient.WithHTTPClient(apiHTTP), apiclient.WithToken(tok)}
	if ns != "" {
		opts = append(opts, apiclient.WithNamespace(ns))
	}
	return apiclient.New(url, opts...)
}

// strictServer serves the API with --api-require-audience (the default when deployed).
func strictServer() string {
	tr := backendapi.NewTokenReviewer(env.Client, 10*time.Second)
	tr.RequireAudience = true
	return startServer(tr, backendapi.Options{RateLimit: 1000})
}
