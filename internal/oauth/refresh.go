package oauth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
)

// ErrNeedsReauthorization means the provider refused the stored refresh token; the account
// stays so until the user connects again.
var ErrNeedsReauthorization = errors.New("the provider refused the stored refresh token: the user must connect again")

// Refresher hands out an OAuth account's current token, refreshing it when it expires
// within Skew. A refresh token is spent once across every replica: the refreshing
// replica first takes a lock on the credential Secret (an annotation written with the
// Secret's resourceVersion as precondition), and the others wait and then read the token
// it stored rather than refresh again.
type Refresher struct {
	Store *credential.Store
	// Reader reads credential Secrets from the API server; Writer writes the lock.
	Reader client.Reader
	Writer client.Client
	// Replica names this replica in the lock.
	Replica string
	// Skew: a token expiring within it is refreshed before it is handed out. Zero: a
	// quarter of the token's lifetime, at most DefaultSkew, so that short-lived tokens
	// are not refreshed on every vend.
	Skew time.Duration
	// LockTTL bounds a refresh; a lock older than that is taken over.
	LockTTL time.Duration
	// BackoffBase and BackoffMax pace the retries of a failing token endpoint: after
	// n failures in a row, no replica tries again for BackoffBase·2ⁿ⁻¹ (at most
	// BackoffMax), less a random part of up to half. Zero: DefaultBackoffBase and
	// DefaultBackoffMax.
	BackoffBase, BackoffMax time.Duration
	Now                     func() time.Time

	flight singleflight.Group
}

// DefaultSkew is Refresher.Skew's default.
const DefaultSkew = time.Minute

// Refresher.BackoffBase's and BackoffMax's defaults: a provider that is down is asked
// again after about 1, 2, 4… seconds, then once a minute.
const (
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = time.Minute
)

// RetryError is a refresh not tried before At: the provider's token endpoint failed
// Failures times in a row. Cause is the last failure when this call saw it happen.
type RetryError struct {
	At       time.Time
	Failures int
	Cause    error
}

func (e *RetryError) Error() string {
	s := fmt.Sprintf("refreshing the token failed %d time(s) in a row; the next attempt is at %s", e.Failures, e.At.UTC().Format(time.RFC3339))
	if e.Cause != nil {
		return e.Cause.Error() + "; " + s
	}
	return s
}

func (e *RetryError) Unwrap() error { return e.Cause }

// backoff is how long to wait after failures failed refreshes in a row.
func (r *Refresher) backoff(failures int) time.Duration {
	base, most := cmp.Or(r.BackoffBase, DefaultBackoffBase), cmp.Or(r.BackoffMax, DefaultBackoffMax)
	d := most
	if failures <= 30 {
		d = min(most, base<<(failures-1))
	}
	return d - rand.N(d/2+1) //nolint:gosec // G404: jitter, not a secret
}

func (r *Refresher) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Refresher) skew(d credential.Stored) time.Duration {
	if r.Skew > 0 {
		return r.Skew
	}
	if lifetime := d.TokenExpiry.Sub(d.RotatedAt); !d.RotatedAt.IsZero() && lifetime > 0 {
		return min(DefaultSkew, lifetime/4)
	}
	return DefaultSkew
}

func (r *Refresher) lockTTL() time.Duration {
	if r.LockTTL > 0 {
		return r.LockTTL
	}
	return 2 * HTTPTimeout
}

// Open reads the token stored in secret.
func (r *Refresher) Open(ca *pipesv1.ConnectedAccount, secret *corev1.Secret) (*Token, error) {
	plain, err := r.Store.Open(ca, secret)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return ParseToken(plain)
}

// Current returns ca's token from secret (the cached credential Secret), refreshed first
// when it expires within Skew (or, with force, in any case: the leader's proactive
// refresh). newClient builds the provider's client (with the refresh's context, which
// may outlive ctx), only when a refresh is needed. A
// transient failure of the provider while the stored token is still valid returns that
// token; a refused refresh token returns ErrNeedsReauthorization. The description is
// that of the Secret the returned token is stored in.
func (r *Refresher) Current(ctx context.Context, ca *pipesv1.ConnectedAccount, secret *corev1.Secret, newClient func(context.Context) (*Client, error), force bool) (*Token, credential.Stored, error) {
	desc := credential.Describe(secret)
	if !desc.NeedsReauthorization.IsZero() {
		return nil, desc, ErrNeedsReauthorization
	}
	t, err := r.Open(ca, secret)
	if err != nil {
		return nil, desc, err
	}
	if !force && !t.ExpiresWithin(r.now(), r.skew(desc)) {
		return t, desc, nil
	}
	if at := desc.RefreshRetryAt; r.now().Before(at) {
		// A refresh failed lately: none before its backoff ends.
		if !force && !t.ExpiresWithin(r.now(), 0) {
			return t, desc, nil
		}
		return nil, desc, &RetryError{At: at, Failures: desc.RefreshFailures}
	}
	refresh := func() (any, error) { return r.refresh(ctx, ca, desc.Version, newClient, force) }
	if !force && !t.ExpiresWithin(r.now(), 0) {
		// Still valid: refresh in the background and hand this one out now, so a vend
		// never waits on the provider for a token it does not need yet.
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.lockTTL()+10*time.Second)
		refresh = func() (any, error) { return r.refresh(bg, ca, desc.Version, newClient, force) }
		ch := r.flight.DoChan(string(ca.UID), refresh)
		go func() { <-ch; cancel() }()
		return t, desc, nil
	}
	v, err, _ := r.flight.Do(string(ca.UID), refresh)
	if err != nil {
		if !force && !errors.Is(err, ErrNeedsReauthorization) && !t.ExpiresWithin(r.now(), 0) {
			return t, desc, nil // still valid: serve it; the refresh is retried after its backoff
		}
		return nil, desc, err
	}
	got := v.(refreshed)
	return got.token, got.stored, nil
}

