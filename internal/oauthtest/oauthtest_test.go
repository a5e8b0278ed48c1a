package oauthtest_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/pipes-dev/pipes-operator/internal/oauthtest"
)

// redirectURL is never dialed: authorize stops at the redirect.
const redirectURL = "http://127.0.0.1:1/callback"

// start starts a server for client "app" and returns a client config for it.
// The config sends client credentials with HTTP Basic only: with the default
// auto-detection golang.org/x/oauth2 repeats every failed request with the
// credentials in the body, which doubles errors and counters.
func start(t *testing.T, o oauthtest.Options) (*oauthtest.Server, *oauth2.Config) {
	t.Helper()
	o.ClientID, o.ClientSecret, o.RedirectURL = "app", "s3cret/+=", redirectURL
	s := oauthtest.Start(t, o)
	return s, &oauth2.Config{
		ClientID:     o.ClientID,
		ClientSecret: o.ClientSecret,
		RedirectURL:  redirectURL,
		Endpoint:     oauth2.Endpoint{AuthURL: s.AuthURL(), TokenURL: s.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader},
	}
}

// authorize does what a browser does with authURL, up to the redirect to
// redirectURL, and returns the parameters the callback would get.
func authorize(t *testing.T, authURL string) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), redirectURL) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, redirectURL+"?") {
		t.Fatalf("authorize: %s, Location %q; want a redirect to %s", resp.Status, loc, redirectURL)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

// code authorizes with PKCE and returns the code and its verifier.
func code(t *testing.T, conf *oauth2.Config) (string, string) {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	q := authorize(t, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
	if q.Get("code") == "" || q.Get("state") != "st" {
		t.Fatalf("callback %v; want a code and state=st", q)
	}
	return q.Get("code"), verifier
}

func refresh(conf *oauth2.Config, rt string) (*oauth2.Token, error) {
	return conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: rt}).Token()
}

// wantOAuthError checks err is an OAuth error response with status and code.
func wantOAuthError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("error %v; want %d %s", err, status, code)
	}
	if re.Response.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("got %d %q (%s); want %d %s", re.Response.StatusCode, re.ErrorCode, re.Body, status, code)
	}
}

func TestCodeRefreshRotationRevocation(t *testing.T) {
	s, conf := start(t, oauthtest.Options{
		AccessTokenTTL: 2 * time.Second, RotateRefreshTokens: true, RequirePKCE: true,
		AllowedScopes: []string{"read", "write"},
	})
	conf.Scopes = []string{"read"}
	ctx := context.Background()

	verifier := oauth2.GenerateVerifier()
	q := authorize(t, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("prompt", "consent")))
	last := s.LastAuthorize()
	if last.Get("code_challenge") != oauth2.S256ChallengeFromVerifier(verifier) ||
		last.Get("code_challenge_method") != "S256" || last.Get("prompt") != "consent" || last.Get("scope") != "read" {
		t.Errorf("LastAuthorize %v", last)
	}
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Type() != "Bearer" || tok.RefreshToken == "" || tok.ExpiresIn != 2 || tok.Extra("scope") != "read" {
		t.Errorf("token %+v, scope %v", tok, tok.Extra("scope"))
	}
	if !s.ValidAccessToken(tok.AccessToken) {
		t.Error("access token not valid")
	}
	_, err = conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	wantOAuthError(t, err, 400, "invalid_grant") // codes are single-use

	tok2, err := refresh(conf, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if tok2.RefreshToken == "" || tok2.RefreshToken == tok.RefreshToken || tok2.AccessToken == tok.AccessToken {
		t.Errorf("refresh did not rotate: %+v", tok2)
	}
	_, err = refresh(conf, tok.RefreshToken)
	wantOAuthError(t, err, 400, "invalid_grant")
	tok3, err := refresh(conf, tok2.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}

	s.RevokeRefreshTokens()
	_, err = refresh(conf, tok3.RefreshToken)
	wantOAuthError(t, err, 400, "invalid_grant")

	want := oauthtest.Stats{Authorizations: 1, TokenRequests: 6, CodeExchanges: 1, Refreshes: 2, DoubleSpends: 1}
	if got := s.Stats(); got != want {
		t.Errorf("Stats %+v; want %+v", got, want)
	}
}

