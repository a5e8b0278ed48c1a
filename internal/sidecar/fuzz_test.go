package sidecar

import (
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/apiclient/apiclienttest"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

var fuzzRefs = []wire.CredentialRef{{Provider: "openai", UserID: "u"}, {Provider: "github", UserID: "u", OrganizationID: "org"}}

func watchBody(creds ...wire.WatchedCredential) []byte {
	b, _ := json.Marshal(wire.WatchResponse{ETag: "e1", Changed: true, Credentials: creds})
	return b
}

// FuzzSync feeds the sidecar arbitrary answers of the backend API's watch (status,
// Retry-After, body): whatever the server (or something in its place) answers, the
// sidecar does not panic, keeps only the credentials it was configured with, writes and
// removes files only inside its directory, and its loopback answers stay 2xx or 4xx (or
// 503 not_ready before any good answer).
func FuzzSync(f *testing.F) {
	good := wire.CredentialsResponse{Active: true, Credential: &wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: "sk-fuzz-0001", Version: 1}}
	for _, seed := range []struct {
		status     int
		retryAfter string
		body       []byte
	}{
		{200, "", watchBody(wire.WatchedCredential{CredentialRef: fuzzRefs[0], CredentialsResponse: good})},
		{200, "", watchBody(wire.WatchedCredential{CredentialRef: fuzzRefs[1], CredentialsResponse: wire.CredentialsResponse{Error: wire.ErrorNotInstalled}})},
		// Credentials it never asked for, with names that are paths.
		{200, "", watchBody(wire.WatchedCredential{CredentialRef: wire.CredentialRef{Provider: "..", UserID: "x"}, CredentialsResponse: good})},
		{200, "", watchBody(wire.WatchedCredential{CredentialRef: wire.CredentialRef{Provider: "../../outside", UserID: "x"}})},
		{200, "", watchBody(wire.WatchedCredential{CredentialRef: wire.CredentialRef{Provider: "/abs", UserID: "u"}, CredentialsResponse: good})},
		{200, "", []byte(`{"etag":"e","changed":true,"credentials":[{"provider":"openai","user_id":"u","active":true,"credential":null}]}`)},
		{200, "", []byte(`{"etag":"e","changed":true,"credentials":null}`)},
		{200, "", []byte(`{"etag":"e","changed":false}`)},
		{200, "", []byte(`{"etag":1}`)},
		{200, "", []byte(strings.Repeat("[", 100_000))},
		{200, "", []byte("\xff\xfe{")},
		{200, "", nil},
		{403, "", []byte(`{"code":"forbidden","message":"no"}`)},
		{401, "", []byte(`not json`)},
		{429, "99999999999999999999", []byte(`{"code":"rate_limited","message":"later"}`)},
		{429, "-5", nil},
		{503, "1", []byte(`{"code":"unavailable"}`)},
		{302, "", nil},
		{999, "", nil},
	} {
		f.Add(seed.status, seed.retryAfter, seed.body)
	}
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		if status < 100 || status > 999 {
			return // not an HTTP status
		}
		root := t.TempDir()
		dir := filepath.Join(root, "a", "credentials")
		outside := []string{filepath.Join(root, "keep"), filepath.Join(root, "a", "keep"), filepath.Join(root, "a", "x", "keep")}
		for _, p := range outside {
			if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		api := apiclient.New("https://pipes.example.com", apiclient.WithToken("t"),
			apiclient.WithHTTPClient(&http.Client{Transport: apiclienttest.Canned{Status: status, RetryAfter: retryAfter, Body: body}}))
		s := New(Config{Credentials: fuzzRefs, Dir: dir, WatchTimeout: time.Second, FileGID: -1}, api, slog.New(slog.DiscardHandler))
		for _, wait := range []bool{false, true} {
			_ = s.Sync(context.Background(), wait)
		}
		for _, p := range outside {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("a file outside the credential directory is gone: %v", err)
			}
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || slices.Contains(outside, p) {
				return err
			}
			if rel, err := filepath.Rel(dir, p); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				t.Fatalf("the sidecar wrote %s, outside %s", p, dir)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for ref := range s.creds {
			if !slices.Contains(fuzzRefs, ref) {
				t.Fatalf("the sidecar keeps %s, which it was not configured with", ref)
			}
		}
		h := s.Handler()
		for _, ref := range fuzzRefs {
			for _, route := range []string{"credentials", "token"} {
				rec := httptest.NewRecorder()
				b, _ := json.Marshal(wire.CredentialsRequest{UserID: ref.UserID, OrganizationID: ref.OrganizationID})
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/data-integrations/"+ref.Provider+"/"+route, strings.NewReader(string(b))))
				checkLoopback(t, rec)
			}
		}
	})
}

