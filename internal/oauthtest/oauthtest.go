// Package oauthtest runs an in-process OAuth 2.0 authorization server for the
// tests of the operator's OAuth client side. It owns one confidential client,
// one redirect URI and one user whose consent is automatic, and offers the
// authorization code grant (optionally with PKCE S256 required), the refresh
// token grant (optionally rotating) and an RFC 7009 revocation endpoint, plus
// knobs to make the server misbehave (deny consent, fail or slow the token
// endpoint, revoke every refresh token) and counters to check what clients did:
// Stats, the arrival time of every token request (TokenRequestTimes, for request
// rates) and when each rotated refresh token was spent (RefreshedAt). Issue
// mints token pairs through the library's authorization code grant without
// the HTTP round trips, for tests that need many accounts' tokens at once.
//
// The grants, code and PKCE verification and refresh token logic are those of
// github.com/go-oauth2/oauth2/v4 with its in-memory token store; this package
// only configures the library, brings its error responses in line with
// RFC 6749 and wraps its handlers with the test knobs.
package oauthtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
)

// Options configure a Server.
type Options struct {
	ClientID, ClientSecret string
	// RedirectURL is the only redirect URI accepted (exact match).
	RedirectURL string
	// AccessTokenTTL is the lifetime of access tokens (1h when 0). expires_in
	// is whole seconds, and golang.org/x/oauth2 treats 0 as "never expires".
	AccessTokenTTL time.Duration
	// RotateRefreshTokens makes refresh tokens single-use: a refresh returns a
	// new refresh token and the one presented stops working.
	RotateRefreshTokens bool
	// RequirePKCE refuses authorization requests without an S256
	// code_challenge and token requests without a code_verifier.
	RequirePKCE bool
	// User is whom the automatic consent authorizes ("user" when empty).
	User string
	// AllowedScopes, when set, are the scopes the client may ask for: a request
	// with any other scope is refused (invalid_scope); one without scope gets
	// all of them. Otherwise any scope is granted as requested.
	AllowedScopes []string
	// TLS, when set, serves HTTPS with this certificate; Listen is the address to
	// listen on (default 127.0.0.1:0), e.g. the node's address for pods to reach it.
	TLS    *tls.Certificate
	Listen string
}

// Stats counts what the server saw.
type Stats struct {
	Authorizations   int // authorization codes issued
	TokenRequests    int // requests to the token endpoint, failed ones included
	CodeExchanges    int // successful authorization_code grants
	Refreshes        int // successful refresh_token grants
	DoubleSpends     int // refresh requests with a refresh token already spent by rotation
	FailuresInjected int // token requests answered by FailTokenEndpoint
	Issued           int // token pairs minted by Issue (no token request)
}

// Issued is a token pair minted by Issue.
type Issued struct {
	AccessToken, RefreshToken string
	Expiry                    time.Time
}

// Server is a running authorization server.
type Server struct {
	URL string // base URL, http://127.0.0.1:port

	opts    Options
	srv     *server.Server
	manager *manage.Manager
	tokens  *tokenStore
	tokenMu sync.Mutex // serializes token requests, so a refresh token is spent once

	mu            sync.Mutex
	denied        bool
	failStatus    int
	failLeft      int
	delay         time.Duration
	lastAuthorize url.Values
	stats         Stats
	requestTimes  []time.Time // arrival of every token request
}

