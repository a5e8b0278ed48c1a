package widgettoken

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tink-crypto/tink-go/v2/jwt"
)

const (
	// ScopeManage lets an organization admin enable and disable providers for the
	// token's organization, as the hosted product names it.
	ScopeManage = "widgets:pipes:manage"

	// Audience is every widget token's "aud". With Issuer and TypeHeader it is fixed: a
	// token made for anything else (a ServiceAccount token, another product's JWT) never
	// verifies as a widget token.
	Audience = "pipes.dev/widget"
	// Issuer is every widget token's "iss".
	Issuer = "pipes-operator"
	// TypeHeader is every widget token's "typ" header.
	TypeHeader = "pipes-widget+jwt"

	// DefaultTTL is how long a token is valid unless configured otherwise.
	DefaultTTL = time.Hour
	// MaxTTL bounds the configured lifetime: the leader rotates the signing key at least
	// twice as often as that, and drops a retired key once every token it signed expired.
	MaxTTL = 12 * time.Hour
	// ClockSkew is the difference between replicas' clocks a token's expiry tolerates.
	ClockSkew = 30 * time.Second
	// MaxTokenBytes bounds what is parsed; a real token is under 1 KiB.
	MaxTokenBytes = 4096
)

// KnownScopes are the scopes a token may carry.
var KnownScopes = []string{ScopeManage}

// Claims are what a token binds: one user (in an organization, or none) in one namespace,
// with scopes. A token acts on that user's connections only.
type Claims struct {
	Namespace      string
	UserID         string
	OrganizationID string
	Scopes         []string
	ID             string
	IssuedAt       time.Time
	ExpiresAt      time.Time
}

// Manage reports whether the token may enable and disable providers for its
// organization: it has ScopeManage and an organization.
func (c *Claims) Manage() bool {
	return c.OrganizationID != "" && slices.Contains(c.Scopes, ScopeManage)
}

// payload is the JWT's JSON: registered claims plus the binding, namespaced.
type payload struct {
	Subject        string   `json:"sub"`
	JWTID          string   `json:"jti"`
	IssuedAt       float64  `json:"iat"`
	ExpiresAt      float64  `json:"exp"`
	Namespace      string   `json:"pipes.dev/namespace"`
	OrganizationID string   `json:"pipes.dev/organization_id,omitempty"`
	Scopes         []string `json:"pipes.dev/scopes,omitempty"`
}

// Errors of Verify. Their messages say what to do, never quote the token.
var (
	// ErrExpired: the token was valid once; the application should mint a new one.
	ErrExpired = errors.New("the widget session expired: the application must request a new widget token (POST /widgets/token) and set it on the widget")
	// ErrInvalid: not a token this operator signed for the widget, or altered.
	ErrInvalid = errors.New("the widget token is not valid (malformed, altered, signed by another key, or not a widget token): the application must request a new one (POST /widgets/token)")
)

// Tokens issues and verifies widget tokens with the current keyset. It is safe for
// concurrent use; Update swaps the keyset when its Secret changes.
type Tokens struct {
	// TTL is the lifetime of issued tokens (DefaultTTL when 0).
	TTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Reload, when set, reads the keyset afresh; Verify calls it (at most once a second)
	// for a token signed with a key this replica does not hold yet: one just rotated in by
	// the leader, whose Secret's change has not reached this replica's watch.
	Reload func(ctx context.Context) (*Keyset, error)

	current    atomic.Pointer[Keyset]
	lastReload atomic.Int64
}

// New returns Tokens signing with ks.
func New(ks *Keyset, ttl time.Duration) *Tokens {
	t := &Tokens{TTL: ttl}
	t.current.Store(ks)
	return t
}

// Keyset is the keyset in use.
func (t *Tokens) Keyset() *Keyset { return t.current.Load() }

// Update replaces the keyset and reports whether the primary key changed.
func (t *Tokens) Update(ks *Keyset) bool {
	return t.current.Swap(ks).PrimaryKeyID() != ks.PrimaryKeyID()
}

func (t *Tokens) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Tokens) ttl() time.Duration {
	if t.TTL <= 0 {
		return DefaultTTL
	}
	return t.TTL
}

