package backendapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// reviews is a client.Client that answers TokenReviews and SubjectAccessReviews with
// create; any other call panics (the embedded Client is nil).
type reviews struct {
	client.Client
	create func(obj client.Object) error
}

func (r reviews) Create(_ context.Context, obj client.Object, _ ...client.CreateOption) error {
	return r.create(obj)
}

// The cached answer of a SubjectAccessReview is reused only for exactly the same review:
// groups and extra decide it as much as the user name.
func TestAccessReviewerCachesPerCompleteSubject(t *testing.T) {
	var mu sync.Mutex
	var sent []authzv1.SubjectAccessReviewSpec
	ar := NewAccessReviewer(reviews{create: func(obj client.Object) error {
		sar := obj.(*authzv1.SubjectAccessReview)
		mu.Lock()
		sent = append(sent, sar.Spec)
		mu.Unlock()
		sar.Status.Allowed = slices.Contains(sar.Spec.Groups, "admins") && len(sar.Spec.Extra) == 0
		return nil
	}}, time.Minute)
	id := func(groups []string, extra map[string]authnv1.ExtraValue) *Identity {
		return &Identity{User: authnv1.UserInfo{Username: "alice", UID: "uid-1", Groups: groups, Extra: extra}}
	}
	cases := []struct {
		name string
		id   *Identity
		want bool
	}{
		{"admins", id([]string{"admins"}, nil), true},
		{"other groups", id([]string{"others"}, nil), false},
		{"admins with extra", id([]string{"admins"}, map[string]authnv1.ExtraValue{"scopes": {"narrow"}}), false},
		{"admins again", id([]string{"admins"}, nil), true},
	}
	for _, c := range cases {
		allowed, _, err := ar.Authorize(context.Background(), c.id, "vend", "connectedaccounts", "ns", "acct")
		if err != nil {
			t.Fatal(err)
		}
		if allowed != c.want {
			t.Errorf("%s: allowed=%t, want %t (a cached answer for another subject was reused)", c.name, allowed, c.want)
		}
	}
	if len(sent) != 3 {
		t.Fatalf("%d SubjectAccessReviews sent, want 3 (the repeated subject is answered from the cache)", len(sent))
	}
	if !slices.Equal(sent[1].Groups, []string{"others"}) || sent[2].Extra["scopes"][0] != "narrow" {
		t.Errorf("the reviews did not carry the caller's groups and extra: %+v", sent)
	}
}

// acceptOnly answers TokenReviews: good is authenticated for the audiences asked (the
// API server's when none), everything else is rejected. It counts reviews of good.
func acceptOnly(good string, goodReviews *atomic.Int64) reviews {
	return reviews{create: func(obj client.Object) error {
		r := obj.(*authnv1.TokenReview)
		if r.Spec.Token == good {
			goodReviews.Add(1)
			r.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: r.Spec.Audiences,
				User: authnv1.UserInfo{Username: "system:serviceaccount:ns:app", UID: "uid-app"}}
			return nil
		}
		r.Status.Error = "invalid bearer token"
		return nil
	}}
}

