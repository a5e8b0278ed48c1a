package backendapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/tink-crypto/tink-go/v2/tink"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/oauth"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// fuzzToken is the bearer token the fuzz targets' authenticator accepts as a
// ServiceAccount of namespace ns; any other token is accepted as a user without a
// namespace (whose calls without /namespaces/{ns} are refused with 400).
const fuzzToken = "fuzz-service-account-token"

// fuzzAuthn stands in for TokenReview: the fuzzer reaches the decoders behind it.
type fuzzAuthn struct{}

func (fuzzAuthn) Known(token string) *backendapi.Identity {
	if token == fuzzToken {
		return &backendapi.Identity{User: authnv1.UserInfo{Username: "system:serviceaccount:ns:app"}, Namespace: "ns"}
	}
	return nil
}

func (a fuzzAuthn) Authenticate(_ context.Context, token string) (*backendapi.Identity, error) {
	if id := a.Known(token); id != nil {
		return id, nil
	}
	return &backendapi.Identity{User: authnv1.UserInfo{Username: "alice"}}, nil
}

// fuzzAuthz stands in for SubjectAccessReview: everything is allowed but names holding
// "deny", so that the 403 path is reached too.
type fuzzAuthz struct{}

func (fuzzAuthz) Authorize(_ context.Context, _ *backendapi.Identity, _, _, _, name string) (bool, string, error) {
	return !strings.Contains(name, "deny"), "", nil
}

// noProviders answers every call to an OAuth provider with a refusal, so that no fuzz
// input reaches the network.
type noProviders struct{}

