package oauth

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/scheme"
)

func provider(mode pipesv1.OAuthCredentialsMode) *pipesv1.Provider {
	return &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "github"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth,
		OAuth: &pipesv1.OAuthSpec{AuthorizationURL: "https://example.com/authorize", TokenURL: "https://example.com/token", CredentialsMode: mode,
			ClientID: "app", ClientSecretRef: &pipesv1.SecretKeyReference{Name: "client", Key: "secret"}, Scopes: []string{"repo", "read:user"},
			AuthorizationParams: map[string]string{"access_type": "offline"}}}}
}

func secret(optedIn bool) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "client"}, Data: map[string][]byte{"secret": []byte("s3cret")}}
	if optedIn {
		s.Labels = map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}
	}
	return s
}

func TestNewClientReadsOnlyOptedInSecretsAndNarrowsScopes(t *testing.T) {
	ctx := context.Background()
	notOptedIn := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(secret(false)).Build()
	if _, err := NewClient(ctx, notOptedIn, provider(""), nil, "https://cb", nil); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("a client secret not opted in: %v", err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(secret(true)).Build()
	cl, err := NewClient(ctx, c, provider(""), nil, "https://cb", nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cl.AuthCodeURL("state", NewVerifier()))
	q := u.Query()
	if q.Get("scope") != "repo read:user" || q.Get("code_challenge_method") != "S256" || q.Get("access_type") != "offline" || q.Get("redirect_uri") != "https://cb" {
		t.Fatalf("authorization URL %s", u)
	}
	org := &pipesv1.OrganizationProvider{Spec: pipesv1.OrganizationProviderSpec{Scopes: []string{"repo", "admin:org"}}}
	if got := RequestedScopes(provider(""), org); len(got) != 1 || got[0] != "repo" {
		t.Fatalf("an organization's scopes widen the provider's: %v", got)
	}
	noPKCE := provider("")
	noPKCE.Spec.OAuth.PKCE = ptr.To(false)
	cl, _ = NewClient(ctx, c, noPKCE, nil, "https://cb", nil)
	if u, _ := url.Parse(cl.AuthCodeURL("state", NewVerifier())); u.Query().Has("code_challenge") {
		t.Fatal("PKCE sent although turned off")
	}
	if _, err := NewClient(ctx, c, provider(pipesv1.OAuthCredentialsOrganization), nil, "https://cb", nil); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("organization credentials mode without the organization's client: %v", err)
	}
}

