package widget

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestScriptServing(t *testing.T) {
	a, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux)
	get := func(path string, header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}
	rec := get(a.ScriptPath(), "Accept-Encoding", "br, gzip")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Encoding") != "gzip" || !strings.Contains(rec.Header().Get("Cache-Control"), "immutable") {
		t.Fatalf("versioned script: %d %v", rec.Code, rec.Header())
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if !strings.Contains(string(raw), "customElements.define") {
		t.Fatal("the compressed script does not decompress to the script")
	}
	if rec := get(a.ScriptPath(), "Accept-Encoding", "gzip;q=0"); rec.Header().Get("Content-Encoding") != "" || rec.Body.Len() != len(raw) {
		t.Fatal("gzip;q=0 still got gzip")
	}
	if rec := get(LatestScriptPath, "If-None-Match", `"`+a.Version+`"`); rec.Code != http.StatusNotModified {
		t.Fatalf("revalidation of the current script: %d", rec.Code)
	}
	if rec := get(LatestScriptPath); rec.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("the unversioned path is cached: %q", rec.Header().Get("Cache-Control"))
	}
	if rec := get("/widget/v/000000000000/" + ScriptName); rec.Code != http.StatusFound || rec.Header().Get("Location") != a.ScriptPath() {
		t.Fatalf("an old version: %d %q", rec.Code, rec.Header().Get("Location"))
	}
}

func TestDemoPageIsStrict(t *testing.T) {
	d := &Demo{ScriptURL: "http://127.0.0.1:8082/widget/v/abc/pipes-widget.js", Mint: func(_ *http.Request, admin bool) (string, error) {
		if admin {
			return "admin-token", nil
		}
		return `tok"><script>x</script>`, nil
	}}
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src http://127.0.0.1:8082;") || strings.Contains(csp, "unsafe") {
		t.Fatalf("CSP %q", csp)
	}
	if body := rec.Body.String(); strings.Contains(body, "<script>x") || !strings.Contains(body, "<pipes-connections") {
		t.Fatalf("the token is not escaped, or the element is missing:\n%s", body)
	}
	rec = httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin", nil))
	if !strings.Contains(rec.Body.String(), `<pipes-admin token="admin-token">`) {
		t.Fatalf("admin page:\n%s", rec.Body)
	}
}