// T is what Start needs of a test: *testing.T, or Ginkgo's GinkgoT().
type T interface {
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// Start starts a server that is closed when t's test ends.
func Start(t T, o Options) *Server {
	if o.User == "" {
		o.User = "user"
	}
	ttl := o.AccessTokenTTL
	if ttl == 0 {
		ttl = time.Hour
	}
	s := &Server{opts: o}

	mem, err := store.NewMemoryTokenStore()
	if err != nil {
		t.Fatalf("oauthtest: token store: %v", err)
	}
	s.tokens = &tokenStore{TokenStore: mem, issued: map[string]bool{}, spent: map[string]time.Time{}}
	clients := store.NewClientStore()
	if err := clients.Set(o.ClientID, &models.Client{ID: o.ClientID, Secret: o.ClientSecret, Domain: o.RedirectURL}); err != nil {
		t.Fatalf("oauthtest: client store: %v", err)
	}

	m := manage.NewDefaultManager()
	m.MapTokenStorage(s.tokens)
	m.MapClientStorage(clients)
	// Refresh tokens do not expire; access tokens last ttl, also once refreshed.
	m.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: ttl, IsGenerateRefresh: true})
	m.SetRefreshTokenCfg(&manage.RefreshingConfig{
		AccessTokenExp:     ttl,
		IsGenerateRefresh:  o.RotateRefreshTokens,
		IsRemoveRefreshing: o.RotateRefreshTokens,
	})
	// The default only checks that the redirect host ends with the client's.
	m.SetValidateURIHandler(func(registered, redirect string) error {
		if redirect != registered {
			return errors.ErrInvalidRedirectURI
		}
		return nil
	})
	s.manager = m

	cfg := server.NewConfig()
	cfg.AllowedResponseTypes = []oauth2.ResponseType{oauth2.Code}
	cfg.AllowedGrantTypes = []oauth2.GrantType{oauth2.AuthorizationCode, oauth2.Refreshing}
	if o.RequirePKCE {
		cfg.ForcePKCE = true
		cfg.AllowedCodeChallengeMethods = []oauth2.CodeChallengeMethod{oauth2.CodeChallengeS256}
	} // else "plain" must stay allowed: it is the method the library assumes without code_challenge.
	srv := server.NewServer(cfg, m)
	srv.ClientInfoHandler = s.authenticateClient
	srv.UserAuthorizationHandler = func(http.ResponseWriter, *http.Request) (string, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.denied {
			return "", errors.ErrAccessDenied
		}
		return o.User, nil
	}
	srv.AuthorizeScopeHandler = func(_ http.ResponseWriter, r *http.Request) (string, error) {
		if r.FormValue("scope") == "" {
			return strings.Join(o.AllowedScopes, " "), nil
		}
		return "", nil // keep the requested scope, checked by ClientScopeHandler
	}
	srv.ClientScopeHandler = func(tgr *oauth2.TokenGenerateRequest) (bool, error) {
		return len(o.AllowedScopes) == 0 || subset(tgr.Scope, o.AllowedScopes), nil
	}
	srv.RefreshingScopeHandler = func(tgr *oauth2.TokenGenerateRequest, granted string) (bool, error) {
		return subset(tgr.Scope, strings.Fields(granted)), nil
	}
	// Errors the library has no OAuth error code for would be server_error.
	srv.InternalErrorHandler = func(err error) *errors.Response {
		switch err {
		case errors.ErrMissingCodeVerifier, errors.ErrInvalidRedirectURI, errors.ErrInvalidAuthorizeCode,
			errors.ErrInvalidRefreshToken, errors.ErrExpiredRefreshToken:
			return &errors.Response{Error: errors.ErrInvalidGrant, Description: err.Error(), StatusCode: http.StatusBadRequest}
		}
		t.Logf("oauthtest: internal error: %v", err)
		return nil
	}
	// The library answers invalid_grant, unauthorized_client and
	// unsupported_grant_type with 401; RFC 6749 section 5.2 wants 400 for all but
	// invalid_client.
	srv.ResponseErrorHandler = func(re *errors.Response) {
		switch {
		case re.Error.Error() == "invalid_client":
			re.StatusCode = http.StatusUnauthorized
			re.SetHeader("WWW-Authenticate", `Basic realm="oauthtest"`)
		case re.StatusCode >= 400 && re.StatusCode < 500:
			re.StatusCode = http.StatusBadRequest
		}
	}
	s.srv = srv

	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", s.authorize)
	mux.HandleFunc("/token", s.token)
	mux.HandleFunc("/revoke", s.revoke)
	hs := httptest.NewUnstartedServer(mux)
	if o.Listen != "" {
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			t.Fatalf("oauthtest: listen on %s: %v", o.Listen, err)
		}
		_ = hs.Listener.Close()
		hs.Listener = ln
	}
	if o.TLS != nil {
		hs.TLS = &tls.Config{Certificates: []tls.Certificate{*o.TLS}, MinVersion: tls.VersionTLS12}
		hs.StartTLS()
	} else {
		hs.Start()
	}
	t.Cleanup(hs.Close)
	s.URL = hs.URL
	return s
}

// AuthURL is the authorization endpoint.
func (s *Server) AuthURL() string { return s.URL + "/authorize" }

// TokenURL is the token endpoint.
func (s *Server) TokenURL() string { return s.URL + "/token" }

// RevokeURL is the RFC 7009 revocation endpoint.
func (s *Server) RevokeURL() string { return s.URL + "/revoke" }

// Deny makes authorizations, until Deny(false), redirect with
// error=access_denied as when the user refuses consent.
func (s *Server) Deny(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied = deny
}

