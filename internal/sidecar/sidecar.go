// Package sidecar owns the vend sidecar's behaviour: keeping a workload's credentials
// current through the backend API's long poll, serving them on loopback with the
// backend API's own routes and JSON, and writing them as files into a shared memory
// volume. It imports only the standard library and the API client, to stay small.
package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/vendspec"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Config is the sidecar's configuration.
type Config struct {
	Credentials  []wire.CredentialRef
	Dir          string        // where credential files go ("" writes none)
	WatchTimeout time.Duration // long-poll duration
	FileGID      int           // group that may read credential files (-1: leave as is)
	// MaxBackoff caps the wait between retries after a failure (default 30 s): how long
	// the sidecar may take to notice that the backend API is back, or that space freed.
	MaxBackoff time.Duration
	// ForbiddenGrace is how long the backend API must keep answering 403 before the
	// credentials being served are withdrawn (0: at the first 403); until then a 403 is
	// handled as an outage. See DefaultForbiddenGrace.
	ForbiddenGrace time.Duration
}

// minBackoff is the first wait after a failure.
const minBackoff = 500 * time.Millisecond

// DefaultForbiddenGrace is vend's --forbidden-grace. A kube-apiserver that has just
// started denies every SubjectAccessReview until its RBAC caches are filled (a second
// or two, longer under load), and the backend API caches that denial for 10 s: a sidecar
// that acted on the first 403 withdrew every credential of every pod over a routine
// control-plane restart (found by the chaos suite, test/chaos). A revocation through
// RBAC lasts: it is obeyed after the backend's 10 s cache and this grace.
const DefaultForbiddenGrace = 30 * time.Second

// Sidecar holds the current credentials. The zero value is not usable; use New.
type Sidecar struct {
	cfg Config
	api *apiclient.Client
	log *slog.Logger

	mu          sync.RWMutex
	creds       map[wire.CredentialRef]wire.CredentialsResponse
	etag        string
	synced      bool      // a full snapshot has been received
	lastSuccess time.Time // last answer from the backend
	lastError   string    // why the last call failed ("" after a success)
	// fileError is why the files could not be brought up to date ("" once they are):
	// loopback serves the new values meanwhile, and each file keeps its last complete one.
	fileError string
	// forbidden is the backend's 403 answer while it refuses this workload: nothing is
	// served until it allows it again.
	forbidden *wire.ErrorResponse
	// forbiddenSince is when the backend API started answering 403 (zero after any
	// success): the 403 is acted on once it has lasted cfg.ForbiddenGrace.
	forbiddenSince time.Time
	syncs          int64
	// lastActive is the version of each credential last served; rotation observes the
	// time from storing to serving of each new one (see observeRotation).
	lastActive map[wire.CredentialRef]int64
	rotation   histogram
}

