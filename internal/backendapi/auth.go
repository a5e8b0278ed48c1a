package backendapi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Audience is the token audience the vend sidecar requests; tokens for the API server's
// default audience are accepted too.
const Audience = "pipes.dev"

// Identity is an authenticated caller.
type Identity struct {
	User authnv1.UserInfo
	// Namespace is the caller's ServiceAccount namespace ("" for other users): the
	// namespace routes without /namespaces/{ns} act in.
	Namespace string
}

// Authenticator verifies bearer tokens.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Identity, error)
}

// Authorizer decides whether a caller may do verb on a pipes.dev resource.
type Authorizer interface {
	Authorize(ctx context.Context, id *Identity, verb, resource, namespace, name string) (allowed bool, reason string, err error)
}

// ttlCache is a small expiring map; it is cleared whole when full, which bounds memory
// without bookkeeping (entries are cheap to recompute).
type ttlCache[V any] struct {
	mu      sync.Mutex
	ttl     time.Duration
	max     int
	entries map[string]ttlEntry[V]
}

type ttlEntry[V any] struct {
	value   V
	expires time.Time
}

func newTTLCache[V any](ttl time.Duration, max int) *ttlCache[V] {
	return &ttlCache[V]{ttl: ttl, max: max, entries: map[string]ttlEntry[V]{}}
}

func (c *ttlCache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || time.Now().After(e.expires) {
		var zero V
		return zero, false
	}
	return e.value, true
}

func (c *ttlCache[V]) put(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		clear(c.entries)
	}
	c.entries[key] = ttlEntry[V]{value: v, expires: time.Now().Add(c.ttl)}
}

// TokenReviewer authenticates with the TokenReview API, caching answers briefly.
type TokenReviewer struct {
	Client client.Client
	cache  *ttlCache[*Identity]
}

// NewTokenReviewer returns an Authenticator that caches results for ttl.
func NewTokenReviewer(c client.Client, ttl time.Duration) *TokenReviewer {
	return &TokenReviewer{Client: c, cache: newTTLCache[*Identity](ttl, 10000)}
}

// errUnauthenticated is a token the API server does not accept.
type errUnauthenticated struct{ reason string }

func (e errUnauthenticated) Error() string { return e.reason }

// Authenticate implements Authenticator. A token is accepted for our audience or for
// the API server's own audiences.
func (t *TokenReviewer) Authenticate(ctx context.Context, token string) (*Identity, error) {
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:])
	if id, ok := t.cache.get(key); ok {
		if id == nil {
			return nil, errUnauthenticated{"the bearer token was rejected by the Kubernetes API server"}
		}
		return id, nil
	}
	var lastErr string
	for _, audiences := range [][]string{{Audience}, nil} {
		review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences}}
		if err := t.Client.Create(ctx, review); err != nil {
			return nil, fmt.Errorf("TokenReview: %w", err)
		}
		if review.Status.Authenticated {
			id := &Identity{User: review.Status.User}
			if rest, ok := strings.CutPrefix(id.User.Username, "system:serviceaccount:"); ok {
				id.Namespace, _, _ = strings.Cut(rest, ":")
			}
			t.cache.put(key, id)
			return id, nil
		}
		lastErr = review.Status.Error
	}
	t.cache.put(key, nil)
	msg := "the bearer token was rejected by the Kubernetes API server"
	if lastErr != "" {
		msg += ": " + lastErr
	}
	return nil, errUnauthenticated{msg}
}

// AccessReviewer authorizes with the SubjectAccessReview API, caching answers briefly.
type AccessReviewer struct {
	Client client.Client
	cache  *ttlCache[accessAnswer]
}

type accessAnswer struct {
	allowed bool
	reason  string
}

// NewAccessReviewer returns an Authorizer that caches results for ttl.
func NewAccessReviewer(c client.Client, ttl time.Duration) *AccessReviewer {
	return &AccessReviewer{Client: c, cache: newTTLCache[accessAnswer](ttl, 10000)}
}

// Authorize implements Authorizer.
func (a *AccessReviewer) Authorize(ctx context.Context, id *Identity, verb, resource, namespace, name string) (bool, string, error) {
	key := strings.Join([]string{id.User.UID, id.User.Username, verb, resource, namespace, name}, "\x00")
	if ans, ok := a.cache.get(key); ok {
		return ans.allowed, ans.reason, nil
	}
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
	if err := a.Client.Create(ctx, sar); err != nil {
		return false, "", fmt.Errorf("SubjectAccessReview: %w", err)
	}
	ans := accessAnswer{allowed: sar.Status.Allowed, reason: sar.Status.Reason}
	a.cache.put(key, ans)
	return ans.allowed, ans.reason, nil
}
