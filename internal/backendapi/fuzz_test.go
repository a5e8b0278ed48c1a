package backendapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
)

// FuzzWidgetAPI sends arbitrary methods, paths and bodies to the widget API with a valid
// admin token: whatever arrives is answered with a 2xx or a 4xx and a JSON error, never a
// 5xx or a panic, and a submitted secret never comes back. The fake client stands in for
// the cache (the envtest specs in widget_test.go cover the real one).
func FuzzWidgetAPI(f *testing.F) {
	for _, seed := range []struct{ method, path, body string }{
		{"GET", "/providers", ""},
		{"GET", "/session", ""},
		{"PUT", "/providers/openai/api-key", `{"secret":"sk-fuzz-seed-key-000001"}`},
		{"PUT", "/providers/openai/api-key", `{"secret":"sk-with-newline-000002\n"}`},
		{"PUT", "/providers/openai/api-key", `{"secret":"\u0000\u2028"}`},
		{"PUT", "/providers/openai/api-key", `{"secret":"sk-a","user_id":"someone-else"}`},
		{"PUT", "/providers/openai/api-key", strings.Repeat("[", 5000)},
		{"PUT", "/providers/openai/api-key", "\xff\xfe{\"secret\":\"\xc3\x28\"}"},
		{"PUT", "/providers/github/api-key", `{"secret":"sk-oauth-provider-000003"}`},
		{"PUT", "/providers/openai/organization", `{"enabled":false}`},
		{"PUT", "/providers/openai/organization", `{"enabled":"yes"}`},
		{"PUT", "/providers/missing/organization", `{"enabled":true}`},
		{"DELETE", "/providers/openai/connection", ""},
		{"DELETE", "/providers/%2e%2e%2fopenai/connection", ""},
		{"POST", "/providers", `{}`},
		{"PATCH", "/providers/openai/api-key", `{"secret":1}`},
	} {
		f.Add(seed.method, seed.path, seed.body)
	}
	s, _ := newFuzzEnv(f).server()
	tokens := s.Widgets
	h := s.WidgetHandler()
	tok, _, err := tokens.Issue(widgettoken.Claims{Namespace: "ns", UserID: "user", OrganizationID: "org", Scopes: []string{widgettoken.ScopeManage}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, body string) {
		req, err := http.NewRequest(method, backendapi.WidgetAPIPrefix+path, strings.NewReader(body))
		if err != nil {
			return // not a request a server can receive
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusTemporaryRedirect || rec.Code == http.StatusMovedPermanently {
			// ServeMux cleaning a path ("/./", "//"): to the clean path, on this server.
			if loc := rec.Header().Get("Location"); !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
				t.Fatalf("%s %q redirects to %q", method, path, loc)
			}
			return
		}
		if rec.Code != http.StatusNoContent && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %q: answer is not JSON: %q", method, path, rec.Body)
		}
		var sent struct {
			Secret string `json:"secret"`
		}
		if json.Unmarshal([]byte(body), &sent) == nil && len(sent.Secret) >= 8 && strings.Contains(rec.Body.String(), sent.Secret) {
			t.Fatalf("the answer holds the submitted secret: %s", rec.Body)
		}
	})
}