// Issue signs a token binding c (Namespace, UserID, OrganizationID, Scopes; the rest is
// set here) and returns it with the claims as issued.
func (t *Tokens) Issue(c Claims) (string, Claims, error) {
	if c.Namespace == "" || c.UserID == "" {
		return "", c, errors.New("widget tokens: namespace and user are required")
	}
	if err := CheckScopes(c.Scopes); err != nil {
		return "", c, err
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", c, err
	}
	c.ID = base64.RawURLEncoding.EncodeToString(id[:])
	c.IssuedAt = t.now().Truncate(time.Second)
	c.ExpiresAt = c.IssuedAt.Add(t.ttl())
	custom := map[string]any{"pipes.dev/namespace": c.Namespace}
	if c.OrganizationID != "" {
		custom["pipes.dev/organization_id"] = c.OrganizationID
	}
	if len(c.Scopes) > 0 {
		scopes := make([]any, len(c.Scopes))
		for i, s := range c.Scopes {
			scopes[i] = s
		}
		custom["pipes.dev/scopes"] = scopes
	}
	aud, iss, typ := Audience, Issuer, TypeHeader
	raw, err := jwt.NewRawJWT(&jwt.RawJWTOptions{
		Audience: &aud, Issuer: &iss, TypeHeader: &typ, Subject: &c.UserID, JWTID: &c.ID,
		IssuedAt: &c.IssuedAt, ExpiresAt: &c.ExpiresAt, CustomClaims: custom,
	})
	if err != nil {
		return "", c, fmt.Errorf("widget tokens: %w", err)
	}
	token, err := t.Keyset().signer.SignAndEncode(raw)
	if err != nil {
		return "", c, fmt.Errorf("widget tokens: sign: %w", err)
	}
	return token, c, nil
}

// CheckScopes refuses scopes other than KnownScopes, naming them.
func CheckScopes(scopes []string) error {
	for _, s := range scopes {
		if !slices.Contains(KnownScopes, s) {
			return fmt.Errorf("unknown widget scope %q: the known scopes are %s (or none, for a user's own connections)", s, strings.Join(KnownScopes, ", "))
		}
	}
	return nil
}

// Verify checks token's signature (any key of the keyset), type, issuer, audience and
// expiry, and returns its claims. Errors are ErrExpired or ErrInvalid.
func (t *Tokens) Verify(ctx context.Context, token string) (*Claims, error) {
	if len(token) > MaxTokenBytes || strings.Count(token, ".") != 2 {
		return nil, ErrInvalid
	}
	ks := t.Keyset()
	if id, ok := keyIDOf(token); ok && !ks.Has(id) {
		ks = t.reload(ctx, id, ks)
	}
	now := t.now()
	aud, iss, typ := Audience, Issuer, TypeHeader
	validator, err := jwt.NewValidator(&jwt.ValidatorOpts{
		ExpectedAudience: &aud, ExpectedIssuer: &iss, ExpectedTypeHeader: &typ,
		ClockSkew: ClockSkew, FixedNow: now,
	})
	if err != nil {
		return nil, err
	}
	verified, err := ks.verifier.VerifyAndDecode(token, validator)
	if err != nil {
		if jwt.IsExpirationErr(err) {
			return nil, ErrExpired
		}
		return nil, ErrInvalid
	}
	raw, err := verified.JSONPayload()
	if err != nil {
		return nil, ErrInvalid
	}
	var p payload
	if err := json.Unmarshal(raw, &p); err != nil || p.Subject == "" || p.Namespace == "" || p.JWTID == "" {
		return nil, ErrInvalid
	}
	if CheckScopes(p.Scopes) != nil {
		return nil, ErrInvalid
	}
	return &Claims{
		Namespace: p.Namespace, UserID: p.Subject, OrganizationID: p.OrganizationID, Scopes: p.Scopes, ID: p.JWTID,
		IssuedAt: time.Unix(int64(p.IssuedAt), 0), ExpiresAt: time.Unix(int64(p.ExpiresAt), 0),
	}, nil
}

// reload fetches the keyset once a second at most when a token names key id unknown here.
func (t *Tokens) reload(ctx context.Context, id uint32, ks *Keyset) *Keyset {
	if t.Reload == nil {
		return ks
	}
	now := t.now().UnixNano()
	last := t.lastReload.Load()
	if now-last < int64(time.Second) || !t.lastReload.CompareAndSwap(last, now) {
		return ks
	}
	fresh, err := t.Reload(ctx)
	if err != nil || !fresh.Has(id) {
		return ks
	}
	t.current.Store(fresh)
	return fresh
}

// keyIDOf reads the Tink key id from the token's "kid" header (base64url of the id's
// four big-endian bytes), without verifying anything.
func keyIDOf(token string) (uint32, bool) {
	header, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return 0, false
	}
	var h struct {
		KID string `json:"kid"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return 0, false
	}
	id, err := base64.RawURLEncoding.DecodeString(h.KID)
	if err != nil || len(id) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(id), true
}