// refreshed is a token with the description of the Secret it is stored in.
type refreshed struct {
	token  *Token
	stored credential.Stored
}

func (r *Refresher) refresh(ctx context.Context, ca *pipesv1.ConnectedAccount, seen int64, newClient func(context.Context) (*Client, error), force bool) (refreshed, error) {
	key := types.NamespacedName{Namespace: ca.Namespace, Name: credential.SecretName(ca)}
	deadline := r.now().Add(r.lockTTL() + 5*time.Second)
	for {
		var secret corev1.Secret
		if err := r.Reader.Get(ctx, key, &secret); err != nil {
			return refreshed{}, err
		}
		desc := credential.Describe(&secret)
		if !desc.NeedsReauthorization.IsZero() {
			return refreshed{}, ErrNeedsReauthorization
		}
		t, err := r.Open(ca, &secret)
		if err != nil {
			return refreshed{}, err
		}
		if desc.Version > seen || (!force && !t.ExpiresWithin(r.now(), r.skew(desc))) {
			return refreshed{t, desc}, nil // refreshed meanwhile, here or by another replica
		}
		if at := desc.RefreshRetryAt; r.now().Before(at) {
			return refreshed{}, &RetryError{At: at, Failures: desc.RefreshFailures} // failed meanwhile
		}
		if holder, until, ok := lock(&secret); ok && holder != r.Replica && r.now().Before(until) {
			if r.now().After(deadline) {
				return refreshed{}, fmt.Errorf("replica %s has been refreshing this token since before %s", holder, until.Add(-r.lockTTL()).Format(time.RFC3339))
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return refreshed{}, err
			}
			continue
		}
		locked := secret.DeepCopy()
		if locked.Annotations == nil {
			locked.Annotations = map[string]string{}
		}
		locked.Annotations[pipesv1.AnnotationRefreshing] = r.Replica + " " + r.now().Add(r.lockTTL()).UTC().Format(time.RFC3339)
		if err := r.Writer.Update(ctx, locked); apierrors.IsConflict(err) {
			continue // the Secret changed: read it again
		} else if err != nil {
			return refreshed{}, err
		}
		return r.refreshLocked(ctx, ca, locked, t, desc, newClient)
	}
}

// refreshLocked refreshes t holding the lock on secret, and stores the outcome (which
// releases the lock).
func (r *Refresher) refreshLocked(ctx context.Context, ca *pipesv1.ConnectedAccount, secret *corev1.Secret, t *Token, desc credential.Stored, newClient func(context.Context) (*Client, error)) (refreshed, error) {
	c, err := newClient(ctx)
	var next *Token
	if err == nil {
		next, err = c.Refresh(ctx, t)
	}
	if errors.Is(err, ErrInvalidGrant) {
		desc.NeedsReauthorization = r.now()
		desc.RotatedAt = time.Time{}
		plain := t.Marshal()
		defer clear(plain)
		if _, err := r.Store.Put(ctx, ca, secret, plain, desc); err != nil {
			return refreshed{}, err
		}
		return refreshed{}, ErrNeedsReauthorization
	}
	if err != nil {
		// The lock gives way to the time of the next attempt, in one write: every replica
		// (and the leader's refresh ahead of expiry, which this write wakes) waits for it.
		// Should the write fail, the lock's own expiry holds the next attempt back.
		retry := &RetryError{At: r.now().Add(r.backoff(desc.RefreshFailures + 1)), Failures: desc.RefreshFailures + 1, Cause: err}
		delete(secret.Annotations, pipesv1.AnnotationRefreshing)
		secret.Annotations[pipesv1.AnnotationRefreshRetry] = credential.FormatRefreshRetry(retry.Failures, retry.At)
		retry.At = credential.Describe(secret).RefreshRetryAt
		_ = r.Writer.Update(ctx, secret)
		return refreshed{}, retry
	}
	plain := next.Marshal()
	defer clear(plain)
	stored, err := r.Store.Put(ctx, ca, secret, plain, credential.Stored{Version: credential.NextVersion(ca, &desc), TokenExpiry: next.Expiry})
	if err != nil {
		return refreshed{}, err
	}
	return refreshed{next, stored}, nil
}

func lock(s *corev1.Secret) (holder string, until time.Time, ok bool) {
	v, found := s.Annotations[pipesv1.AnnotationRefreshing]
	if !found {
		return "", time.Time{}, false
	}
	holder, at, _ := strings.Cut(v, " ")
	until, err := time.Parse(time.RFC3339, at)
	return holder, until, err == nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