func (noProviders) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusBadRequest, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"error":"invalid_grant"}`))}, nil
}

// fuzzEnv is a backend API over a fake client: a Provider of each method, an enabled
// organization, and an account with a stored key, rebuilt for every input so that runs
// are repeatable.
type fuzzEnv struct {
	kek     *crypto.Keyset
	signing *widgettoken.Keyset
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	kek, err := crypto.NewKeyset()
	if err != nil {
		f.Fatal(err)
	}
	signing, err := widgettoken.NewKeyset()
	if err != nil {
		f.Fatal(err)
	}
	return &fuzzEnv{kek: kek, signing: signing}
}

func (e *fuzzEnv) server(objs ...client.Object) (*backendapi.Server, client.Client) {
	enabled := true
	b := testenv.FakeClient(append([]client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}},
		&pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}},
		&pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "github"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth,
			OAuth: &pipesv1.OAuthSpec{AuthorizationURL: "https://example.com/a", TokenURL: "https://example.com/t", ClientID: "id",
				ReturnURLs: []string{"https://app.example.com/done"}}}},
		&pipesv1.OrganizationProvider{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "openai-org"},
			Spec: pipesv1.OrganizationProviderSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, OrganizationID: "org", Enabled: &enabled}},
	}, objs...)...).WithStatusSubresource(&pipesv1.ConnectedAccount{}, &pipesv1.Provider{}, &pipesv1.OrganizationProvider{})
	c := b.Build()
	store := credential.NewStore(c, keyring.New(e.kek))
	s := &backendapi.Server{Client: c, APIReader: c, Store: store, Recorder: &events.FakeRecorder{},
		Authn: fuzzAuthn{}, Authz: fuzzAuthz{}, Widgets: widgettoken.New(e.signing, 0), Log: logr.Discard(),
		Options: backendapi.Options{RateLimit: 1e9, PreAuthRateLimit: 1e9},
		OAuth: &backendapi.OAuthFlow{
			States:      &oauth.States{Client: c, Reader: c, Namespace: "pipes-system", AEAD: func() tink.AEAD { return e.kek.AEAD() }},
			Refresher:   &oauth.Refresher{Store: store, Reader: c, Writer: c, Replica: "fuzz"},
			CallbackURL: func() string { return "https://pipes.example.com" + wire.OAuthCallbackPath },
			HTTP:        &http.Client{Transport: noProviders{}},
		}}
	return s, c
}

// connect stores credentials through h: an API key for user u of openai (and its
// organization org), an expired OAuth token for user u of github (whose refresh the
// provider refuses), so that vends, watches and disconnects reach stored credentials.
func (e *fuzzEnv) connect(t *testing.T, h http.Handler) {
	t.Helper()
	for _, r := range [][3]string{
		{"PUT", "/data-integrations/openai/api-key", `{"user_id":"u","secret":"sk-stored-before-the-input-01"}`},
		{"PUT", "/data-integrations/openai/api-key", `{"user_id":"u","organization_id":"org","secret":"sk-stored-before-the-input-02"}`},
		{"POST", "/user_management/users/u/connected_accounts/github", `{"access_token":"gho_stored_before_the_input","refresh_token":"ghr_stored","expires_at":"2000-01-01T00:00:00Z"}`},
	} {
		req := httptest.NewRequest(r[0], r[1], strings.NewReader(r[2]))
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("setting up: %s %s: %d %s", r[0], r[1], rec.Code, rec.Body)
		}
	}
}

// checkAnswer is the property every API answer has: no 5xx, and a 4xx carries a JSON
// error with a code and a message.
func checkAnswer(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%.200s: %d %.1000s", what, rec.Code, rec.Body)
	}
	if rec.Code >= 400 {
		var er wire.ErrorResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.Code == "" || er.Message == "" {
			t.Fatalf("%.200s: %d without a JSON error naming the problem: %.1000q", what, rec.Code, rec.Body)
		}
	}
}

// FuzzBackendAPI sends arbitrary methods, paths, query strings and bodies to every route
// of the backend API, authenticated and authorized by test doubles so that the input
// reaches the decoders and validation: every answer is a 2xx, a 3xx to this server, or
// a 4xx with a JSON error; never a 5xx, a panic or a hang, and never the secret sent.
func FuzzBackendAPI(f *testing.F) {
	deep := strings.Repeat("[", 100_000)
	big := `{"user_id":"u","secret":"` + strings.Repeat("k", backendapi.MaxBodyBytes) + `"}`
	for _, seed := range []struct{ method, path, query, body string }{
		{"PUT", "/data-integrations/openai/api-key", "", `{"user_id":"u","secret":"sk-fuzz-seed-key-000001"}`},
		{"PUT", "/namespaces/ns/data-integrations/openai/api-key", "", `{"user_id":"u","organization_id":"org","secret":"sk-fuzz-seed-key-000002"}`},
		{"PUT", "/data-integrations/openai/api-key", "", `{"user_id":"u","user_id":"v","secret":"sk-duplicate-keys-0003"}`},
		{"PUT", "/data-integrations/openai/api-key", "", `{"user_id":"u","secret":"sk-a","extra":1}`},
		{"PUT", "/data-integrations/openai/api-key", "", `{"user_id":"u","secret":"sk-fuzz-seed-key-000004"} trailing`},
		{"PUT", "/data-integrations/openai/api-key", "", "{\"user_id\":\"\xff\xfe\",\"secret\":\"\xc3\x28-not-utf8-0005\"}"},
		{"PUT", "/data-integrations/openai/api-key", "", big},
		{"PUT", "/data-integrations/openai/api-key", "", deep},
		{"PUT", "/data-integrations/openai/api-key", "", `{"user_id":1e999,"secret":"x"}`},
		{"PUT", "/data-integrations/deny/api-key", "", `{"user_id":"u","secret":"sk-fuzz-seed-key-000006"}`},
		{"POST", "/data-integrations/openai/credentials", "", `{"user_id":"u"}`},
		{"POST", "/data-integrations/openai/credentials", "", `{"user_id":"u","organization_id":"org"}`},
		{"POST", "/data-integrations/github/token", "", `{"user_id":"u"}`},
		{"POST", "/data-integrations/openai/token", "", `{"user_id":"u"}`},
		{"POST", "/data-integrations/missing/credentials", "", `{"user_id":"u"}`},
		{"POST", "/credentials/watch", "", `{"credentials":[{"provider":"openai","user_id":"u"}]}`},
		{"POST", "/credentials/watch", "", `{"credentials":[{"provider":"openai","user_id":"u"}],"etag":"0123","timeout_seconds":-1}`},
		{"POST", "/credentials/watch", "", `{"credentials":[{"provider":"openai","user_id":"u"}],"timeout_seconds":99999999999999999999}`},
		{"POST", "/credentials/watch", "", `{"credentials":[]}`},
		{"POST", "/credentials/watch", "", `{"credentials":[{"provider":"../x","user_id":"\u0000"}]}`},
		{"GET", "/user_management/users/u/data_providers", "limit=5&after=a", ""},
		{"GET", "/user_management/users/u/data_providers", "limit=-1", ""},
		{"GET", "/user_management/users/u/data_providers", "limit=99999999999999999999999", ""},
		{"GET", "/user_management/users/u/data_providers", "limit=%ff&after=%00&before=x&cursor=y", ""},
		{"GET", "/user_management/users/u/data_providers", "organization_id=org&organization_id=other", ""},
		{"GET", "/user_management/users/u/connected_accounts/openai", "organization_id=org", ""},
		{"GET", "/user_management/users/%ff%fe/connected_accounts/openai", "", ""},
		{"DELETE", "/user_management/users/u/connected_accounts/openai", "", ""},
		{"POST", "/user_management/users/u/connected_accounts/github", "", `{"access_token":"gho_fuzz_seed_token_0007","refresh_token":"ghr_fuzz_seed_token_0007","expires_at":"2000-01-01T00:00:00Z","scopes":["repo"]}`},
		{"POST", "/user_management/users/u/connected_accounts/github", "", `{"access_token":"gho_fuzz","expires_at":"not a time"}`},
		{"POST", "/user_management/users/u/connected_accounts/openai", "", `{"access_token":"gho_fuzz_seed_token_0008"}`},
		{"GET", "/organizations/org/data_integration_configurations", "limit=1", ""},
		{"PUT", "/organizations/org/data_integration_configurations/openai", "", `{"enabled":false}`},
		{"PUT", "/organizations/org/data_integration_configurations/github", "", `{"enabled":true,"client_id":"id","client_secret":"cs-fuzz-seed-secret-09","scopes":["a"]}`},
		{"PUT", "/organizations/org/data_integration_configurations/openai", "", `{"enabled":null}`},
		{"POST", "/widgets/token", "", `{"user_id":"u","organization_id":"org","scopes":["widgets:pipes:manage"]}`},
		{"POST", "/widgets/token", "", `{"user_id":"u","scopes":["nope"]}`},
		{"POST", "/data-integrations/github/authorize", "", `{"user_id":"u","return_to":"https://app.example.com/done"}`},
		{"POST", "/data-integrations/github/authorize", "", `{"user_id":"u","return_to":"javascript:alert(1)"}`},
		{"GET", "/namespaces/%2e%2e/user_management/users/u/data_providers", "", ""},
		{"GET", "/nowhere", "", ""},
	} {
		f.Add(seed.method, seed.path, seed.query, seed.body)
	}
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, method, path, query, body string) {
		s, _ := e.server()
		h := s.Handler()
		e.connect(t, h)
		target := path
		if query != "" {
			target += "?" + query
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, "https://pipes.example.com"+target, strings.NewReader(body))
		if err != nil || req.URL.Opaque != "" || req.URL.Host != "pipes.example.com" {
			return // not a request a server can receive
		}
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if ctx.Err() != nil {
			t.Fatalf("%s %.200q: no answer within 10 s", method, target)
		}
		what := method + " " + strings.ToValidUTF8(target, "?")
		if rec.Code == http.StatusTemporaryRedirect || rec.Code == http.StatusMovedPermanently {
			if loc := rec.Header().Get("Location"); !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
				t.Fatalf("%s redirects to %q", what, loc)
			}
			return
		}
		checkAnswer(t, what, rec)
		var sent struct {
			Secret       string `json:"secret"`
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			ClientSecret string `json:"client_secret"`
		}
		if json.Unmarshal([]byte(body), &sent) == nil {
			for _, v := range []string{sent.Secret, sent.AccessToken, sent.RefreshToken, sent.ClientSecret} {
				if len(v) >= 8 && strings.Contains(rec.Body.String(), v) {
					t.Fatalf("%s: the answer holds a submitted secret: %s", what, rec.Body)
				}
			}
		}
	})
}

// FuzzWatch sends the vend sidecar's long poll arbitrary ETags, timeouts and credentials:
// malformed ones get a 4xx. An ETag other than the current one is answered at once with
// the snapshot and the current ETag, which does not depend on the ETag sent (asked
// without one, the answer names the same); the current ETag is a long poll that waits.
func FuzzWatch(f *testing.F) {
	f.Add("", int64(0), "openai", "u", "")
	f.Add("0123456789abcdef01234567", int64(1), "openai", "u", "org")
	f.Add("\"W/etag\"", int64(-5), "github", "u", "")
	f.Add("\xff\xfe", int64(1<<40), "missing", "\x00", "")
	f.Add(strings.Repeat("e", 70_000), int64(30), "openai", "u", "")
	f.Add("*", int64(60), "openai", strings.Repeat("u", 300), "")
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, etag string, timeout int64, provider, user, org string) {
		s, _ := e.server()
		h := s.Handler()
		e.connect(t, h)
		ask := func(etag string, wait time.Duration) (*httptest.ResponseRecorder, wire.WatchResponse) {
			body, err := json.Marshal(map[string]any{"credentials": []wire.CredentialRef{{Provider: provider, UserID: user, OrganizationID: org}},
				"etag": etag, "timeout_seconds": timeout})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/credentials/watch", strings.NewReader(string(body)))
			req.Header.Set("Authorization", "Bearer "+fuzzToken)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var resp wire.WatchResponse
			if rec.Body.Len() == 0 && ctx.Err() != nil {
				return nil, resp // still waiting when the caller went away
			}
			checkAnswer(t, "watch", rec)
			if rec.Code == http.StatusOK {
				if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
					t.Fatalf("watch: 200 with %q: %v", rec.Body, err)
				}
			}
			return rec, resp
		}
		// Twice: a first vend of an expired token whose refresh is refused records that
		// on the Secret, a change of state (and of ETag) of its own.
		_, _ = ask("", 10*time.Second)
		rec, current := ask("", 10*time.Second)
		if rec == nil {
			t.Fatal("a watch without an ETag did not answer at once")
		}
		if rec.Code != http.StatusOK {
			return
		}
		if !current.Changed || current.ETag == "" || len(current.Credentials) != 1 {
			t.Fatalf("watch without an ETag: %+v", current)
		}
		if etag == current.ETag {
			if rec, resp := ask(etag, 100*time.Millisecond); rec != nil {
				t.Fatalf("watch with the current ETag answered at once: %d %+v", rec.Code, resp)
			}
			return
		}
		rec, resp := ask(etag, 10*time.Second)
		if rec == nil {
			t.Fatalf("watch with ETag %.100q (not the current one) did not answer at once", etag)
		}
		if rec.Code == http.StatusOK && (!resp.Changed || resp.ETag != current.ETag) {
			t.Fatalf("watch with ETag %.100q: %+v, want changed with ETag %q", etag, resp, current.ETag)
		}
	})
}

// FuzzOAuthCallback sends the public OAuth callback arbitrary query strings (code,
// state, error, anything else): a state that was never issued is refused with a 4xx
// page, never a 5xx or a redirect, and nothing is stored.
func FuzzOAuthCallback(f *testing.F) {
	for _, q := range []string{
		"", "code=c&state=0123456789abcdef0123456789abcdef", "error=access_denied&state=0123456789abcdef0123456789abcdef",
		"state=" + strings.Repeat("a", 32), "state=" + strings.Repeat("A", 32), "state=%ff%fe&code=%00",
		"state=a&state=b&code=1&code=2", "error=" + strings.Repeat("x", 100_000), "state=../../etc", "%zz=1&;&&=",
	} {
		f.Add(http.MethodGet, q)
	}
	f.Add(http.MethodPost, "state=x")
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, method, query string) {
		s, c := e.server()
		h := s.OAuthCallbackHandler()
		req, err := http.NewRequest(method, "https://pipes.example.com"+wire.OAuthCallbackPath+"?"+query, nil)
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code < 400 {
			t.Fatalf("callback %s %.200q: %d %.500s (no state was issued)", method, query, rec.Code, rec.Body)
		}
		var secrets corev1.SecretList
		if err := c.List(context.Background(), &secrets); err != nil {
			t.Fatal(err)
		}
		if len(secrets.Items) != 0 {
			t.Fatalf("callback %.200q stored %d Secrets", query, len(secrets.Items))
		}
	})
}

// TestFuzzOAuthCallbackIssued runs the callback with states that were issued, once each
// for a denial and a failed exchange: a 3xx to the return_to, never a 5xx.
func TestFuzzOAuthCallbackIssued(t *testing.T) {
	kek, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	signing, err := widgettoken.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	e := &fuzzEnv{kek: kek, signing: signing}
	for _, extra := range []string{"error=access_denied", "code=anything", "code=" + strings.Repeat("%ff", 1000)} {
		s, _ := e.server()
		state, err := s.OAuth.States.Begin(context.Background(), oauth.Pending{Namespace: "ns", Provider: "github", UserID: "u", ReturnTo: "https://app.example.com/done"})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		s.OAuthCallbackHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, wire.OAuthCallbackPath+"?state="+state+"&"+extra, nil))
		loc, err := url.Parse(rec.Header().Get("Location"))
		if rec.Code != http.StatusSeeOther && rec.Code != http.StatusFound || err != nil || loc.Host != "app.example.com" || loc.Query().Get("status") != "error" {
			t.Fatalf("%s: %d %q %s", extra, rec.Code, rec.Header().Get("Location"), rec.Body)
		}
	}
}