// New returns a sidecar that fetches through api.
func New(cfg Config, api *apiclient.Client, log *slog.Logger) *Sidecar {
	if cfg.WatchTimeout == 0 {
		cfg.WatchTimeout = 30 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	return &Sidecar{cfg: cfg, api: api, log: log, creds: map[wire.CredentialRef]wire.CredentialsResponse{},
		lastActive: map[wire.CredentialRef]int64{}, rotation: newHistogram(rotationBuckets)}
}

// Sync makes one long-poll call and applies what it returns. With a zero timeout it
// returns the current snapshot at once (used by --once and at start).
func (s *Sidecar) Sync(ctx context.Context, wait bool) error {
	s.mu.RLock()
	req := wire.WatchRequest{Credentials: s.cfg.Credentials, ETag: s.etag}
	s.mu.RUnlock()
	if wait {
		req.TimeoutSeconds = int(s.cfg.WatchTimeout.Seconds())
	} else {
		req.ETag = ""
	}
	resp, err := s.api.Watch(ctx, req)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastError = describe(err)
		var ae *apiclient.Error
		if isForbidden(err) && errors.As(err, &ae) {
			if s.forbiddenSince.IsZero() {
				s.forbiddenSince = time.Now()
			}
			// Nothing served yet, or refused for longer than a restarting API server does.
			if !s.synced || time.Since(s.forbiddenSince) >= s.cfg.ForbiddenGrace {
				s.revoke(ae)
			}
		}
		return err
	}
	s.lastSuccess, s.lastError, s.forbidden, s.forbiddenSince = time.Now(), "", nil, time.Time{}
	if !resp.Changed {
		return nil
	}
	// Every credential is applied, in memory and in files, even after one's files failed:
	// a full memory volume must not keep a revoked credential of the same answer served.
	var fileErrs []error
	for _, c := range resp.Credentials {
		if !slices.Contains(s.cfg.Credentials, c.CredentialRef) {
			// Not one this workload asked for: neither kept, served nor written (its
			// provider would name a directory, "../.." one outside the volume).
			s.log.Warn("ignoring a credential the backend API sent unasked", "provider", c.Provider)
			continue
		}
		prev, had := s.creds[c.CredentialRef]
		s.creds[c.CredentialRef] = c.CredentialsResponse
		if err := s.writeFiles(c); err != nil {
			fileErrs = append(fileErrs, err)
		}
		s.observeRotation(c, had)
		if !had || versionOf(prev) != versionOf(c.CredentialsResponse) || prev.Error != c.Error {
			s.log.Info("credential updated", "credential", c.String(), "active", c.Active, "error", c.Error, "version", versionOf(c.CredentialsResponse))
		}
	}
	if len(fileErrs) > 0 {
		// The etag stays, so the next watch answers at once with the same credentials
		// and the files are written again (after the backoff) until they can be.
		err := &FileError{Errs: fileErrs}
		s.fileError = err.Error()
		return err
	}
	s.etag, s.synced, s.fileError = resp.ETag, true, ""
	s.syncs++
	return nil
}

// FileError is a failure to bring the credential files up to date (e.g. the memory
// volume is full), as opposed to the backend API's. Its text names paths, never values.
type FileError struct{ Errs []error }

// Error is one line (readiness and logs), each credential's failure after a semicolon.
func (e *FileError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return "writing credential files: " + strings.Join(msgs, "; ")
}

func (e *FileError) Unwrap() []error { return e.Errs }

// observeRotation records, for a credential that has just become visible (files written,
// loopback serving it once the lock is released), how long ago it was stored. Only a new
// version seen while running counts: not the first snapshot after a start or a 403 (had
// is false), nor the same version served again after its Provider was re-enabled.
func (s *Sidecar) observeRotation(c wire.WatchedCredential, had bool) {
	if !c.Active || c.Credential == nil {
		return
	}
	version := c.Credential.Version
	last, seen := s.lastActive[c.CredentialRef]
	s.lastActive[c.CredentialRef] = version
	if !had || (seen && last == version) || c.RotatedAt.IsZero() {
		return
	}
	// The operator's clock against ours: a skew may not make it negative.
	s.rotation.observe(max(0, time.Since(c.RotatedAt).Seconds()))
}

// revoke stops serving every credential after a 403. Unlike an outage, a 403 is the
// backend's answer: this workload may no longer read (at least one of) its credentials,
// e.g. its RBAC was narrowed or removed, and the watch cannot say which, so none is
// kept — neither in memory nor in files. The next success starts from a full snapshot.
func (s *Sidecar) revoke(ae *apiclient.Error) {
	s.forbidden = &wire.ErrorResponse{Code: ae.Code, Message: ae.Message}
	s.fileError = ""
	for _, ref := range s.cfg.Credentials {
		if err := s.writeFiles(wire.WatchedCredential{CredentialRef: ref}); err != nil {
			s.fileError = "removing credential files: " + err.Error()
		}
	}
	clear(s.creds)
	s.etag, s.synced = "", false
}

func isForbidden(err error) bool {
	var ae *apiclient.Error
	return errors.As(err, &ae) && ae.Status == http.StatusForbidden
}

func versionOf(r wire.CredentialsResponse) int64 {
	if r.Credential == nil {
		return 0
	}
	return r.Credential.Version
}

