package public

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseOrigins(t *testing.T) {
	got, err := ParseOrigins([]string{"https://App.Example.com", " http://127.0.0.1:8090 ", ""})
	if err != nil || strings.Join(got, ",") != "https://app.example.com,http://127.0.0.1:8090" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"*", "app.example.com", "https://app.example.com/", "https://app.example.com/path", "ftp://x", "https://u:p@x", "https://x?q", "https://*.example.com/"} {
		if _, err := ParseOrigins([]string{bad}); err == nil || !strings.Contains(err.Error(), "scheme://host[:port]") {
			t.Errorf("%q: %v, want a refusal saying how to write it", bad, err)
		}
	}
}

func TestCORS(t *testing.T) {
	s := &Server{Options: Options{AllowedOrigins: []string{"https://app.example.com"}}}
	reached := 0
	h := s.cors(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { reached++; w.WriteHeader(http.StatusOK) }))
	do := func(method, origin string, preflight bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/widget/api/v1/providers", nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if preflight {
			req.Header.Set("Access-Control-Request-Method", "PUT")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := do(http.MethodOptions, "https://app.example.com", true); rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" || reached != 0 {
		t.Fatalf("preflight of an allowed origin: %d %v (reached the API %d times)", rec.Code, rec.Header(), reached)
	}
	if rec := do(http.MethodPut, "https://evil.example.com", false); rec.Code != http.StatusForbidden || rec.Header().Get("Access-Control-Allow-Origin") != "" || reached != 0 {
		t.Fatalf("a request of another origin: %d %v (reached the API %d times)", rec.Code, rec.Header(), reached)
	}
	if rec := do(http.MethodGet, "https://app.example.com", false); rec.Code != http.StatusOK || rec.Header().Get("Access-Control-Allow-Credentials") != "" || reached != 1 {
		t.Fatalf("a request of the allowed origin: %d %v", rec.Code, rec.Header())
	}
	if rec := do(http.MethodGet, "", false); rec.Code != http.StatusOK || reached != 2 {
		t.Fatalf("a request without an origin (not a browser): %d", rec.Code)
	}
	// Nothing is allowed by default.
	none := (&Server{}).cors(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	req := httptest.NewRequest(http.MethodGet, "/widget/api/v1/providers", nil)
	req.Header.Set("Origin", "https://app.example.com")
	rec := httptest.NewRecorder()
	none.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("with no allowed origins: %d", rec.Code)
	}
}
