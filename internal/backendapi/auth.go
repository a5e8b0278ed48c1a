package backendapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Audience is the token audience the vend sidecar requests (wire.Audience). With
// TokenReviewer.RequireAudience (--api-require-audience) it is the only one accepted;
// without, tokens for the API server's own audiences are accepted too.
const Audience = wire.Audience

// maxTokenReviewsInFlight caps concurrent TokenReviews: beyond it callers get 503, so a
// flood of new tokens cannot queue unbounded work on the API server.
const maxTokenReviewsInFlight = 32

// errTokenReviewsBusy is returned when maxTokenReviewsInFlight reviews are running.
var errTokenReviewsBusy = errors.New("too many tokens are being verified at once")

// DefaultReviewTimeout bounds each TokenReview and SubjectAccessReview: a slow API
// server costs callers a 503 they can retry, never a request that hangs with them.
const DefaultReviewTimeout = 5 * time.Second

// errReviewUnavailable is a TokenReview or SubjectAccessReview that failed or timed out:
// the caller is neither accepted nor refused, and is told to retry (503).
type errReviewUnavailable struct {
	review  string // "TokenReview" or "SubjectAccessReview"
	timeout time.Duration
	err     error
}

func (e errReviewUnavailable) Error() string {
	return fmt.Sprintf("%s: %v", e.summary(), e.err)
}

// summary says what went wrong without the underlying error's details (addresses),
// for the caller's answer.
func (e errReviewUnavailable) summary() string {
	if errors.Is(e.err, context.DeadlineExceeded) {
		return fmt.Sprintf("the Kubernetes API server did not answer the %s within %s", e.review, e.timeout)
	}
	why := "unreachable"
	if reason := apierrors.ReasonForError(e.err); reason != metav1.StatusReasonUnknown {
		why = string(reason)
	}
	return fmt.Sprintf("the Kubernetes API server could not complete the %s (%s)", e.review, why)
}

// unavailableMessage is the answer to a request a dependency could not complete.
func unavailableMessage(err error) string {
	var e errReviewUnavailable
	if errors.As(err, &e) {
		return "could not check the caller's rights: " + e.summary() + "; retry in a few seconds"
	}
	return "the Kubernetes API server did not answer in time; retry in a few seconds"
}

func (e errReviewUnavailable) Unwrap() error { return e.err }

