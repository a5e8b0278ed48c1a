package widgettoken

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/jwt"
)

func newTokens(t *testing.T) *Tokens {
	t.Helper()
	ks, err := NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	return New(ks, 0)
}

func TestIssueVerifyBindsUserOrganizationNamespaceAndScopes(t *testing.T) {
	tokens := newTokens(t)
	token, issued, err := tokens.Issue(Claims{Namespace: "team-a", UserID: "user_1", OrganizationID: "org_1", Scopes: []string{ScopeManage}})
	if err != nil {
		t.Fatal(err)
	}
	if got := issued.ExpiresAt.Sub(issued.IssuedAt); got != DefaultTTL {
		t.Fatalf("lifetime %s, want %s", got, DefaultTTL)
	}
	c, err := tokens.Verify(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != "team-a" || c.UserID != "user_1" || c.OrganizationID != "org_1" || !c.Manage() || c.ID == "" || !c.ExpiresAt.Equal(issued.ExpiresAt) {
		t.Fatalf("claims %+v", c)
	}
	// Without an organization, the admin scope grants nothing.
	token, _, err = tokens.Issue(Claims{Namespace: "team-a", UserID: "user_1", Scopes: []string{ScopeManage}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tokens.Verify(context.Background(), token); err != nil || c.Manage() {
		t.Fatalf("manage without organization: %v %v", c, err)
	}
}

func TestIssueRefusesUnknownScopesAndMissingIdentity(t *testing.T) {
	tokens := newTokens(t)
	if _, _, err := tokens.Issue(Claims{Namespace: "a", UserID: "u", Scopes: []string{"widgets:users-table:manage"}}); err == nil || !strings.Contains(err.Error(), ScopeManage) {
		t.Fatalf("unknown scope: %v", err)
	}
	if _, _, err := tokens.Issue(Claims{Namespace: "a"}); err == nil {
		t.Fatal("a token without a user was issued")
	}
}

func TestVerifyExpiry(t *testing.T) {
	tokens := newTokens(t)
	now := time.Now()
	tokens.Now = func() time.Time { return now }
	tokens.TTL = time.Minute
	token, _, err := tokens.Issue(Claims{Namespace: "a", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute + ClockSkew/2) // within the skew: still valid
	if _, err := tokens.Verify(context.Background(), token); err != nil {
		t.Fatalf("within clock skew: %v", err)
	}
	now = now.Add(ClockSkew)
	if _, err := tokens.Verify(context.Background(), token); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: %v", err)
	}
}

func TestVerifyRefusesTamperedForeignAndOtherAudienceTokens(t *testing.T) {
	tokens := newTokens(t)
	token, _, err := tokens.Issue(Claims{Namespace: "team-a", UserID: "user_1"})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	// Another user in the payload, signature unchanged.
	forged := newTokens(t)
	other, _, _ := forged.Issue(Claims{Namespace: "team-a", UserID: "user_2"})
	otherParts := strings.Split(other, ".")
	swapped := parts[0] + "." + otherParts[1] + "." + parts[2]
	// Signed by a keyset this operator does not have.
	for name, bad := range map[string]string{
		"payload swapped": swapped, "signed elsewhere": other, "truncated": token[:len(token)-3],
		"empty": "", "garbage": "a.b.c", "oversized": strings.Repeat("a", MaxTokenBytes+1),
		"alg none": parts[0] + "." + parts[1] + ".",
	} {
		if _, err := tokens.Verify(context.Background(), bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	// Same key, but not a widget token: another audience.
	aud, iss, typ := "pipes.dev", Issuer, TypeHeader
	sub := "user_1"
	exp := time.Now().Add(time.Hour)
	raw, err := jwt.NewRawJWT(&jwt.RawJWTOptions{Audience: &aud, Issuer: &iss, TypeHeader: &typ, Subject: &sub, ExpiresAt: &exp,
		CustomClaims: map[string]any{"pipes.dev/namespace": "team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	wrongAudience, err := tokens.Keyset().signer.SignAndEncode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Verify(context.Background(), wrongAudience); !errors.Is(err, ErrInvalid) {
		t.Fatalf("another audience: %v", err)
	}
}

func TestRotationKeepsIssuedTokensValidUntilPruned(t *testing.T) {
	tokens := newTokens(t)
	old, _, err := tokens.Issue(Claims{Namespace: "a", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := tokens.Keyset().Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if !tokens.Update(rotated) {
		t.Fatal("rotation did not change the primary key")
	}
	fresh, _, err := tokens.Issue(Claims{Namespace: "a", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := keyIDOf(fresh); id != rotated.PrimaryKeyID() {
		t.Fatalf("new token signed with key %d, want the new primary %d", id, rotated.PrimaryKeyID())
	}
	for _, tok := range []string{old, fresh} {
		if _, err := tokens.Verify(context.Background(), tok); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	}
	pruned, removed, err := rotated.Prune(func(uint32) bool { return false })
	if err != nil || len(removed) != 1 {
		t.Fatalf("prune: %v %v", removed, err)
	}
	tokens.Update(pruned)
	if _, err := tokens.Verify(context.Background(), old); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token of a pruned key: %v", err)
	}
	if _, err := tokens.Verify(context.Background(), fresh); err != nil {
		t.Fatalf("token of the primary key after prune: %v", err)
	}
}

// A follower whose watch has not delivered a rotation yet reloads the keyset once
// for a token naming a key it does not hold.
func TestVerifyReloadsForAKeyRotatedElsewhere(t *testing.T) {
	leader := newTokens(t)
	follower := New(leader.Keyset(), 0)
	rotated, err := leader.Keyset().Rotate()
	if err != nil {
		t.Fatal(err)
	}
	leader.Update(rotated)
	token, _, err := leader.Issue(Claims{Namespace: "a", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := follower.Verify(context.Background(), token); !errors.Is(err, ErrInvalid) {
		t.Fatalf("without Reload: %v", err)
	}
	reloads := 0
	follower.Reload = func(context.Context) (*Keyset, error) { reloads++; return rotated, nil }
	if _, err := follower.Verify(context.Background(), token); err != nil {
		t.Fatalf("with Reload: %v", err)
	}
	if _, err := follower.Verify(context.Background(), token); err != nil || reloads != 1 {
		t.Fatalf("second verify: %v, %d reloads", err, reloads)
	}
}

func TestKeysetRoundTrip(t *testing.T) {
	ks, err := NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ks.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKeyset(raw)
	if err != nil || back.PrimaryKeyID() != ks.PrimaryKeyID() {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseKeyset([]byte(`{"primaryKeyId":1,"key":[]}`)); err == nil {
		t.Fatal("an empty keyset parsed")
	}
}

func FuzzVerify(f *testing.F) {
	ks, err := NewKeyset()
	if err != nil {
		f.Fatal(err)
	}
	tokens := New(ks, 0)
	token, _, err := tokens.Issue(Claims{Namespace: "a", UserID: "u", OrganizationID: "o", Scopes: []string{ScopeManage}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(token)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := tokens.Verify(context.Background(), s)
		if err == nil && s != token {
			// Only a token this keyset signed verifies: any other accepted string would be a forgery.
			if c.UserID != "u" || c.Namespace != "a" {
				t.Fatalf("forged token accepted: %+v", c)
			}
		}
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