// A flood of bad tokens must not evict the identities of good ones: each would cost a
// TokenReview again on its next request.
func TestRejectedTokensDoNotEvictAcceptedOnes(t *testing.T) {
	var goodReviews atomic.Int64
	tr := NewTokenReviewer(acceptOnly("good", &goodReviews), time.Minute)
	ctx := context.Background()
	if _, err := tr.Authenticate(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	for i := range 30000 {
		if _, err := tr.Authenticate(ctx, fmt.Sprintf("bad-%d", i)); err == nil {
			t.Fatal("a bad token was accepted")
		}
	}
	if _, err := tr.Authenticate(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	if n := goodReviews.Load(); n != 1 {
		t.Fatalf("the good token was reviewed %d times, want 1: rejected tokens evicted it from the cache", n)
	}
}

// With RequireAudience only tokens for pipes.dev pass: one review, for that audience, and
// the answer must confirm it.
func TestRequireAudience(t *testing.T) {
	ctx := context.Background()
	var asked [][]string
	tr := NewTokenReviewer(reviews{create: func(obj client.Object) error {
		r := obj.(*authnv1.TokenReview)
		asked = append(asked, r.Spec.Audiences)
		// An authenticator that ignores the requested audiences and answers with the API server's.
		r.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"},
			User: authnv1.UserInfo{Username: "system:serviceaccount:ns:app"}}
		return nil
	}}, time.Minute)
	tr.RequireAudience = true
	_, err := tr.Authenticate(ctx, "apiserver-token")
	var unauth errUnauthenticated
	if !errors.As(err, &unauth) {
		t.Fatalf("a token whose review does not confirm audience pipes.dev was accepted (err %v)", err)
	}
	if !strings.Contains(unauth.reason, "--audience pipes.dev") {
		t.Errorf("the message does not say how to get a pipes.dev token: %q", unauth.reason)
	}
	if len(asked) != 1 || !slices.Equal(asked[0], []string{Audience}) {
		t.Errorf("reviews asked for audiences %q, want exactly one review for [pipes.dev]", asked)
	}

	var goodReviews atomic.Int64
	tr = NewTokenReviewer(acceptOnly("good", &goodReviews), time.Minute)
	tr.RequireAudience = true
	if id, err := tr.Authenticate(ctx, "good"); err != nil || id.Namespace != "ns" {
		t.Fatalf("a pipes.dev token was refused: %v", err)
	}
}

// At most maxTokenReviewsInFlight TokenReviews run at once; beyond that callers get 503
// with Retry-After, never a review (nor a 200).
func TestTokenReviewsInFlightAreCapped(t *testing.T) {
	unblock := make(chan struct{})
	var inFlight atomic.Int64
	tr := NewTokenReviewer(reviews{create: func(client.Object) error {
		inFlight.Add(1)
		<-unblock
		return nil // not authenticated
	}}, time.Minute)
	s := &Server{Authn: tr, Log: logr.Discard(), Options: Options{RateLimit: 1000}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	post := func(token string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/data-integrations/openai/credentials", strings.NewReader(`{"user_id":"u"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		return srv.Client().Do(req)
	}
	var wg sync.WaitGroup
	defer func() { close(unblock); wg.Wait() }()
	for i := range 32 {
		wg.Go(func() {
			if resp, err := post(fmt.Sprintf("blocked-%d", i)); err == nil {
				_ = resp.Body.Close()
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); inFlight.Load() < 32; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d TokenReviews started", inFlight.Load())
		}
	}
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := post("one-too-many")
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	select {
	case resp := <-done:
		if resp == nil {
			return
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("the 33rd concurrent request waited on a TokenReview (%d in flight): nothing caps them", inFlight.Load())
	}
	if n := inFlight.Load(); n != 32 {
		t.Fatalf("%d TokenReviews in flight, want 32", n)
	}
}

// A denial the authorizers could not evaluate is not cached: once the authorizer works
// again, the next request is answered by it, not by the cached failure.
func TestAccessReviewerAsksAgainAfterAnEvaluationError(t *testing.T) {
	var sent atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	ar := NewAccessReviewer(reviews{create: func(obj client.Object) error {
		sar := obj.(*authzv1.SubjectAccessReview)
		sent.Add(1)
		if failing.Load() {
			sar.Status = authzv1.SubjectAccessReviewStatus{Allowed: false, EvaluationError: "authorization webhook unavailable"}
		} else {
			sar.Status = authzv1.SubjectAccessReviewStatus{Allowed: true}
		}
		return nil
	}}, time.Minute)
	id := &Identity{User: authnv1.UserInfo{Username: "alice"}}
	authorize := func() bool {
		allowed, _, err := ar.Authorize(context.Background(), id, "vend", "connectedaccounts", "ns", "acct")
		if err != nil {
			t.Fatal(err)
		}
		return allowed
	}
	if authorize() {
		t.Fatal("allowed while the authorizer failed")
	}
	failing.Store(false)
	if !authorize() {
		t.Fatal("still denied after the authorizer recovered: the failed evaluation was cached")
	}
	if !authorize() || sent.Load() != 2 {
		t.Fatalf("%d reviews, want 2: the successful answer is cached", sent.Load())
	}
}

// Answers cached at the same moment expire over the last tenth of the TTL, not at once.
func TestCachedAnswersExpireSpread(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	c := &ttlCache[int]{ttl: time.Hour, entries: utilcache.NewLRUExpireCacheWithClock(1000, clock)}
	expiries := map[time.Duration]bool{}
	for i := range 200 {
		c.put(fmt.Sprint(i), i)
	}
	start := clock.now
	for step := time.Duration(0); step <= time.Hour+time.Minute; step += time.Minute {
		clock.now = start.Add(step)
		left := 0
		for i := range 200 {
			if _, ok := c.get(fmt.Sprint(i)); ok {
				left++
			}
		}
		if left > 0 && left < 200 {
			expiries[step] = true
		}
		if step < 54*time.Minute && left != 200 {
			t.Fatalf("%d of 200 answers left after %s, before the last tenth of the TTL", left, step)
		}
		if step > time.Hour && left != 0 {
			t.Fatalf("%d answers outlived the TTL", left)
		}
	}
	if len(expiries) < 3 {
		t.Fatalf("the answers expired within %d minutes of each other; want them spread over the last tenth of the TTL", len(expiries))
	}
}

type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

// When the API server cannot complete reviews, every request fails alike: the first
// failure is logged at once, the rest are counted into the next line rather than each
// logged (each still gets its 503 and its audit line).
func TestOutageIsLoggedOncePerInterval(t *testing.T) {
	var mu sync.Mutex
	var errorLines []string
	log := funcr.New(func(_, args string) {
		if strings.Contains(args, `"error"`) {
			mu.Lock()
			errorLines = append(errorLines, args)
			mu.Unlock()
		}
	}, funcr.Options{})
	tr := NewTokenReviewer(reviews{create: func(client.Object) error {
		return errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
	}}, time.Minute)
	s := &Server{Authn: tr, Log: log, Options: Options{RateLimit: 1000, PreAuthRateLimit: 1000}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	post := func(i int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/data-integrations/openai/credentials", strings.NewReader(`{"user_id":"u"}`))
		req.Header.Set("Authorization", fmt.Sprintf("Bearer token-%d", i))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
	}
	for i := range 50 {
		post(i)
	}
	mu.Lock()
	if len(errorLines) != 1 || !strings.Contains(errorLines[0], `"failedSinceLastLine"=1`) {
		t.Fatalf("50 failed requests logged %d error lines, want the first only:\n%s", len(errorLines), strings.Join(errorLines, "\n"))
	}
	mu.Unlock()
	s.outage.sometimes.Interval = time.Millisecond // the interval has passed
	time.Sleep(2 * time.Millisecond)
	post(50)
	mu.Lock()
	defer mu.Unlock()
	if len(errorLines) != 2 || !strings.Contains(errorLines[1], `"failedSinceLastLine"=50`) {
		t.Fatalf("after the interval: %d error lines, want a second one counting the 50 failures since the first:\n%s", len(errorLines), strings.Join(errorLines, "\n"))
	}
}

// Concurrent requests with the same token share one TokenReview, and with the same
// question one SubjectAccessReview: a busy caller whose cached answers just expired
// sends dozens at once, and with a review each it filled the in-flight cap alone and
// got 503s (the scale suite's 64 import workers did).
func TestConcurrentRequestsShareOneReview(t *testing.T) {
	var release sync.Map // review kind -> chan struct{}, closed to answer
	gate := func(kind string) chan struct{} {
		ch, _ := release.LoadOrStore(kind, make(chan struct{}))
		return ch.(chan struct{})
	}
	var tokenReviews, accessReviews atomic.Int64
	c := reviews{create: func(obj client.Object) error {
		switch o := obj.(type) {
		case *authnv1.TokenReview:
			tokenReviews.Add(1)
			<-gate("token")
			o.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: o.Spec.Audiences,
				User: authnv1.UserInfo{Username: "system:serviceaccount:ns:app"}}
		case *authzv1.SubjectAccessReview:
			accessReviews.Add(1)
			<-gate("access")
			o.Status.Allowed = true
		}
		return nil
	}}
	authn, authz := NewTokenReviewer(c, time.Minute), NewAccessReviewer(c, time.Minute)
	const callers = 2 * maxTokenReviewsInFlight
	run := func(kind string, call func() error) {
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				if err := call(); err != nil {
					t.Error(err)
				}
			})
		}
		time.Sleep(200 * time.Millisecond) // every caller reaches the review
		close(gate(kind))
		wg.Wait()
	}
	var id atomic.Pointer[Identity]
	run("token", func() error {
		got, err := authn.Authenticate(context.Background(), "the-token")
		id.Store(got)
		return err
	})
	run("access", func() error {
		_, _, err := authz.Authorize(context.Background(), id.Load(), "get", "connectedaccounts", "ns", "")
		return err
	})
	if tokenReviews.Load() != 1 || accessReviews.Load() != 1 {
		t.Fatalf("%d concurrent callers made %d TokenReviews and %d SubjectAccessReviews; want 1 and 1",
			callers, tokenReviews.Load(), accessReviews.Load())
	}
}

// A caller that keeps calling never finds its token's answer expired: three quarters
// through the TTL the token is reviewed again in the background, and the answer is
// renewed before it would expire. Otherwise a busy caller's requests all became "not
// yet verified" at once, each TTL, and met the per-source limit (429).
func TestAcceptedTokensAreReviewedAheadOfExpiry(t *testing.T) {
	var reviewed atomic.Int64
	authn := NewTokenReviewer(reviews{create: func(obj client.Object) error {
		reviewed.Add(1)
		o := obj.(*authnv1.TokenReview)
		o.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: o.Spec.Audiences, User: authnv1.UserInfo{Username: "u"}}
		return nil
	}}, 400*time.Millisecond)
	if _, err := authn.Authenticate(context.Background(), "tok"); err != nil {
		t.Fatal(err)
	}
	for range 12 { // 1.2 s: three TTLs, a request every 100 ms
		time.Sleep(100 * time.Millisecond)
		if authn.Known("tok") == nil {
			t.Fatalf("after %d reviews, a caller calling every 100 ms found its answer expired (TTL 400 ms)", reviewed.Load())
		}
	}
	if n := reviewed.Load(); n < 3 {
		t.Fatalf("%d reviews in three TTLs: the token is not reviewed again", n)
	}
}