// FailTokenEndpoint makes the next n token requests answer status with an
// OAuth error body (and Retry-After: 1 for 429 and 503).
func (s *Server) FailTokenEndpoint(status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failStatus, s.failLeft = status, n
}

// SlowTokenEndpoint delays every token response by d (0 to stop).
func (s *Server) SlowTokenEndpoint(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// RevokeRefreshTokens invalidates every refresh token issued so far: using one
// answers invalid_grant. Access tokens stay valid until they expire.
func (s *Server) RevokeRefreshTokens() {
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	s.tokens.revokeAll()
}

// ValidAccessToken reports whether token is a current access token.
func (s *Server) ValidAccessToken(token string) bool {
	_, err := s.manager.LoadAccessToken(context.Background(), token)
	return err == nil
}

// Issue mints n token pairs for the server's user with scope, as n
// authorizations each followed by its code exchange would, through the same
// library calls but without HTTP: the refresh tokens are real ones, spent
// (and rotated) at the token endpoint like any other. Every pair's access
// token expires AccessTokenTTL after its creation; Expiry says when.
func (s *Server) Issue(n int, scope string) ([]Issued, error) {
	if len(s.opts.AllowedScopes) > 0 && !subset(scope, s.opts.AllowedScopes) {
		return nil, errors.ErrInvalidScope
	}
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	ctx := context.Background()
	out := make([]Issued, 0, n)
	for range n {
		tgr := &oauth2.TokenGenerateRequest{ClientID: s.opts.ClientID, ClientSecret: s.opts.ClientSecret,
			RedirectURI: s.opts.RedirectURL, UserID: s.opts.User, Scope: scope}
		code, err := s.manager.GenerateAuthToken(ctx, oauth2.Code, tgr)
		if err != nil {
			return out, err
		}
		tgr.Code = code.GetCode()
		ti, err := s.manager.GenerateAccessToken(ctx, oauth2.AuthorizationCode, tgr)
		if err != nil {
			return out, err
		}
		out = append(out, Issued{AccessToken: ti.GetAccess(), RefreshToken: ti.GetRefresh(),
			Expiry: ti.GetAccessCreateAt().Add(ti.GetAccessExpiresIn())})
		s.count(func(st *Stats) { st.Issued++ })
	}
	return out, nil
}

// TokenRequestTimes returns when each token request arrived (failed and
// injected failures included), in order of arrival.
func (s *Server) TokenRequestTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requestTimes)
}

