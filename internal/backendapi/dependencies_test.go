package backendapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// reviewFault is what the proxy does to TokenReviews and SubjectAccessReviews.
type reviewFault int32

const (
	passThrough reviewFault = iota
	slow                    // held until the caller gives up
	failing                 // 500 from the API server
	dropped                 // the connection closed without an answer
)

// faultyAPIServer is a proxy in front of the suite's API server that slows or fails the
// reviews the backend API makes (resilience scenario 4), passing everything else on.
type faultyAPIServer struct {
	tokenReviews, accessReviews atomic.Int32 // reviewFault
	seen                        atomic.Int64
	*httptest.Server
}

func newFaultyAPIServer() *faultyAPIServer {
	target, err := url.Parse(env.Config.Host)
	Expect(err).NotTo(HaveOccurred())
	transport, err := rest.TransportFor(env.Config)
	Expect(err).NotTo(HaveOccurred())
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = transport
	f := &faultyAPIServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fault := passThrough
		switch {
		case strings.HasSuffix(r.URL.Path, "/tokenreviews"):
			fault = reviewFault(f.tokenReviews.Load())
		case strings.HasSuffix(r.URL.Path, "/subjectaccessreviews"):
			fault = reviewFault(f.accessReviews.Load())
		}
		if fault != passThrough {
			f.seen.Add(1)
		}
		switch fault {
		case slow:
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		case failing:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcdserver: request timed out","reason":"InternalError","code":500}`)
			return
		case dropped:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	DeferCleanup(f.Close)
	return f
}

// client is a controller-runtime client whose requests go through the proxy, without a
// client-side rate limit, as ctrl.GetConfig configures the manager's.
func (f *faultyAPIServer) client() client.Client {
	c, err := client.New(&rest.Config{Host: f.URL, QPS: -1}, client.Options{Scheme: env.Client.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// answer is what a caller saw.
type answer struct {
	status     int
	retryAfter string
	body       wire.ErrorResponse
	raw        string
	took       time.Duration
}

func vendRaw(apiURL, tok, userID string) answer {
	req, err := http.NewRequest(http.MethodPost, apiURL+"/data-integrations/openai/credentials", strings.NewReader(fmt.Sprintf(`{"user_id":%q}`, userID)))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+tok)
	start := time.Now()
	resp, err := apiHTTP.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), raw: string(raw), took: time.Since(start)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

var _ = Describe("Slow and failing API server (resilience)", func() {
	const reviewTimeout = time.Second
	// The longest a request may take when a review hangs: the review's timeout plus
	// generous room for a loaded CI machine, and far below the 1 minute the proxy holds.
	const deadline = reviewTimeout + 3*time.Second

	It("answers 503 with Retry-After within its deadline when reviews are slow, fail or drop, and never 200 without them", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		aud := backendapi.Audience
		key := "sk-live-" + strings.Repeat("q", 30) + "QQQQ"
		backend := api(serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns), "")
		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u1", Secret: key})
		Expect(err).NotTo(HaveOccurred())
		_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u2", Secret: key + "2"})
		Expect(err).NotTo(HaveOccurred())
		vendors := make([]string, 8)
		for i := range vendors {
			vendors[i] = serviceAccountToken(ctx, ns, fmt.Sprintf("vendor-%d", i), "pipes-vendor", ns, aud)
		}

		proxy := newFaultyAPIServer()
		authn := backendapi.NewTokenReviewer(proxy.client(), 10*time.Second)
		authn.RequireAudience, authn.Timeout = true, reviewTimeout
		authz := backendapi.NewAccessReviewer(proxy.client(), 10*time.Second)
		authz.Timeout = reviewTimeout
		apiURL, stop, err := serveExtra(env, authn, authz, backendapi.Options{RateLimit: 1000})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(stop)

		expectUnavailable := func(a answer, what string) {
			GinkgoHelper()
			Expect(a.status).To(Equal(http.StatusServiceUnavailable), "%s: %s", what, a.raw)
			Expect(a.retryAfter).To(Equal("2"), what)
			Expect(a.body.Code).To(Equal(wire.CodeUnavailable), what)
			Expect(a.took).To(BeNumerically("<", deadline), what)
			Expect(a.raw).NotTo(ContainSubstring(key), what)
			GinkgoWriter.Printf("%s: 503 after %s: %s\n", what, a.took.Round(time.Millisecond), a.body.Message)
		}

		By("TokenReviews held by the API server: 503 after the review timeout, not a hang")
		proxy.tokenReviews.Store(int32(slow))
		a := vendRaw(apiURL, vendors[0], "u1")
		expectUnavailable(a, "slow TokenReview")
		Expect(a.took).To(BeNumerically(">=", reviewTimeout), "answered before the review could time out: it was not asked")
		Expect(a.body.Message).To(ContainSubstring("did not answer the TokenReview within 1s"))

		By("many new callers at once while reviews hang: every one answered 503 within the deadline")
		var wg sync.WaitGroup
		answers := make([]answer, 16)
		for i := range answers {
			wg.Go(func() {
				defer GinkgoRecover()
				answers[i] = vendRaw(apiURL, vendors[1+i%(len(vendors)-1)], "u1")
			})
		}
		wg.Wait()
		for i, a := range answers {
			Expect(a.status).NotTo(Equal(http.StatusOK), "request %d was served without its token being verified", i)
			expectUnavailable(a, fmt.Sprintf("concurrent slow TokenReview %d", i))
		}

		By("TokenReviews failing (500) or dropped: 503 at once")
		proxy.tokenReviews.Store(int32(failing))
		a = vendRaw(apiURL, vendors[0], "u1")
		expectUnavailable(a, "failing TokenReview")
		Expect(a.body.Message).To(ContainSubstring("could not complete the TokenReview (InternalError)"))
		proxy.tokenReviews.Store(int32(dropped))
		expectUnavailable(vendRaw(apiURL, vendors[0], "u1"), "dropped TokenReview")

		By("tokens verified but SubjectAccessReviews slow, then failing: 503, neither 200 nor 403")
		proxy.tokenReviews.Store(int32(passThrough))
		proxy.accessReviews.Store(int32(slow))
		a = vendRaw(apiURL, vendors[0], "u1")
		expectUnavailable(a, "slow SubjectAccessReview")
		Expect(a.body.Message).To(ContainSubstring("did not answer the SubjectAccessReview within 1s"))
		proxy.accessReviews.Store(int32(failing))
		expectUnavailable(vendRaw(apiURL, vendors[0], "u1"), "failing SubjectAccessReview")

		By("the API server healthy again: served, with the key")
		proxy.accessReviews.Store(int32(passThrough))
		a = vendRaw(apiURL, vendors[0], "u1")
		Expect(a.status).To(Equal(http.StatusOK), a.raw)
		Expect(a.raw).To(ContainSubstring(key))

		By("reviews failing again: the caller just verified is served from the cache; a question never asked is not")
		seen := proxy.seen.Load()
		proxy.tokenReviews.Store(int32(failing))
		proxy.accessReviews.Store(int32(failing))
		Expect(vendRaw(apiURL, vendors[0], "u1").status).To(Equal(http.StatusOK))
		Expect(proxy.seen.Load()).To(Equal(seen), "a cached answer must not be asked again")
		expectUnavailable(vendRaw(apiURL, vendors[0], "u2"), "the same caller, another account, SubjectAccessReview failing")
	})
})
