package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// fakeBackend answers POST /credentials/watch with whatever the test set last.
type fakeBackend struct {
	mu   sync.Mutex
	resp wire.WatchResponse
}

func (f *fakeBackend) set(etag string, creds ...wire.WatchedCredential) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resp = wire.WatchResponse{ETag: etag, Changed: true, Credentials: creds}
}

func (f *fakeBackend) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = json.NewEncoder(w).Encode(f.resp)
}

var ref = wire.CredentialRef{Provider: "openai", UserID: "user_private_42"}

func active(version int64, rotatedAt time.Time) wire.WatchedCredential {
	return wire.WatchedCredential{CredentialRef: ref, RotatedAt: rotatedAt, CredentialsResponse: wire.CredentialsResponse{
		Active: true, Credential: &wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: "sk-plaintext-" + strconv.FormatInt(version, 10) + "-abcdefgh", Version: version},
	}}
}

// scrape returns the samples of a metrics handler's answer by series ("name{labels}").
func scrape(t *testing.T, h http.Handler) (map[string]float64, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	samples := map[string]float64{}
	for line := range strings.Lines(rec.Body.String()) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("not a sample line: %q", line)
		}
		samples[line[:i]] = v
	}
	return samples, rec.Body.String()
}

// The rotation-to-visible histogram counts each new version seen while running, timed
// from the rotated_at the watch carries; the first snapshot and a version served again
// (its Provider re-enabled) are not rotations. The separate metrics handler serves
// /metrics and nothing else, and no metric names a user or carries a value.
func TestRotationToVisibleAndMetricsHandler(t *testing.T) {
	backend := &fakeBackend{}
	srv := httptest.NewServer(backend)
	defer srv.Close()
	s := New(Config{Credentials: []wire.CredentialRef{ref}, WatchTimeout: time.Second, FileGID: -1},
		apiclient.New(srv.URL, apiclient.WithToken("t")), slog.New(slog.DiscardHandler))
	ctx := context.Background()
	metrics := s.MetricsHandler()

	samples, _ := scrape(t, metrics)
	if samples["pipes_vend_last_success_timestamp_seconds"] != 0 || samples["pipes_vend_ready"] != 0 {
		t.Fatalf("before the first answer: %v", samples)
	}

	backend.set("e1", active(1, time.Now().Add(-time.Hour)))
	before := time.Now()
	if err := s.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	samples, _ = scrape(t, metrics)
	if got := samples["pipes_vend_last_success_timestamp_seconds"]; got < float64(before.Unix())-1 || got > float64(time.Now().Unix())+1 {
		t.Fatalf("last success timestamp %v, want about %d", got, before.Unix())
	}
	if samples["pipes_vend_ready"] != 1 || samples["pipes_vend_credentials_active"] != 1 {
		t.Fatalf("after the first snapshot: %v", samples)
	}
	if samples["pipes_vend_rotation_to_visible_seconds_count"] != 0 {
		t.Fatalf("the first snapshot after a start is not a rotation: %v", samples)
	}

	backend.set("e2", active(2, time.Now().Add(-2*time.Second))) // rotated 2 s ago
	if err := s.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	samples, _ = scrape(t, metrics)
	if samples["pipes_vend_rotation_to_visible_seconds_count"] != 1 ||
		samples[`pipes_vend_rotation_to_visible_seconds_bucket{le="1"}`] != 0 ||
		samples[`pipes_vend_rotation_to_visible_seconds_bucket{le="2.5"}`] != 1 ||
		samples[`pipes_vend_rotation_to_visible_seconds_bucket{le="+Inf"}`] != 1 {
		t.Fatalf("a rotation 2 s old must land in the 2.5 s bucket: %v", samples)
	}
	if sum := samples["pipes_vend_rotation_to_visible_seconds_sum"]; sum < 2 || sum > 3 {
		t.Fatalf("sum %v, want about 2", sum)
	}

	// Provider disabled, then enabled again: version 2 again, not a rotation.
	backend.set("e3", wire.WatchedCredential{CredentialRef: ref, CredentialsResponse: wire.CredentialsResponse{Error: wire.ErrorNotInstalled}})
	if err := s.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	backend.set("e4", active(2, time.Now().Add(-time.Hour)))
	if err := s.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	// The operator's clock ahead of ours: counted, at zero.
	backend.set("e5", active(3, time.Now().Add(time.Minute)))
	if err := s.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	samples, body := scrape(t, metrics)
	if samples["pipes_vend_rotation_to_visible_seconds_count"] != 2 || samples[`pipes_vend_rotation_to_visible_seconds_bucket{le="0.01"}`] != 1 {
		t.Fatalf("re-enabled version 2 is not a rotation, version 3 (clock skew) counts at 0: %v", samples)
	}
	if strings.Contains(body, ref.UserID) || strings.Contains(body, "sk-plaintext") {
		t.Fatalf("metrics name a user or a credential:\n%s", body)
	}
	if !strings.Contains(body, "# TYPE pipes_vend_rotation_to_visible_seconds histogram") ||
		!strings.Contains(body, "# TYPE pipes_vend_last_success_timestamp_seconds gauge") {
		t.Fatalf("types missing:\n%s", body)
	}

	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodPost, "/data-integrations/openai/credentials", strings.NewReader(`{"user_id":"user_private_42"}`)),
		httptest.NewRequest(http.MethodGet, "/readyz", nil),
		httptest.NewRequest(http.MethodGet, "/", nil),
	} {
		rec := httptest.NewRecorder()
		metrics.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("the metrics listener answered %s %s with %d: it must serve /metrics alone", req.Method, req.URL.Path, rec.Code)
		}
		if strings.Contains(rec.Body.String(), "sk-plaintext") {
			t.Errorf("the metrics listener served a credential on %s", req.URL.Path)
		}
	}
}

