package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/sidecar"
	"github.com/pipes-dev/pipes-operator/internal/webhook"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// faultBackoff is the sidecars' --max-backoff in these tests: the cap an outage of
// minutes reaches, shortened so that the tests see many capped retries in seconds.
const faultBackoff = time.Second

// TestSidecarFaults is issue #15's scenario 7: the real vend binary against the real
// backend API (one control plane for all faults), behind a front the test controls. Each
// fault logs its figure (go test -v) and fails when the sidecar breaks its promise.
func TestSidecarFaults(t *testing.T) {
	f := newFixture(t)
	t.Run("TokenFileRotated", func(t *testing.T) { testTokenFileRotated(t, f) })
	t.Run("CARotated", func(t *testing.T) { testCARotated(t, f) })
	t.Run("BackendUnreachable", func(t *testing.T) { testBackendUnreachable(t, f) })
	t.Run("BackendSilent", func(t *testing.T) { testBackendSilent(t, f) })
	t.Run("Revoked", func(t *testing.T) { testRevoked(t, f) })
	t.Run("VolumeFull", func(t *testing.T) { testVolumeFull(t, f) })
}

// front is a TLS front for the backend API, standing between it and a sidecar: the test
// chooses its certificate, takes it down (connections cut and new ones closed at once,
// as when the API's endpoints go away) and invalidates tokens. Like the backend API, it
// speaks HTTP/1.1 only.
type front struct {
	url     string
	serving atomic.Pointer[tls.Certificate]

	mu       sync.Mutex
	down     bool
	silent   bool       // a network partition: nothing answers, nothing fails
	held     []net.Conn // connections accepted while silent, never served
	conns    []net.Conn
	attempts []time.Time // connections attempted while down
	revoked  map[string]bool
	tokens   map[string]int // requests forwarded, by bearer token
	refused  int            // requests answered 401 for an invalidated token
}

func newFront(t *testing.T, f *fixture, ca *testCA) *front {
	fr := &front{revoked: map[string]bool{}, tokens: map[string]int{}}
	fr.serving.Store(ca.serving(t))
	upstream, err := url.Parse(f.env.APIURL())
	must(t, err)
	rp := httputil.NewSingleHostReverseProxy(upstream)
	h, err := apiclient.HTTPClientWithCA(f.caFile, time.Minute)
	must(t, err)
	rp.Transport = h.Transport
	rp.ErrorLog = log.New(io.Discard, "", 0) // connections cut on purpose
	srv := &http.Server{
		Handler:           http.HandlerFunc(fr.serve(rp)),
		ErrorLog:          log.New(io.Discard, "", 0), // handshakes the sidecar refuses are expected
		TLSConfig:         &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return fr.serving.Load(), nil }},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1, as internal/serve
		ReadHeaderTimeout: 10 * time.Second,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go func() { _ = srv.ServeTLS(frontListener{ln, fr}, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		fr.mu.Lock()
		defer fr.mu.Unlock()
		for _, c := range fr.held {
			_ = c.Close()
		}
	})
	fr.url = "https://" + ln.Addr().String()
	return fr
}