// review runs create (one TokenReview or SubjectAccessReview) within timeout.
func review(ctx context.Context, what string, timeout time.Duration, create func(context.Context) error) error {
	if timeout <= 0 {
		timeout = DefaultReviewTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := create(ctx); err != nil {
		return errReviewUnavailable{review: what, timeout: timeout, err: err}
	}
	return nil
}

// Identity is an authenticated caller.
type Identity struct {
	User authnv1.UserInfo
	// Namespace is the caller's ServiceAccount namespace ("" for other users): the
	// namespace routes without /namespaces/{ns} act in.
	Namespace string
}

// Authenticator verifies bearer tokens.
type Authenticator interface {
	// Known returns the identity of a token accepted recently, or nil, without asking anyone.
	Known(token string) *Identity
	Authenticate(ctx context.Context, token string) (*Identity, error)
}

// Authorizer decides whether a caller may do verb on a pipes.dev resource.
type Authorizer interface {
	Authorize(ctx context.Context, id *Identity, verb, resource, namespace, name string) (allowed bool, reason string, err error)
}

// ttlCache is an expiring LRU map of bounded size: when full, the least recently used
// answer goes, so a working set bigger than the bound degrades gradually (a few more
// reviews) rather than all at once, as clearing the whole map did.
type ttlCache[V any] struct {
	ttl     time.Duration
	entries *utilcache.LRUExpireCache
}

func newTTLCache[V any](ttl time.Duration, maxEntries int) *ttlCache[V] {
	return &ttlCache[V]{ttl: ttl, entries: utilcache.NewLRUExpireCache(maxEntries)}
}

func (c *ttlCache[V]) get(key string) (V, bool) {
	v, ok := c.entries.Get(key)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

// put keeps v for the TTL less up to a tenth of it, at random: answers cached together
// (every caller's first call after a restart) would otherwise expire together, and their
// reviews would all be made again in the same moment.
func (c *ttlCache[V]) put(key string, v V) {
	c.entries.Add(key, v, c.ttl-time.Duration(rand.Int64N(int64(c.ttl)/10+1))) //nolint:gosec // G404: jitter, not a secret
}

// TokenReviewer authenticates with the TokenReview API, caching answers briefly.
// Accepted and rejected tokens are cached apart, so that a flood of made-up tokens
// evicts only other rejected ones, never the identities of real callers.
type TokenReviewer struct {
	Client client.Client
	// RequireAudience accepts only tokens for Audience: a pod's automounted token (for the
	// API server) is not enough to call the API.
	RequireAudience bool
	// Timeout bounds each review (default DefaultReviewTimeout).
	Timeout time.Duration

	accepted *ttlCache[acceptedToken]
	rejected *ttlCache[string] // the reason
	inFlight chan struct{}
	// flight shares one review among concurrent requests with the same token: a busy
	// caller whose cached answer has just expired sends many at once, and would
	// otherwise fill inFlight alone and get 503s.
	flight singleflight.Group
}

// NewTokenReviewer returns an Authenticator that caches results for ttl.
func NewTokenReviewer(c client.Client, ttl time.Duration) *TokenReviewer {
	return &TokenReviewer{Client: c, accepted: newTTLCache[acceptedToken](ttl, 10000), rejected: newTTLCache[string](ttl, 10000),
		inFlight: make(chan struct{}, maxTokenReviewsInFlight)}
}

// acceptedToken is a cached identity, and when its token is reviewed again ahead of the
// answer's expiry.
type acceptedToken struct {
	id        *Identity
	refreshAt time.Time
}

// acceptedHit returns the cached identity of token (key) and, once the answer is three
// quarters through its TTL, reviews the token again in the background (one review
// however many requests), so a caller that keeps calling never finds its answer expired:
// an expired answer made all its requests "not yet verified" at once, and a busy caller
// got 429s from the per-source limit and 503s from the review cap.
func (t *TokenReviewer) acceptedHit(key, token string) *Identity {
	a, ok := t.accepted.get(key)
	if !ok {
		return nil
	}
	if time.Now().After(a.refreshAt) {
		t.flight.DoChan(key, func() (any, error) { return t.review(context.Background(), key, token) })
	}
	return a.id
}

// errUnauthenticated is a token the API server does not accept.
type errUnauthenticated struct{ reason string }

func (e errUnauthenticated) Error() string { return e.reason }

func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return string(sum[:])
}

// Known implements Authenticator.
func (t *TokenReviewer) Known(token string) *Identity {
	id := t.acceptedHit(tokenKey(token), token)
	if id != nil {
		recordAuthCache(reviewToken, true)
	}
	// A miss is counted by Authenticate, which follows it (unless the source's pre-auth
	// limit refuses the request first): each request counts once.
	return id
}

// Authenticate implements Authenticator. A token is accepted for our audience or, unless
// RequireAudience, for the API server's own audiences.
func (t *TokenReviewer) Authenticate(ctx context.Context, token string) (*Identity, error) {
	key := tokenKey(token)
	if id := t.acceptedHit(key, token); id != nil {
		recordAuthCache(reviewToken, true)
		return id, nil
	}
	if reason, ok := t.rejected.get(key); ok {
		recordAuthCache(reviewToken, true)
		return nil, errUnauthenticated{reason}
	}
	recordAuthCache(reviewToken, false)
	// The shared review must not end with the request that happened to start it: it
	// has its own deadline (Timeout).
	v, err, _ := t.flight.Do(key, func() (any, error) { return t.review(context.WithoutCancel(ctx), key, token) })
	if err != nil {
		return nil, err
	}
	return v.(*Identity), nil
}

// review asks the API server about token (whose cache key is key) and caches the answer.
func (t *TokenReviewer) review(ctx context.Context, key, token string) (*Identity, error) {
	select {
	case t.inFlight <- struct{}{}:
		defer func() { <-t.inFlight }()
	default:
		return nil, errTokenReviewsBusy
	}
	attempts := [][]string{{Audience}, nil}
	if t.RequireAudience {
		attempts = attempts[:1]
	}
	var lastErr string
	for _, audiences := range attempts {
		tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences}}
		if err := review(ctx, "TokenReview", t.Timeout, func(ctx context.Context) error { return t.Client.Create(ctx, tr) }); err != nil {
			return nil, err
		}
		// An authenticator that ignores audiences answers without ours: not good enough when it is required.
		if tr.Status.Authenticated && (!t.RequireAudience || slices.Contains(tr.Status.Audiences, Audience)) {
			id := &Identity{User: tr.Status.User}
			if rest, ok := strings.CutPrefix(id.User.Username, "system:serviceaccount:"); ok {
				id.Namespace, _, _ = strings.Cut(rest, ":")
			}
			t.accepted.put(key, acceptedToken{id: id, refreshAt: time.Now().Add(t.accepted.ttl * 3 / 4)})
			return id, nil
		}
		lastErr = tr.Status.Error
	}
	msg := "the bearer token was rejected by the Kubernetes API server"
	if lastErr != "" {
		msg += ": " + lastErr
	}
	if t.RequireAudience {
		msg += fmt.Sprintf("; this API accepts only tokens for audience %q, not a pod's automounted token (whose audience is the API server):"+
			" mount a projected serviceAccountToken volume with audience: %s, or run kubectl create token SERVICEACCOUNT --audience %s", Audience, Audience, Audience)
	}
	t.accepted.entries.Remove(key) // a token refused on its review ahead of expiry
	t.rejected.put(key, msg)
	return nil, errUnauthenticated{msg}
}