// A credential whose files cannot be written must not hold up the others of the same
// answer: a revocation beside it still removes the revoked key from loopback and from
// its files at once. The failure is reported as a file failure (not an outage), without
// the key, and the files are written once the path is writable again.
func TestAFileFailureDoesNotKeepARevokedCredential(t *testing.T) {
	backend := &fakeBackend{}
	srv := httptest.NewServer(backend)
	defer srv.Close()
	dir := t.TempDir()
	blocked := wire.CredentialRef{Provider: "openai", UserID: "user_blocked"}
	s := New(Config{Credentials: []wire.CredentialRef{blocked, ref}, Dir: dir, WatchTimeout: time.Second, FileGID: -1},
		apiclient.New(srv.URL, apiclient.WithToken("t")), slog.New(slog.DiscardHandler))
	ctx := context.Background()
	notInstalled := func(r wire.CredentialRef) wire.WatchedCredential {
		return wire.WatchedCredential{CredentialRef: r, CredentialsResponse: wire.CredentialsResponse{Error: wire.ErrorNotInstalled}}
	}
	revokedValue := active(1, time.Now()).Credential.Value
	backend.set("e1", notInstalled(blocked), active(1, time.Now()))
	// What a sidecar killed mid-write leaves: the first write removes it.
	stale := filepath.Join(FilePath(dir, ref), ".tmp-1234")
	if err := os.MkdirAll(filepath.Dir(stale), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("sk-plaint"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	valueFile := filepath.Join(FilePath(dir, ref), "value")
	if b, err := os.ReadFile(valueFile); err != nil || string(b) != revokedValue {
		t.Fatalf("value file before: %v", err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("a temporary file left by an earlier process is still there: %v", err)
	}

	// A regular file where the blocked credential's directory goes: its files cannot be
	// written. The same answer revokes the other credential.
	if err := os.MkdirAll(filepath.Dir(FilePath(dir, blocked)), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(FilePath(dir, blocked), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	newer := active(2, time.Now())
	newer.CredentialRef = blocked
	backend.set("e2", newer, notInstalled(ref))
	err := s.Sync(ctx, true)
	var fe *FileError
	if !errors.As(err, &fe) || !errors.Is(err, syscall.ENOTDIR) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Sync: %q; want a one-line FileError wrapping the cause", err)
	}
	if _, err := os.Stat(valueFile); !os.IsNotExist(err) {
		t.Fatalf("the revoked credential's file is still there: %v", err)
	}
	h := s.Handler()
	if code, body := do(h, http.MethodPost, "/data-integrations/openai/credentials", `{"user_id":"user_private_42"}`); code != http.StatusOK ||
		!strings.Contains(body, wire.ErrorNotInstalled) || strings.Contains(body, revokedValue) {
		t.Fatalf("loopback after the revocation: %d %s", code, body)
	}
	code, body := do(h, http.MethodGet, "/readyz", "")
	if code != http.StatusOK || !strings.Contains(body, "writing credential files") || strings.Contains(body, "unreachable") ||
		strings.Contains(body, newer.Credential.Value) {
		t.Fatalf("readyz while files cannot be written: %d %q", code, body)
	}
	samples, _ := scrape(t, h)
	if samples["pipes_vend_files_current"] != 0 || samples["pipes_vend_backend_up"] != 1 {
		t.Fatalf("a file failure is not an outage: %v", samples)
	}

	if err := os.Remove(FilePath(dir, blocked)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx, true); err != nil {
		t.Fatalf("once writable: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(FilePath(dir, blocked), "value")); err != nil || string(b) != newer.Credential.Value {
		t.Fatalf("the blocked credential's file after recovery: %v", err)
	}
	if samples, _ := scrape(t, h); samples["pipes_vend_files_current"] != 1 {
		t.Fatalf("after recovery: %v", samples)
	}
}

func do(h http.Handler, method, path, body string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

// Retries wait between half and all of the backoff, so sidecars hit by the same outage
// spread out, and never longer than the cap.
func TestJitterStaysWithinTheBackoff(t *testing.T) {
	for _, d := range []time.Duration{minBackoff, time.Second, 30 * time.Second} {
		for range 1000 {
			if j := jitter(d); j < d/2 || j > d {
				t.Fatalf("jitter(%s) = %s", d, j)
			}
		}
	}
}

// outageBackend answers the watch with a snapshot, or with an error status while one is set.
type outageBackend struct {
	fakeBackend
	status atomic.Int32 // 0: answer the snapshot
}

func (o *outageBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code := int(o.status.Load()); code != 0 {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(wire.ErrorResponse{Code: "forbidden", Message: "may not vend"})
		return
	}
	o.fakeBackend.ServeHTTP(w, r)
}

// During an outage the sidecar serves the last good value and its readiness says it is
// degraded. A 403 is an outage too until it has lasted ForbiddenGrace: a kube-apiserver
// that has just restarted denies every access review for a while (the backend API caches
// that for 10 s), and withdrawing every pod's credentials over it was the bug the chaos
// suite found. A 403 that lasts withdraws them; a success in between starts the grace over.
func TestOutagesAndShortRefusalsKeepTheLastGoodValue(t *testing.T) {
	backend := &outageBackend{}
	srv := httptest.NewServer(backend)
	defer srv.Close()
	const grace = 300 * time.Millisecond
	s := New(Config{Credentials: []wire.CredentialRef{ref}, WatchTimeout: time.Second, FileGID: -1, Dir: t.TempDir(), ForbiddenGrace: grace},
		apiclient.New(srv.URL, apiclient.WithToken("t")), slog.New(slog.DiscardHandler))
	ctx := context.Background()
	h := s.Handler()
	get := func(method, path, body string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	serves := func(what string) {
		t.Helper()
		code, body := get(http.MethodPost, "/data-integrations/openai/credentials", `{"user_id":"user_private_42"}`)
		if code != http.StatusOK || !strings.Contains(body, "sk-plaintext-1-") {
			t.Fatalf("%s: vend answered %d %s; want the last good value", what, code, body)
		}
		if _, err := os.Stat(filepath.Join(FilePath(s.cfg.Dir, ref), "value")); err != nil {
			t.Fatalf("%s: the value file: %v", what, err)
		}
	}
	degraded := func(what, reason string) {
		t.Helper()
		code, body := get(http.MethodGet, "/readyz", "")
		if code != http.StatusOK || !strings.HasPrefix(body, "ok, degraded (serving the last good credentials") || !strings.Contains(body, reason) {
			t.Fatalf("%s: readyz %d %q; want 200 saying it is degraded because of %s", what, code, body, reason)
		}
	}

	backend.set("e1", active(1, time.Now()))
	if err := s.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, outage := range []int32{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusUnauthorized} {
		backend.status.Store(outage)
		if err := s.Sync(ctx, true); err == nil {
			t.Fatalf("%d: no error", outage)
		}
		code := strconv.Itoa(int(outage))
		serves(code)
		degraded(code, code)
	}

	// A refusal shorter than the grace, then a success: nothing is withdrawn.
	backend.status.Store(http.StatusForbidden)
	_ = s.Sync(ctx, true)
	serves("a fresh 403")
	degraded("a fresh 403", "403 forbidden")
	time.Sleep(grace / 2)
	backend.status.Store(0)
	if err := s.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	if code, body := get(http.MethodGet, "/readyz", ""); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("after the backend answered again: readyz %d %q", code, body)
	}

	// The grace starts over after that success, and a 403 that outlasts it withdraws.
	backend.status.Store(http.StatusForbidden)
	_ = s.Sync(ctx, true)
	time.Sleep(grace / 2)
	_ = s.Sync(ctx, true)
	serves("a 403 within the grace, counted from after the last success")
	time.Sleep(grace)
	_ = s.Sync(ctx, true)
	if code, body := get(http.MethodPost, "/data-integrations/openai/credentials", `{"user_id":"user_private_42"}`); code != http.StatusForbidden || strings.Contains(body, "sk-plaintext") {
		t.Fatalf("a 403 that lasted the grace: vend answered %d %s; want 403", code, body)
	}
	if _, err := os.Stat(filepath.Join(FilePath(s.cfg.Dir, ref), "value")); !os.IsNotExist(err) {
		t.Fatalf("a 403 that lasted the grace: the value file is still there (%v)", err)
	}
	if code, _ := get(http.MethodGet, "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("a 403 that lasted the grace: readyz %d; want 503", code)
	}
}