// checkLoopback is the property of the sidecar's loopback answers: JSON, and no 5xx but
// the 503 of a sidecar that has no answer from the backend yet.
func checkLoopback(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var er wire.ErrorResponse
	switch {
	case rec.Code == http.StatusServiceUnavailable:
		if json.Unmarshal(rec.Body.Bytes(), &er) != nil || er.Code != "not_ready" {
			t.Fatalf("503 that is not not_ready: %s", rec.Body)
		}
	case rec.Code >= 500:
		t.Fatalf("%d %s", rec.Code, rec.Body)
	case rec.Code >= 400:
		if json.Unmarshal(rec.Body.Bytes(), &er) != nil || er.Code == "" || er.Message == "" {
			t.Fatalf("%d without a JSON error: %q", rec.Code, rec.Body)
		}
	case !json.Valid(rec.Body.Bytes()):
		t.Fatalf("%d: not JSON: %q", rec.Code, rec.Body)
	}
}

// FuzzServeCredential sends the sidecar's loopback API arbitrary methods, paths and
// bodies once it holds credentials: 2xx, 3xx to itself, or 4xx with a JSON error.
func FuzzServeCredential(f *testing.F) {
	for _, seed := range []struct{ method, path, body string }{
		{"POST", "/data-integrations/openai/credentials", `{"user_id":"u"}`},
		{"POST", "/data-integrations/openai/token", `{"user_id":"u"}`},
		{"POST", "/data-integrations/github/token", `{"user_id":"u","organization_id":"org"}`},
		{"POST", "/data-integrations/github/credentials", `{"user_id":"u","user_id":"v"}`},
		{"POST", "/data-integrations/openai/credentials", `{"user_id":"u","extra":true}`},
		{"POST", "/data-integrations/openai/credentials", `{"user_id":"u"} {}`},
		{"POST", "/data-integrations/openai/credentials", strings.Repeat("[", 100_000)},
		{"POST", "/data-integrations/openai/credentials", `{"user_id":"` + strings.Repeat("u", 70_000) + `"}`},
		{"POST", "/data-integrations/openai/credentials", "{\"user_id\":\"\xff\"}"},
		{"POST", "/data-integrations/openai/credentials", `{"user_id":12}`},
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"GET", "/metrics", ""},
		{"DELETE", "/data-integrations/openai/credentials", ""},
	} {
		f.Add(seed.method, seed.path, seed.body)
	}
	good := wire.CredentialsResponse{Active: true, Credential: &wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: "sk-fuzz-0001", Version: 1}}
	oauthGood := wire.CredentialsResponse{Active: true, Credential: &wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodOAuth, Value: "gho-fuzz-0001", Version: 3}}
	api := apiclient.New("https://pipes.example.com", apiclient.WithToken("t"), apiclient.WithHTTPClient(&http.Client{Transport: apiclienttest.Canned{Status: 200,
		Body: watchBody(wire.WatchedCredential{CredentialRef: fuzzRefs[0], CredentialsResponse: good}, wire.WatchedCredential{CredentialRef: fuzzRefs[1], CredentialsResponse: oauthGood})}}))
	s := New(Config{Credentials: fuzzRefs, FileGID: -1}, api, slog.New(slog.DiscardHandler))
	if err := s.Sync(context.Background(), false); err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, method, path, body string) {
		req, err := http.NewRequest(method, "http://127.0.0.1:8080"+path, strings.NewReader(body))
		if err != nil || req.URL.Host != "127.0.0.1:8080" {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect:
			if loc := rec.Header().Get("Location"); !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
				t.Fatalf("%s %q redirects to %q", method, path, loc)
			}
		case rec.Code == http.StatusOK && rec.Header().Get("Content-Type") != "application/json":
			// /healthz, /readyz and /metrics are plain text.
		default:
			checkLoopback(t, rec)
		}
		if rec.Code == http.StatusOK && strings.Contains(path, "/token") && strings.Contains(rec.Body.String(), "sk-fuzz-0001") {
			t.Fatalf("%s %q: an API key from the token route: %s", method, path, rec.Body)
		}
	})
}