// AccessReviewer authorizes with the SubjectAccessReview API, caching answers briefly.
type AccessReviewer struct {
	Client client.Client
	// Timeout bounds each review (default DefaultReviewTimeout).
	Timeout time.Duration
	cache   *ttlCache[accessAnswer]
	// flight shares one review among concurrent requests asking the same question.
	flight singleflight.Group
}

type accessAnswer struct {
	allowed bool
	reason  string
}

// NewAccessReviewer returns an Authorizer that caches results for ttl.
func NewAccessReviewer(c client.Client, ttl time.Duration) *AccessReviewer {
	// A vend is authorized per caller and account: 10,000 accounts, each vended by its
	// own workload, need as many answers (about 200 bytes each).
	return &AccessReviewer{Client: c, cache: newTTLCache[accessAnswer](ttl, 50000)}
}

// Authorize implements Authorizer.
func (a *AccessReviewer) Authorize(ctx context.Context, id *Identity, verb, resource, namespace, name string) (bool, string, error) {
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range id.User.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: id.User.Username, UID: id.User.UID, Groups: id.User.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Group: "pipes.dev", Version: "v1alpha1", Resource: resource, Verb: verb, Namespace: namespace, Name: name,
		},
	}}
	// The key is the whole review (user, UID, groups, extra, and the resource
	// attributes), so an answer is only ever reused for exactly the same question.
	spec, err := json.Marshal(sar.Spec)
	if err != nil {
		return false, "", err
	}
	sum := sha256.Sum256(spec)
	key := string(sum[:])
	ans, ok := a.cache.get(key)
	recordAuthCache(reviewAccess, ok)
	if ok {
		return ans.allowed, ans.reason, nil
	}
	v, err, _ := a.flight.Do(key, func() (any, error) {
		ctx := context.WithoutCancel(ctx) // shared: it has its own deadline (Timeout)
		if err := review(ctx, "SubjectAccessReview", a.Timeout, func(ctx context.Context) error { return a.Client.Create(ctx, sar) }); err != nil {
			return accessAnswer{}, err
		}
		ans := accessAnswer{allowed: sar.Status.Allowed, reason: sar.Status.Reason}
		// A denial the authorizers could not evaluate (an authorization webhook down,
		// RBAC caches not yet filled after an API server restart) is not an answer to
		// keep: the next request asks again.
		if sar.Status.Allowed || sar.Status.EvaluationError == "" {
			a.cache.put(key, ans)
		}
		return ans, nil
	})
	if err != nil {
		return false, "", err
	}
	ans = v.(accessAnswer)
	return ans.allowed, ans.reason, nil
}