// describe turns an API error into a readiness reason.
func describe(err error) string {
	var ae *apiclient.Error
	var fe *FileError
	if errors.As(err, &fe) {
		return fe.Error()
	}
	if errors.As(err, &ae) {
		return fmt.Sprintf("backend API answered %d %s: %s", ae.Status, ae.Code, ae.Message)
	}
	return "backend API unreachable: " + err.Error()
}

// Run keeps credentials current until ctx ends: long polls back to back, with
// exponential backoff (0.5 s to MaxBackoff, jittered) after errors. After an outage
// (unreachable, 5xx, also 401, which a token the kubelet has not refreshed yet gives) the
// last good values keep being served; after a 403 that lasts
// cfg.ForbiddenGrace none are (see revoke).
func (s *Sidecar) Run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		s.mu.RLock()
		wait := s.synced
		s.mu.RUnlock()
		err := s.Sync(ctx, wait)
		if err == nil {
			backoff = minBackoff
			continue
		}
		if ctx.Err() != nil {
			return
		}
		delay := jitter(backoff)
		var fe *FileError
		switch {
		case s.Forbidden():
			s.log.Warn("the backend API refuses this workload's credentials; serving none until it allows them", "error", describe(err), "retryIn", delay.String())
		case isForbidden(err):
			s.log.Warn("the backend API refuses this workload's credentials; serving the last good values until the refusal has lasted the grace period", "error", describe(err), "grace", s.cfg.ForbiddenGrace.String(), "retryIn", delay.String())
		case errors.As(err, &fe):
			s.log.Warn("writing credential files failed; each file keeps its last complete value, loopback serves the new ones", "error", describe(err), "retryIn", delay.String())
		default:
			s.log.Warn("syncing credentials failed; serving the last good values", "error", describe(err), "retryIn", delay.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// jitter waits between half and all of d, so that the sidecars of every pod, which an
// outage of the backend API hits at the same moment, do not all come back at once.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1) //nolint:gosec // G404: spreading retries needs no secrecy
}

// safeName keeps IDs that are plain file names as they are.
var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$`)

// FilePath is where a credential's files live: DIR/PROVIDER/USER[@ORG]/, with IDs that
// are not plain file names (and providers that are not Provider names) hex-encoded, so
// that it is always inside DIR.
func FilePath(dir string, ref wire.CredentialRef) string {
	name := ref.UserID
	if ref.OrganizationID != "" {
		name += "@" + ref.OrganizationID
	}
	if !safeName.MatchString(name) || strings.Contains(name, "..") {
		name = fmt.Sprintf("x-%x", name)
	}
	provider := ref.Provider
	if !vendspec.IsProviderName(provider) {
		provider = fmt.Sprintf("x-%x", provider) // never a Provider's name: the annotation allows none such
	}
	return filepath.Join(dir, provider, name)
}

// Metadata is written beside each value as metadata.json.
type Metadata struct {
	Provider       string `json:"provider"`
	UserID         string `json:"user_id"`
	OrganizationID string `json:"organization_id,omitempty"`
	AuthMethod     string `json:"auth_method"`
	Version        int64  `json:"version"`
	Last4          string `json:"last_4,omitempty"`
	UpdatedAt      string `json:"updated_at"`
}

// writeFiles writes or removes one credential's files. Both files are first written in
// full under temporary names, then renamed over the old ones: readers see the old or the
// new content, never a part of a file, and a full volume (which fails the writes, not the
// renames) leaves both old files as they were rather than a new value beside old
// metadata.
func (s *Sidecar) writeFiles(c wire.WatchedCredential) error {
	if s.cfg.Dir == "" {
		return nil
	}
	dir := FilePath(s.cfg.Dir, c.CredentialRef)
	if !c.Active || c.Credential == nil {
		return os.RemoveAll(dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	// Only this process writes here, one credential at a time: a temporary file already
	// present was left by a sidecar killed mid-write (e.g. OOM). It may hold part of a
	// key and takes space in the small memory volume.
	if stale, err := filepath.Glob(filepath.Join(dir, ".tmp-*")); err == nil {
		for _, name := range stale {
			_ = os.Remove(name) // a leftover that cannot be removed does not stop the write
		}
	}
	meta, _ := json.MarshalIndent(Metadata{
		Provider: c.Provider, UserID: c.UserID, OrganizationID: c.OrganizationID, AuthMethod: c.Credential.AuthMethod,
		Version: c.Credential.Version, Last4: wire.Last4(c.Credential.Value), UpdatedAt: time.Now().UTC().Format(time.RFC3339),
	}, "", "  ")
	value, err := s.writeTemp(dir, []byte(c.Credential.Value))
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(value) }() // no-op after the rename
	metadata, err := s.writeTemp(dir, append(meta, '\n'))
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(metadata) }()
	if err := os.Rename(value, filepath.Join(dir, "value")); err != nil {
		return err
	}
	return os.Rename(metadata, filepath.Join(dir, "metadata.json"))
}

// writeTemp writes data to a new hidden file in dir, readable as the credential files
// are, and returns its name; nothing is left behind when it fails.
func (s *Sidecar) writeTemp(dir string, data []byte) (name string, err error) {
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close() // the write error is the one to report
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if s.cfg.FileGID >= 0 {
		if err := os.Chown(f.Name(), -1, s.cfg.FileGID); err != nil && !errors.Is(err, os.ErrPermission) {
			return "", err
		}
	}
	if err := os.Chmod(f.Name(), 0o440); err != nil { //nolint:gosec // G302: group-readable on purpose, the app container reads the files as FileGID
		return "", err
	}
	return f.Name(), nil
}

// Forbidden reports whether the backend API's last answer was 403: nothing is served.
func (s *Sidecar) Forbidden() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.forbidden != nil
}

// Ready reports whether credentials have been fetched, and why not.
func (s *Sidecar) Ready() (bool, string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.synced:
		return true, ""
	case s.lastError != "":
		return false, s.lastError
	case s.fileError != "":
		return false, s.fileError
	}
	return false, "waiting for the first answer from the backend API"
}

// degraded says why a ready sidecar may be serving older values than the backend API's
// ("" when it is not): the backend cannot be reached, or files could not be written.
func (s *Sidecar) degraded() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return strings.Join(slices.DeleteFunc([]string{s.lastError, s.fileError}, func(v string) bool { return v == "" }), "; ")
}

// MetricsHandler serves GET /metrics alone, for the listener beyond loopback
// (--metrics-listen) that Prometheus scrapes: nothing else, never a credential.
func (s *Sidecar) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	return mux
}

// Handler serves the backend API's vend routes for the configured credentials, plus
// /healthz, /readyz and /metrics.
func (s *Sidecar) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /data-integrations/{slug}/credentials", func(w http.ResponseWriter, r *http.Request) { s.serveCredential(w, r, false) })
	mux.HandleFunc("POST /data-integrations/{slug}/token", func(w http.ResponseWriter, r *http.Request) { s.serveCredential(w, r, true) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, reason := s.Ready()
		if !ready {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		if stale := s.degraded(); stale != "" {
			_, _ = io.WriteString(w, "ok, degraded (serving the last good credentials; "+stale+")\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, wire.ErrorResponse{Code: wire.CodeNotFound,
			Message: fmt.Sprintf("no route %s %s on the vend sidecar: it serves POST /data-integrations/{slug}/credentials and POST /data-integrations/{slug}/token", r.Method, r.URL.Path)})
	})
	return mux
}

func (s *Sidecar) serveCredential(w http.ResponseWriter, r *http.Request, token bool) {
	var req wire.CredentialsRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Code: wire.CodeInvalidRequest, Message: "malformed JSON body; send {\"user_id\": …, \"organization_id\": …}"})
		return
	}
	ref := wire.CredentialRef{Provider: r.PathValue("slug"), UserID: req.UserID, OrganizationID: req.OrganizationID}
	s.mu.RLock()
	resp, ok := s.creds[ref]
	synced, forbidden := s.synced, s.forbidden
	s.mu.RUnlock()
	switch {
	case forbidden != nil && slices.Contains(s.cfg.Credentials, ref):
		writeJSON(w, http.StatusForbidden, forbidden)
	case !ok && !synced && forbidden == nil:
		_, reason := s.Ready()
		writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Code: "not_ready", Message: "credentials not fetched yet: " + reason})
	case !ok:
		writeJSON(w, http.StatusNotFound, wire.ErrorResponse{Code: wire.CodeNotFound,
			Message: fmt.Sprintf("%s is not one of this workload's credentials; add it to the pipes.dev/credentials annotation", ref)})
	case token && resp.Credential != nil && resp.Credential.AuthMethod == wire.AuthMethodAPIKey:
		writeJSON(w, http.StatusUnprocessableEntity, wire.ErrorResponse{Code: wire.CodeAuthMethodMismatch,
			Message: fmt.Sprintf("%q uses API keys, which have no access token: use POST /data-integrations/%s/credentials", ref.Provider, ref.Provider)})
	default:
		writeJSON(w, http.StatusOK, resp)
	}
}

// serveMetrics writes the Prometheus text format by hand, keeping the sidecar on the
// standard library. No metric has a label: nothing about users or providers leaves here.
func (s *Sidecar) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	up, ready, files := 0, 0, 0
	if s.lastError == "" && !s.lastSuccess.IsZero() {
		up = 1
	}
	if s.fileError == "" && !s.lastSuccess.IsZero() {
		files = 1
	}
	if s.synced {
		ready = 1
	}
	active := 0
	for _, c := range s.creds {
		if c.Active {
			active++
		}
	}
	lastSuccess := 0.0 // never: the convention for a timestamp not yet set
	if !s.lastSuccess.IsZero() {
		lastSuccess = float64(s.lastSuccess.UnixMilli()) / 1000
	}
	var b strings.Builder
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, formatFloat(v))
	}
	gauge("pipes_vend_backend_up", "Whether the last call to the backend API succeeded.", float64(up))
	gauge("pipes_vend_ready", "Whether credentials have been fetched (0 also while the backend API refuses this workload with 403).", float64(ready))
	gauge("pipes_vend_last_success_timestamp_seconds", "When the backend API last answered (Unix time; 0 before the first answer): time() minus it is how stale the served values may be.", lastSuccess)
	gauge("pipes_vend_files_current", "Whether the credential files hold what loopback serves (0 before the first answer and after a write failed, e.g. the memory volume is full).", float64(files))
	gauge("pipes_vend_credentials_active", "Configured credentials that can be vended.", float64(active))
	fmt.Fprintf(&b, "# HELP pipes_vend_syncs_total Snapshots received from the backend API.\n# TYPE pipes_vend_syncs_total counter\npipes_vend_syncs_total %d\n", s.syncs)
	s.rotation.write(&b, "pipes_vend_rotation_to_visible_seconds",
		"Time from a new credential version being stored by the operator to this sidecar serving it (files and loopback); clock skew between the operator and this node adds to it.")
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	// A write error means the scraper went away: nobody is left to tell.
	_, _ = io.WriteString(w, b.String())
}

// rotationBuckets span a watch that wakes at once (milliseconds) to a sidecar that was
// backing off from an outage (up to 30 s between tries) and beyond.
var rotationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// histogram is a Prometheus histogram with fixed buckets, guarded by the Sidecar's mutex.
type histogram struct {
	upper  []float64
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

func newHistogram(upper []float64) histogram {
	return histogram{upper: upper, counts: make([]uint64, len(upper))}
}

func (h *histogram) observe(v float64) {
	for i, le := range h.upper {
		if v <= le {
			h.counts[i]++
			break
		}
	}
	h.sum += v
	h.count++
}

func (h *histogram) write(b *strings.Builder, name, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cumulative uint64
	for i, le := range h.upper {
		cumulative += h.counts[i]
		fmt.Fprintf(b, "%s_bucket{le=\"%s\"} %d\n", name, formatFloat(le), cumulative)
	}
	fmt.Fprintf(b, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, h.count, name, formatFloat(h.sum), name, h.count)
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