func (fr *front) serve(next http.Handler) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		fr.mu.Lock()
		if fr.silent {
			// Nothing answers on a connection that went silent, even once the partition
			// heals: only the client's own timeout ends the wait.
			fr.mu.Unlock()
			<-r.Context().Done()
			return
		}
		revoked := fr.revoked[token]
		if revoked {
			fr.refused++
		} else {
			fr.tokens[token]++
		}
		fr.mu.Unlock()
		if revoked {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"code":"unauthorized","message":"the token is no longer valid"}`)
			return
		}
		next.ServeHTTP(silenceable{w, fr, r.Context()}, r)
	}
}

// silenceable holds back an answer that would leave once the front has gone silent, so
// that a long poll in flight goes silent too.
type silenceable struct {
	http.ResponseWriter
	fr  *front
	ctx context.Context
}

func (w silenceable) hold() {
	w.fr.mu.Lock()
	silent := w.fr.silent
	w.fr.mu.Unlock()
	if silent {
		<-w.ctx.Done()
	}
}

func (w silenceable) WriteHeader(code int) { w.hold(); w.ResponseWriter.WriteHeader(code) }

func (w silenceable) Write(b []byte) (int, error) { w.hold(); return w.ResponseWriter.Write(b) }

// frontListener closes what it accepts while the front is down, noting the attempt.
type frontListener struct {
	net.Listener
	fr *front
}

func (l frontListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.fr.mu.Lock()
		if l.fr.silent {
			l.fr.held = append(l.fr.held, c)
			l.fr.mu.Unlock()
			continue
		}
		down := l.fr.down
		if down {
			l.fr.attempts = append(l.fr.attempts, time.Now())
		} else {
			l.fr.conns = append(l.fr.conns, c)
		}
		l.fr.mu.Unlock()
		if !down {
			return c, nil
		}
		_ = c.Close()
	}
}

// setDown takes the front down (cutting every connection) or brings it back.
func (fr *front) setDown(down bool) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.down = down
	if down {
		fr.cutLocked()
	}
}

// cut ends every open connection, as a restarting backend API does.
func (fr *front) cut() {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.cutLocked()
}

func (fr *front) cutLocked() {
	for _, c := range fr.conns {
		_ = c.Close()
	}
	fr.conns = nil
}

// project writes a file into dir as the kubelet updates a projected, ConfigMap or Secret
// volume: dir/name -> ..data/name, where ..data is a symlink to a timestamped directory
// that is swapped atomically (rename), after which the previous directory is deleted.
func project(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	previous, _ := os.Readlink(filepath.Join(dir, "..data"))
	version := filepath.Join(dir, fmt.Sprintf("..%s.%d", time.Now().UTC().Format("2006_01_02_15_04_05"), time.Now().UnixNano()))
	must(t, os.Mkdir(version, 0o755))
	must(t, os.WriteFile(filepath.Join(version, name), data, 0o644))
	tmp := filepath.Join(dir, "..data_tmp")
	must(t, os.Symlink(filepath.Base(version), tmp))
	must(t, os.Rename(tmp, filepath.Join(dir, "..data")))
	if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
		must(t, os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)))
	}
	if previous != "" {
		must(t, os.RemoveAll(filepath.Join(dir, previous)))
	}
}

// vendBehind starts a sidecar for credentials that reaches the backend API through fr,
// with its token and CA bundle in kubelet-projected volumes (tokenDir/token, caDir/ca.crt).
func vendBehind(t *testing.T, f *fixture, fr *front, token string, ca []byte, credentials string, extra ...string) (p *vendProcess, tokenDir, caDir string) {
	tokenDir, caDir = t.TempDir(), t.TempDir()
	project(t, tokenDir, "token", []byte(token))
	project(t, caDir, "ca.crt", ca)
	args := append([]string{"--api-url=" + fr.url, "--ca-file=" + filepath.Join(caDir, "ca.crt"),
		"--token-file=" + filepath.Join(tokenDir, "token"), fmt.Sprintf("--max-backoff=%s", faultBackoff)}, extra...)
	p = f.start(t, "unused", credentials, args...) // the later --token-file, --api-url and --ca-file win
	p.waitReady(t)
	return p, tokenDir, caDir
}

func (f *fixture) upsert(t *testing.T, user, key string) {
	t.Helper()
	_, err := f.backend.UpsertAPIKey(context.Background(), "openai", wire.UpsertAPIKeyRequest{UserID: user, Secret: key})
	must(t, err)
}

func (p *vendProcess) valueFile(user string) string {
	return filepath.Join(sidecar.FilePath(p.dir, wire.CredentialRef{Provider: "openai", UserID: user}), "value")
}

func (p *vendProcess) serves(user, key string) func() bool {
	return func() bool {
		r, err := p.credential(user)
		b, _ := os.ReadFile(p.valueFile(user))
		return err == nil && r.Credential.GetValue() == key && string(b) == key
	}
}

func (p *vendProcess) logged(t *testing.T, keys ...string) {
	t.Helper()
	for _, key := range keys {
		if strings.Contains(p.stderr.String(), key) {
			t.Fatal("the sidecar logged a credential")
		}
	}
}

func key(name string) string {
	return "sk-" + name + "-" + strings.Repeat("x", 30) + strings.ToUpper(name[len(name)-4:])
}

// The kubelet refreshes the projected token by swapping ..data, and the old token stops
// being accepted at once (harsher than a cluster, where it stays valid until it
// expires): the sidecar's next request carries the new token, no request is refused, and
// rotations keep arriving, without a restart.
func testTokenFileRotated(t *testing.T, f *fixture) {
	ca := newTestCA(t, "token-ca")
	fr := newFront(t, f, ca)
	k1, k2, k3 := key("tok-0001"), key("tok-0002"), key("tok-0003")
	f.upsert(t, "tok", k1)
	oldToken := f.token(t, "rotating", "pipes-vendor", webhook.TokenAudience)
	newToken, err := f.env.Token(context.Background(), f.ns, "rotating", webhook.TokenAudience)
	must(t, err)
	p, tokenDir, _ := vendBehind(t, f, fr, oldToken, ca.pem, "openai:tok")

	project(t, tokenDir, "token", []byte(newToken))
	fr.mu.Lock()
	fr.revoked[oldToken] = true
	fr.mu.Unlock()
	swapped := time.Now()
	f.upsert(t, "tok", k2) // answers the long poll that began with the old token
	eventually(t, 10*time.Second, "the rotation after the token swap", p.serves("tok", k2))
	f.upsert(t, "tok", k3) // seen only through a long poll made with the new token
	eventually(t, 10*time.Second, "the next rotation, through the new token", p.serves("tok", k3))
	took := time.Since(swapped)

	fr.mu.Lock()
	refused, withNew := fr.refused, fr.tokens[newToken]
	fr.mu.Unlock()
	if refused != 0 || withNew == 0 {
		t.Fatalf("after the swap %d requests still carried the invalidated token, %d the new one", refused, withNew)
	}
	if code, body := p.get("/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("readyz: %d %q", code, body)
	}
	p.logged(t, k1, k2, k3)
	t.Logf("FIGURE token rotation: 0 requests refused; two rotations served through the new token %s after the swap", took.Round(time.Millisecond))
}

// The backend API's serving certificate moves to a new CA before the kubelet updates the
// mounted CA file (it can lag a minute): meanwhile TLS fails, which is an outage (last
// good value served, readiness says why); once the file is swapped the sidecar trusts the
// new CA without a restart, within the backoff cap.
func testCARotated(t *testing.T, f *fixture) {
	oldCA, newCA := newTestCA(t, "old-ca"), newTestCA(t, "new-ca")
	fr := newFront(t, f, oldCA)
	k1, k2 := key("ca-0001"), key("ca-0002")
	f.upsert(t, "ca", k1)
	p, _, caDir := vendBehind(t, f, fr, f.token(t, "ca", "pipes-vendor", webhook.TokenAudience), oldCA.pem, "openai:ca")

	fr.serving.Store(newCA.serving(t))
	fr.cut() // the API restarts with its new certificate
	f.upsert(t, "ca", k2)
	eventually(t, 10*time.Second, "the sidecar refuses the unknown CA", func() bool {
		_, body := p.get("/readyz")
		return strings.Contains(body, "serving the last good credentials") && strings.Contains(body, "certificate")
	})
	if !p.serves("ca", k1)() {
		t.Fatal("while the CA file lags, the last good value must be served")
	}
	project(t, caDir, "ca.crt", newCA.pem)
	swapped := time.Now()
	eventually(t, faultBackoff+5*time.Second, "the sidecar trusts the new CA", p.serves("ca", k2))
	took := time.Since(swapped)
	if code, body := p.get("/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("readyz after the rotation: %d %q", code, body)
	}
	p.logged(t, k1, k2)
	t.Logf("FIGURE CA rotation: new value served %s after the CA file was swapped (backoff cap %s)", took.Round(time.Millisecond), faultBackoff)
}

// An outage "of minutes": with the backoff capped at faultBackoff, a few seconds are many
// capped retries. Meanwhile the last good value is served over HTTP and in the file and
// /readyz stays 200 but says why it is stale; retries never wait longer than the cap; a
// key stored during the outage is served promptly once the backend API is back.
func testBackendUnreachable(t *testing.T, f *fixture) {
	ca := newTestCA(t, "outage-ca")
	fr := newFront(t, f, ca)
	k1, k2 := key("out-0001"), key("out-0002")
	f.upsert(t, "out", k1)
	p, _, _ := vendBehind(t, f, fr, f.token(t, "out", "pipes-vendor", webhook.TokenAudience), ca.pem, "openai:out")

	const outage = 6 * time.Second
	fr.setDown(true)
	start := time.Now()
	f.upsert(t, "out", k2) // stored while the sidecar cannot hear of it
	noticed := eventually(t, 5*time.Second, "the sidecar notices the outage", func() bool {
		_, metrics := p.get("/metrics")
		return strings.Contains(metrics, "pipes_vend_backend_up 0")
	})
	for time.Since(start) < outage {
		if !p.serves("out", k1)() {
			t.Fatal("the last good value must be served (loopback and file) during the outage")
		}
		if code, body := p.get("/readyz"); code != http.StatusOK || !strings.Contains(body, "serving the last good credentials") || !strings.Contains(body, "unreachable") {
			t.Fatalf("readyz during the outage: %d %q", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fr.setDown(false)
	back := time.Now()
	recovered := eventually(t, faultBackoff+5*time.Second, "the key stored during the outage is served", p.serves("out", k2))

	fr.mu.Lock()
	attempts := append([]time.Time{start}, fr.attempts...)
	fr.mu.Unlock()
	attempts = append(attempts, back)
	var longest time.Duration
	for i := 1; i < len(attempts); i++ {
		longest = max(longest, attempts[i].Sub(attempts[i-1]))
	}
	// The cap, plus a failed attempt's own duration and a loaded machine's scheduling.
	if longest > faultBackoff+500*time.Millisecond || len(attempts) < int(outage/faultBackoff) {
		t.Fatalf("%d attempts in %s, longest wait %s: the backoff must stay under its cap of %s", len(attempts)-2, outage, longest, faultBackoff)
	}
	if recovered > faultBackoff+time.Second {
		t.Fatalf("recovered %s after the backend came back; want within the backoff cap %s", recovered, faultBackoff)
	}
	if code, body := p.get("/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("readyz after recovery: %d %q", code, body)
	}
	p.logged(t, k1, k2)
	t.Logf("FIGURE backend outage %s: noticed after %s, last good value served throughout, %d retries, longest wait %s (cap %s), new key served %s after the backend was back",
		outage, noticed.Round(time.Millisecond), len(attempts)-2, longest.Round(time.Millisecond), faultBackoff, recovered.Round(time.Millisecond))
}

// A partition rather than a refusal: the connection carrying the long poll goes silent
// (no answer, no reset) and stays dead after the network heals, as one to a vanished
// node does. The sidecar must give it up by itself (HTTP timeout: the watch timeout plus
// 15 s) and reconnect, serving the last good value meanwhile.
func testBackendSilent(t *testing.T, f *fixture) {
	ca := newTestCA(t, "silent-ca")
	fr := newFront(t, f, ca)
	k1, k2 := key("sil-0001"), key("sil-0002")
	f.upsert(t, "sil", k1)
	const watchTimeout = time.Second
	p, _, _ := vendBehind(t, f, fr, f.token(t, "sil", "pipes-vendor", webhook.TokenAudience), ca.pem, "openai:sil",
		fmt.Sprintf("--watch-timeout=%s", watchTimeout))

	fr.mu.Lock()
	fr.silent = true
	fr.mu.Unlock()
	start := time.Now()
	f.upsert(t, "sil", k2)
	for time.Since(start) < 3*time.Second {
		if !p.serves("sil", k1)() {
			t.Fatal("the last good value must be served while the backend API is silent")
		}
		time.Sleep(100 * time.Millisecond)
	}
	fr.mu.Lock()
	fr.silent = false
	fr.mu.Unlock()
	healed := time.Now()
	giveUp := watchTimeout + 15*time.Second // apiHTTPClient's timeout
	eventually(t, giveUp+faultBackoff+5*time.Second, "the sidecar gives up the silent connection and reconnects", p.serves("sil", k2))
	took := time.Since(start)
	if took > giveUp+faultBackoff+2*time.Second {
		t.Fatalf("served again %s after the connection went silent; want within the HTTP timeout %s plus the backoff", took, giveUp)
	}
	p.logged(t, k1, k2)
	t.Logf("FIGURE silent backend (partition): last good value served, new key served %s after the connection went silent (%s after the network healed; bound: HTTP timeout %s + backoff)",
		took.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond), giveUp)
}

// A disconnect: from the moment loopback answers not_installed the file is already gone
// (both change under one lock), and neither comes back, not even across an outage.
func testRevoked(t *testing.T, f *fixture) {
	ca := newTestCA(t, "revoke-ca")
	fr := newFront(t, f, ca)
	k1, kept := key("rev-0001"), key("keep-0001")
	f.upsert(t, "rev", k1)
	f.upsert(t, "keep", kept)
	p, _, _ := vendBehind(t, f, fr, f.token(t, "rev", "pipes-vendor", webhook.TokenAudience), ca.pem, "openai:rev, openai:keep")

	must(t, f.backend.Disconnect(context.Background(), "rev", "openai", ""))
	learned := eventually(t, 5*time.Second, "the sidecar learns of the disconnect", func() bool {
		r, err := p.credential("rev")
		return err == nil && r.Error == wire.ErrorNotInstalled
	})
	stillThere := func() error {
		if _, err := os.Stat(p.valueFile("rev")); !os.IsNotExist(err) {
			return fmt.Errorf("the revoked credential's file is still there (%v)", err)
		}
		if r, err := p.credential("rev"); err != nil || r.Active || r.Credential.GetValue() != "" {
			return fmt.Errorf("loopback: %+v %v", r, err)
		}
		return nil
	}
	if err := stillThere(); err != nil {
		t.Fatalf("once loopback says not_installed: %v", err)
	}
	fr.setDown(true) // an outage keeps the last good values, which no longer include it
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := stillThere(); err != nil {
			t.Fatalf("during an outage after the revocation: %v", err)
		}
	}
	if !p.serves("keep", kept)() {
		t.Fatal("the other credential must still be served")
	}
	fr.setDown(false)
	p.logged(t, k1, kept)
	t.Logf("FIGURE revocation: loopback not_installed and file removed %s after the disconnect; neither came back during a 2 s outage",
		learned.Round(time.Millisecond))
}

// mountTmpfs mounts a tmpfs of size bytes at a new directory, as an emptyDir of medium
// Memory with a sizeLimit is; it needs root (CI runs as root).
func mountTmpfs(t *testing.T, size int) string {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("mounting a tmpfs as root: %v; the full-volume fault must be tested where it can be (CI runs as root)", err)
		}
		t.Skipf("mounting a tmpfs needs root (CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes into dir until the file system is full, and returns how to free it.
func fill(t *testing.T, dir string) (free func()) {
	path := filepath.Join(dir, "filler")
	file, err := os.Create(path)
	must(t, err)
	chunk := make([]byte, 4096)
	for {
		if _, err = file.Write(chunk); err != nil {
			break
		}
	}
	_ = file.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the volume: %v", err)
	}
	return func() { must(t, os.Remove(path)) }
}

// The memory volume fills up. A rotation cannot be written: each file keeps its last
// complete content (a reader running throughout never sees anything else), loopback
// serves the new value, readiness and metrics say why without the key, and a
// disconnect of another credential still removes its file. Once space frees, the files
// catch up within the backoff cap.
func testVolumeFull(t *testing.T, f *fixture) {
	ca := newTestCA(t, "full-ca")
	fr := newFront(t, f, ca)
	dir := mountTmpfs(t, 64<<10)
	a1, a2, b1 := key("fulla-0001"), key("fulla-0002"), key("fullb-0001")
	f.upsert(t, "full_a", a1)
	f.upsert(t, "full_b", b1)
	p, _, _ := vendBehind(t, f, fr, f.token(t, "full", "pipes-vendor", webhook.TokenAudience), ca.pem, "openai:full_a, openai:full_b", "--dir="+dir)
	p.dir = dir

	// A reader of full_a's files for the whole test: every read is a complete file.
	stop, done := make(chan struct{}), make(chan error, 1)
	var reads atomic.Int64
	go func() {
		done <- func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				b, err := os.ReadFile(p.valueFile("full_a"))
				if err != nil || (string(b) != a1 && string(b) != a2) {
					return fmt.Errorf("read %d bytes of value, %v: not a complete value", len(b), err)
				}
				raw, err := os.ReadFile(filepath.Join(filepath.Dir(p.valueFile("full_a")), "metadata.json"))
				var meta sidecar.Metadata
				if err != nil || json.Unmarshal(raw, &meta) != nil || (meta.Version != 1 && meta.Version != 2) {
					return fmt.Errorf("metadata.json: %d bytes, %v: not a complete file", len(raw), err)
				}
				reads.Add(1)
			}
		}()
	}()
	stopReader := func() {
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	free := fill(t, dir)
	f.upsert(t, "full_a", a2)
	reported := eventually(t, 5*time.Second, "the write failure is reported", func() bool {
		_, body := p.get("/readyz")
		return strings.Contains(body, "no space left on device")
	})
	code, body := p.get("/readyz")
	if code != http.StatusOK || !strings.Contains(body, "writing credential files") || strings.Contains(body, a2) {
		t.Fatalf("readyz while the volume is full: %d %q", code, body)
	}
	if _, metrics := p.get("/metrics"); !strings.Contains(metrics, "pipes_vend_files_current 0") || !strings.Contains(metrics, "pipes_vend_backend_up 1") {
		t.Fatalf("metrics while the volume is full:\n%s", metrics)
	}
	if b, _ := os.ReadFile(p.valueFile("full_a")); string(b) != a1 {
		t.Fatal("the file must keep its last complete value while the volume is full")
	}
	if r, err := p.credential("full_a"); err != nil || r.Credential.GetValue() != a2 {
		t.Fatalf("loopback serves the rotated value meanwhile: %v", err)
	}

	// A revocation while the volume is still full.
	must(t, f.backend.Disconnect(context.Background(), "full_b", "openai", ""))
	eventually(t, faultBackoff+5*time.Second, "the disconnected credential's file goes although the volume is full", func() bool {
		_, err := os.Stat(p.valueFile("full_b"))
		r, rerr := p.credential("full_b")
		return os.IsNotExist(err) && rerr == nil && r.Error == wire.ErrorNotInstalled
	})

	free()
	freed := time.Now()
	eventually(t, faultBackoff+5*time.Second, "the files catch up once space frees", p.serves("full_a", a2))
	caughtUp := time.Since(freed)
	stopReader()
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(p.valueFile("full_a")), ".tmp-*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}
	if _, metrics := p.get("/metrics"); !strings.Contains(metrics, "pipes_vend_files_current 1") {
		t.Fatalf("metrics after recovery:\n%s", metrics)
	}
	if code, body := p.get("/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("readyz after recovery: %d %q", code, body)
	}
	if !strings.Contains(p.stderr.String(), "no space left on device") {
		t.Fatal("the sidecar's log must say why the files are behind")
	}
	p.logged(t, a1, a2, b1)
	t.Logf("FIGURE memory volume full: failure reported after %s, %d reads all complete, files caught up %s after space freed (cap %s)",
		reported.Round(time.Millisecond), reads.Load(), caughtUp.Round(time.Millisecond), faultBackoff)
}