// RefreshedAt says when refresh token was spent by a successful rotating
// refresh (false: it was not, or rotation is off).
func (s *Server) RefreshedAt(refreshToken string) (time.Time, bool) {
	return s.tokens.spentAt(refreshToken)
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// LastAuthorize returns the parameters of the last authorization request.
func (s *Server) LastAuthorize() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneValues(s.lastAuthorize)
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

// authenticateClient takes the client credentials from HTTP Basic or the body,
// and checks them: the library checks the secret for the code grant only.
func (s *Server) authenticateClient(r *http.Request) (string, string, error) {
	id, secret, ok := r.BasicAuth()
	if ok { // RFC 6749 section 2.3.1: form-encoded before Basic encoding
		id, secret = unescape(id), unescape(secret)
	} else {
		id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
	}
	if id != s.opts.ClientID || secret != s.opts.ClientSecret {
		return "", "", errors.ErrInvalidClient
	}
	return id, secret, nil
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	s.mu.Lock()
	s.lastAuthorize = cloneValues(r.Form)
	s.mu.Unlock()
	// RFC 6749 section 4.1.2.1: never redirect for an unknown client or
	// redirect URI. The library would redirect to whatever it was given.
	if r.Form.Get("client_id") != s.opts.ClientID {
		http.Error(w, "oauthtest: unknown client_id", http.StatusBadRequest)
		return
	}
	switch r.Form.Get("redirect_uri") {
	case s.opts.RedirectURL:
	case "": // the library would redirect errors to "?error=…"
		r.Form.Set("redirect_uri", s.opts.RedirectURL)
	default:
		http.Error(w, "oauthtest: redirect_uri not registered", http.StatusBadRequest)
		return
	}
	if err := s.srv.HandleAuthorizeRequest(w, r); err != nil {
		// The library returns request validation errors (such as a missing
		// code_challenge) instead of redirecting them.
		data, _, _ := s.srv.GetErrorData(err)
		req := &server.AuthorizeRequest{RedirectURI: s.opts.RedirectURL, ResponseType: oauth2.Code, State: r.Form.Get("state")}
		to, _ := s.srv.GetRedirectURI(req, data)
		http.Redirect(w, r, to, http.StatusFound) //nolint:gosec // G710: the registered redirect URI, compared exactly
		return
	}
	if to, err := url.Parse(w.Header().Get("Location")); err == nil && to.Query().Get("code") != "" {
		s.count(func(st *Stats) { st.Authorizations++ })
	}
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay := s.delay
	fail := 0
	if s.failLeft > 0 {
		s.failLeft--
		fail = s.failStatus
		s.stats.FailuresInjected++
	}
	s.stats.TokenRequests++
	s.requestTimes = append(s.requestTimes, time.Now())
	s.mu.Unlock()

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if fail != 0 {
		code := "server_error"
		switch fail {
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			code = "temporarily_unavailable"
			w.Header().Set("Retry-After", "1")
		case http.StatusBadRequest:
			code = "invalid_request"
		case http.StatusUnauthorized:
			code = "invalid_client"
		}
		writeJSON(w, fail, map[string]string{"error": code, "error_description": "oauthtest: injected failure"})
		return
	}

	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	_ = r.ParseForm()
	grant := r.PostForm.Get("grant_type")
	if grant == string(oauth2.Refreshing) && s.tokens.isSpent(r.PostForm.Get("refresh_token")) {
		s.count(func(st *Stats) { st.DoubleSpends++ })
	}
	rec := &statusRecorder{ResponseWriter: w}
	_ = s.srv.HandleTokenRequest(rec, r)
	if rec.status == http.StatusOK {
		s.count(func(st *Stats) {
			switch oauth2.GrantType(grant) {
			case oauth2.AuthorizationCode:
				st.CodeExchanges++
			case oauth2.Refreshing:
				st.Refreshes++
			}
		})
	}
}

// revoke implements RFC 7009: the client authenticates as at the token
// endpoint, and the answer is 200 whether or not token was valid. Revoking a
// refresh token revokes the access token issued with it.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if _, _, err := s.authenticateClient(r); err != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauthtest"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	token := r.PostFormValue("token")
	if token == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	ctx := r.Context()
	if ti, err := s.manager.LoadRefreshToken(ctx, token); err == nil {
		_ = s.manager.RemoveAccessToken(ctx, ti.GetAccess())
		s.tokens.revoke(ctx, token)
	}
	_ = s.manager.RemoveAccessToken(ctx, token)
	w.WriteHeader(http.StatusOK)
}

// tokenStore is the library's store, noting the refresh tokens it was given
// and those the manager removed, which it only does when rotating them.
type tokenStore struct {
	oauth2.TokenStore

	mu     sync.Mutex
	issued map[string]bool      // refresh tokens stored and not revoked
	spent  map[string]time.Time // refresh tokens replaced by rotation, and when
}

func (ts *tokenStore) Create(ctx context.Context, info oauth2.TokenInfo) error {
	if rt := info.GetRefresh(); rt != "" {
		ts.mu.Lock()
		ts.issued[rt] = true
		ts.mu.Unlock()
	}
	return ts.TokenStore.Create(ctx, info)
}

func (ts *tokenStore) RemoveByRefresh(ctx context.Context, refresh string) error {
	ts.mu.Lock()
	ts.spent[refresh] = time.Now()
	delete(ts.issued, refresh)
	ts.mu.Unlock()
	return ts.TokenStore.RemoveByRefresh(ctx, refresh)
}

func (ts *tokenStore) isSpent(refresh string) bool {
	_, spent := ts.spentAt(refresh)
	return spent
}

func (ts *tokenStore) spentAt(refresh string) (time.Time, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	at, spent := ts.spent[refresh]
	return at, spent
}

// revoke removes refresh without counting it as spent.
func (ts *tokenStore) revoke(ctx context.Context, refresh string) {
	ts.mu.Lock()
	delete(ts.issued, refresh)
	ts.mu.Unlock()
	_ = ts.TokenStore.RemoveByRefresh(ctx, refresh)
}

func (ts *tokenStore) revokeAll() {
	ts.mu.Lock()
	all := ts.issued
	ts.issued = map[string]bool{}
	ts.mu.Unlock()
	for rt := range all {
		_ = ts.TokenStore.RemoveByRefresh(context.Background(), rt)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// subset reports whether every scope in the space-separated scope is in allowed.
func subset(scope string, allowed []string) bool {
	for _, sc := range strings.Fields(scope) {
		if !slices.Contains(allowed, sc) {
			return false
		}
	}
	return true
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = slices.Clone(vs)
	}
	return c
}
