package public

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/pipes-dev/pipes-operator/internal/widget"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// FuzzPublic sends the public listener arbitrary methods, paths, Origin, preflight,
// Accept-Encoding and If-None-Match headers (the widget API behind it is a stub here;
// FuzzWidgetAPI fuzzes the real one): no 5xx; a 4xx carries a JSON error; an origin that
// is not allowed never reaches the widget API nor gets CORS headers; security headers
// are on every answer.
func FuzzPublic(f *testing.F) {
	for _, seed := range []struct{ method, path, origin, preflight, encoding, match string }{
		{"GET", "/widget/pipes-widget.js", "", "", "gzip", ""},
		{"GET", "/widget/pipes-widget.js", "", "", "gzip;q=0, br", "\"x\""},
		{"GET", "/widget/v/0/pipes-widget.js", "", "", "", ""},
		{"GET", "/widget/v/%2e%2e/pipes-widget.js", "", "", "", ""},
		{"GET", "/widget/api/v1/providers", "https://app.example.com", "", "", ""},
		{"GET", "/widget/api/v1/providers", "https://APP.example.com", "", "", ""},
		{"GET", "/widget/api/v1/providers", "https://evil.example.com", "", "", ""},
		{"OPTIONS", "/widget/api/v1/providers", "https://app.example.com", "PUT", "", ""},
		{"OPTIONS", "/widget/api/v1/providers", "null", "PUT", "", ""},
		{"PUT", "/widget/api/v1/providers/openai/api-key", "\xff\xfe", "", "", ""},
		{"GET", "/oauth/callback", "", "", "", ""},
		{"POST", "/", strings.Repeat("o", 10_000), "", "", ""},
	} {
		f.Add(seed.method, seed.path, seed.origin, seed.preflight, seed.encoding, seed.match)
	}
	assets, err := widget.Load()
	if err != nil {
		f.Fatal(err)
	}
	reached := false
	s := &Server{Options: Options{AllowedOrigins: []string{"https://app.example.com"}}, Assets: assets, Log: logr.Discard(),
		WidgetAPI: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			reached = true
			w.WriteHeader(http.StatusNoContent)
		}),
		OAuthCallback: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }),
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, method, path, origin, preflight, encoding, match string) {
		req, err := http.NewRequest(method, "https://pipes.example.com"+path, nil)
		if err != nil || req.URL.Host != "pipes.example.com" {
			return
		}
		for k, v := range map[string]string{"Origin": origin, "Access-Control-Request-Method": preflight, "Accept-Encoding": encoding, "If-None-Match": match} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		reached = false
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %.200q: %d %.500s", method, path, rec.Code, rec.Body)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" || rec.Header().Get("X-Frame-Options") != "DENY" {
			t.Fatalf("%s %.200q: no security headers", method, path)
		}
		if rec.Code >= 400 {
			var er wire.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.Code == "" || er.Message == "" {
				t.Fatalf("%s %.200q: %d without a JSON error: %.500q", method, path, rec.Code, rec.Body)
			}
		}
		allowed := origin == "" || strings.EqualFold(origin, "https://app.example.com")
		if reached && !allowed {
			t.Fatalf("origin %.200q reached the widget API", origin)
		}
		if acao := rec.Header().Get("Access-Control-Allow-Origin"); acao != "" && acao != "*" && !allowed {
			t.Fatalf("origin %.200q got Access-Control-Allow-Origin %q", origin, acao)
		}
	})
}