func TestTokenScopes(t *testing.T) {
	granted := (&oauth2.Token{AccessToken: "a"}).WithExtra(map[string]any{"scope": "repo,read:user"})
	tok := fromOAuth2(granted, []string{"repo", "gist"}, nil)
	if len(tok.Scopes) != 2 || tok.Scopes[1] != "read:user" {
		t.Fatalf("granted scopes %v", tok.Scopes)
	}
	if missing := tok.MissingScopes([]string{"repo", "gist"}); len(missing) != 1 || missing[0] != "gist" {
		t.Fatalf("missing %v", missing)
	}
	refreshed := fromOAuth2(&oauth2.Token{AccessToken: "b"}, nil, tok)
	if refreshed.RefreshToken != tok.RefreshToken || len(refreshed.Scopes) != 2 {
		t.Fatalf("a refresh without scope or refresh token loses them: %+v", refreshed)
	}
	back, err := ParseToken(refreshed.Marshal())
	if err != nil || back.AccessToken != "b" {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseToken([]byte(`{"refresh_token":"r"}`)); err == nil {
		t.Fatal("a token without an access token parsed")
	}
}

func TestStatesAreSpentOnceAndExpire(t *testing.T) {
	ctx := context.Background()
	ks, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).Build()
	states := &States{Client: c, Reader: c, Namespace: "pipes-system", AEAD: func() tink.AEAD { return ks.AEAD() }}
	state, err := states.Begin(ctx, Pending{Namespace: "ns", Provider: "github", UserID: "u", Verifier: "v"})
	if err != nil {
		t.Fatal(err)
	}
	var list corev1.SecretList
	if err := c.List(ctx, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("%v %d", err, len(list.Items))
	}
	if string(list.Items[0].Data["state"]) == "" || bytes.Contains(list.Items[0].Data["state"], []byte(`"verifier"`)) {
		t.Fatal("the state Secret holds the binding unencrypted")
	}
	got, err := states.Take(ctx, state)
	if err != nil || got.UserID != "u" || got.Verifier != "v" {
		t.Fatalf("take: %+v %v", got, err)
	}
	if _, err := states.Take(ctx, state); !errors.Is(err, ErrStateUnknown) {
		t.Fatalf("replay: %v", err)
	}
	for _, bad := range []string{"", "zz", state + "0", "../x"} {
		if _, err := states.Take(ctx, bad); !errors.Is(err, ErrStateUnknown) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	old := *states
	old.Now = func() time.Time { return time.Now().Add(-StateTTL - time.Minute) }
	expired, err := old.Begin(ctx, Pending{Namespace: "ns", Provider: "github", UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	abandoned, err := old.Begin(ctx, Pending{Namespace: "ns", Provider: "github", UserID: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := states.Take(ctx, expired); !errors.Is(err, ErrStateExpired) || p == nil || p.UserID != "u" {
		t.Fatalf("expired: %+v %v", p, err)
	}
	if n, err := states.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep removed %d (%v), want the abandoned one", n, err)
	}
	if _, err := states.Take(ctx, abandoned); !errors.Is(err, ErrStateUnknown) {
		t.Fatalf("a swept state: %v", err)
	}
}

// A token living 20 s is refreshed in its last 5 s, not on every vend (which, with the
// watch waking sidecars on every refresh, would refresh without end).
func TestSkewFollowsTheTokensLifetime(t *testing.T) {
	now := time.Now()
	r := &Refresher{}
	short := credential.Stored{RotatedAt: now, TokenExpiry: now.Add(20 * time.Second)}
	if got := r.skew(short); got != 5*time.Second {
		t.Fatalf("skew of a 20 s token %s, want 5s", got)
	}
	long := credential.Stored{RotatedAt: now, TokenExpiry: now.Add(time.Hour)}
	if got := r.skew(long); got != DefaultSkew {
		t.Fatalf("skew of an hour's token %s, want %s", got, DefaultSkew)
	}
	r.Skew = time.Second
	if got := r.skew(long); got != time.Second {
		t.Fatalf("a set skew is not used: %s", got)
	}
}

// TestClientAuthenticationAndRefreshURL checks what the provider receives: the client's
// credentials in the Authorization header (default) or the form body ("Body"), and
// refreshes sent to spec.oauth.refreshURL when set, exchanges to the token URL.
func TestClientAuthenticationAndRefreshURL(t *testing.T) {
	type seen struct {
		path, basicID, basicSecret, formID, formSecret, grant string
	}
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		id, sec, _ := r.BasicAuth()
		got = append(got, seen{r.URL.Path, id, sec, r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), r.PostForm.Get("grant_type")})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"at","token_type":"Bearer","refresh_token":"rt2","expires_in":3600}`))
	}))
	defer srv.Close()
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(secret(true)).Build()
	for _, tc := range []struct {
		auth       pipesv1.OAuthClientAuthentication
		refreshURL string
		want       []seen
	}{
		{"", "", []seen{
			{"/token", "app", "s3cret", "", "", "authorization_code"}, {"/token", "app", "s3cret", "", "", "refresh_token"}}},
		{pipesv1.OAuthClientAuthBody, srv.URL + "/refresh", []seen{
			{"/token", "", "", "app", "s3cret", "authorization_code"}, {"/refresh", "", "", "app", "s3cret", "refresh_token"}}},
	} {
		got = nil
		p := provider("")
		p.Spec.OAuth.TokenURL, p.Spec.OAuth.RefreshURL, p.Spec.OAuth.ClientAuthentication = srv.URL+"/token", tc.refreshURL, tc.auth
		cl, err := NewClient(context.Background(), c, p, nil, "https://cb", srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		tok, err := cl.Exchange(context.Background(), "code", NewVerifier())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Refresh(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("client authentication %q, refresh URL %q: the provider saw %+v, want %+v", tc.auth, tc.refreshURL, got, tc.want)
		}
	}
}