func TestRefreshWithoutRotation(t *testing.T) {
	s, conf := start(t, oauthtest.Options{})
	c, v := code(t, conf)
	tok, err := conf.Exchange(context.Background(), c, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		tok2, err := refresh(conf, tok.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if tok2.RefreshToken != tok.RefreshToken || tok2.AccessToken == tok.AccessToken {
			t.Errorf("refresh: %+v", tok2)
		}
	}
	if st := s.Stats(); st.Refreshes != 2 || st.DoubleSpends != 0 {
		t.Errorf("Stats %+v", st)
	}
}

func TestPKCE(t *testing.T) {
	s, conf := start(t, oauthtest.Options{RequirePKCE: true})
	q := authorize(t, conf.AuthCodeURL("st"))
	if q.Get("error") != "invalid_request" || q.Get("state") != "st" || q.Get("code") != "" {
		t.Errorf("authorize without code_challenge: %v", q)
	}

	c, _ := code(t, conf)
	_, err := conf.Exchange(context.Background(), c, oauth2.VerifierOption(oauth2.GenerateVerifier()))
	wantOAuthError(t, err, 400, "invalid_grant")

	c, _ = code(t, conf)
	_, err = conf.Exchange(context.Background(), c)
	wantOAuthError(t, err, 400, "invalid_request")
	if st := s.Stats(); st.Authorizations != 2 || st.CodeExchanges != 0 {
		t.Errorf("Stats %+v", st)
	}

	// Not required, PKCE is still checked when the client started it.
	_, conf = start(t, oauthtest.Options{})
	c, _ = code(t, conf)
	_, err = conf.Exchange(context.Background(), c)
	wantOAuthError(t, err, 400, "invalid_grant")
}

func TestDenyAndBadRedirect(t *testing.T) {
	s, conf := start(t, oauthtest.Options{})
	s.Deny(true)
	q := authorize(t, conf.AuthCodeURL("st"))
	if q.Get("error") != "access_denied" || q.Get("state") != "st" || q.Get("code") != "" {
		t.Errorf("denied: %v", q)
	}
	s.Deny(false)
	code(t, conf)

	conf.RedirectURL = redirectURL + "/other"
	resp, err := http.Get(conf.AuthCodeURL("st"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unregistered redirect_uri: %s; want 400 without redirect", resp.Status)
	}
}

func TestTokenEndpointFailures(t *testing.T) {
	s, conf := start(t, oauthtest.Options{})
	c, v := code(t, conf)

	s.FailTokenEndpoint(http.StatusServiceUnavailable, 1)
	_, err := conf.Exchange(context.Background(), c, oauth2.VerifierOption(v))
	wantOAuthError(t, err, 503, "temporarily_unavailable")
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", re.Response.Header.Get("Retry-After"))
	}

	s.SlowTokenEndpoint(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := conf.Exchange(ctx, c, oauth2.VerifierOption(v)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow endpoint: %v; want deadline exceeded", err)
	}
	s.SlowTokenEndpoint(0)

	if _, err := conf.Exchange(context.Background(), c, oauth2.VerifierOption(v)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.FailuresInjected != 1 || st.CodeExchanges != 1 || st.TokenRequests != 3 {
		t.Errorf("Stats %+v", st)
	}
}

func TestClientAuthentication(t *testing.T) {
	_, conf := start(t, oauthtest.Options{})
	c, v := code(t, conf)
	good := *conf
	conf.ClientSecret = "wrong"
	_, err := conf.Exchange(context.Background(), c, oauth2.VerifierOption(v))
	wantOAuthError(t, err, 401, "invalid_client")

	// Credentials in the body work too; the code was not spent above.
	good.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	tok, err := good.Exchange(context.Background(), c, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	_, err = refresh(conf, tok.RefreshToken)
	wantOAuthError(t, err, 401, "invalid_client")
}

func TestScopes(t *testing.T) {
	s, conf := start(t, oauthtest.Options{AllowedScopes: []string{"read", "write", "admin"}})
	for _, tc := range []struct{ ask, grant string }{{"read write", "read write"}, {"", "read write admin"}} {
		conf.Scopes = strings.Fields(tc.ask)
		c, v := code(t, conf)
		tok, err := conf.Exchange(context.Background(), c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		if tok.Extra("scope") != tc.grant {
			t.Errorf("asked %q, granted %v; want %q", tc.ask, tok.Extra("scope"), tc.grant)
		}
		if tc.ask == "" {
			continue
		}
		// A refresh may narrow the scope, not widen it.
		for scope, want := range map[string]int{"admin": 400, "read": 200} {
			resp, err := http.PostForm(s.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken},
				"scope": {scope}, "client_id": {conf.ClientID}, "client_secret": {conf.ClientSecret}})
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("refresh with scope %s: %s; want %d", scope, resp.Status, want)
			}
		}
	}

	conf.Scopes = []string{"read", "delete"}
	if q := authorize(t, conf.AuthCodeURL("st")); q.Get("error") != "invalid_scope" {
		t.Errorf("scope outside AllowedScopes: %v", q)
	}
}

func TestRevocationEndpoint(t *testing.T) {
	s, conf := start(t, oauthtest.Options{})
	grant := func() *oauth2.Token {
		c, v := code(t, conf)
		tok, err := conf.Exchange(context.Background(), c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	revoke := func(token, secret string) int {
		req, _ := http.NewRequest(http.MethodPost, s.RevokeURL(), strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(conf.ClientID), url.QueryEscape(secret))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	tok := grant()
	if st := revoke(tok.RefreshToken, "wrong"); st != 401 {
		t.Errorf("revoke with wrong secret: %d", st)
	}
	if st := revoke(tok.RefreshToken, conf.ClientSecret); st != 200 {
		t.Errorf("revoke: %d", st)
	}
	_, err := refresh(conf, tok.RefreshToken)
	wantOAuthError(t, err, 400, "invalid_grant")
	if s.ValidAccessToken(tok.AccessToken) {
		t.Error("access token of a revoked refresh token still valid")
	}

	tok = grant()
	if st := revoke(tok.AccessToken, conf.ClientSecret); st != 200 || s.ValidAccessToken(tok.AccessToken) {
		t.Errorf("revoke access token: %d, still valid %v", st, s.ValidAccessToken(tok.AccessToken))
	}
	if _, err := refresh(conf, tok.RefreshToken); err != nil {
		t.Errorf("refresh after revoking the access token only: %v", err)
	}
	if st := revoke("unknown", conf.ClientSecret); st != 200 {
		t.Errorf("revoke unknown token: %d", st)
	}
	if st := s.Stats(); st.DoubleSpends != 0 {
		t.Errorf("revocations counted as double spends: %+v", st)
	}
}

func TestIssueAndRequestLog(t *testing.T) {
	s, conf := start(t, oauthtest.Options{AccessTokenTTL: time.Minute, RotateRefreshTokens: true, RequirePKCE: true, AllowedScopes: []string{"read"}})
	if _, err := s.Issue(1, "write"); err == nil {
		t.Error("Issue granted a scope the client may not ask for")
	}
	before := time.Now()
	issued, err := s.Issue(3, "read")
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != 3 || issued[0].RefreshToken == issued[1].RefreshToken {
		t.Fatalf("Issue: %+v", issued)
	}
	for _, tok := range issued {
		if !s.ValidAccessToken(tok.AccessToken) || tok.Expiry.Before(before.Add(time.Minute)) || tok.Expiry.After(time.Now().Add(time.Minute)) {
			t.Errorf("issued %+v: not valid, or not expiring a minute after issue", tok)
		}
	}
	if _, ok := s.RefreshedAt(issued[0].RefreshToken); ok {
		t.Error("RefreshedAt before any refresh")
	}
	tok, err := refresh(conf, issued[0].RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == issued[0].RefreshToken || tok.Extra("scope") != "read" {
		t.Errorf("refresh of an issued token: %+v", tok)
	}
	if at, ok := s.RefreshedAt(issued[0].RefreshToken); !ok || at.Before(before) {
		t.Errorf("RefreshedAt %v %v", at, ok)
	}
	_, err = refresh(conf, issued[0].RefreshToken)
	wantOAuthError(t, err, 400, "invalid_grant")
	if times := s.TokenRequestTimes(); len(times) != 2 || times[0].Before(before) || times[1].Before(times[0]) {
		t.Errorf("TokenRequestTimes %v", times)
	}
	want := oauthtest.Stats{TokenRequests: 2, Refreshes: 1, DoubleSpends: 1, Issued: 3}
	if got := s.Stats(); got != want {
		t.Errorf("Stats %+v; want %+v", got, want)
	}
}
