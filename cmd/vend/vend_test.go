package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/sidecar"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/webhook"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// fixture is a control plane with the operator and backend API, a Provider, a backend
// client and a way to run the real vend binary as a process.
type fixture struct {
	env     *testenv.Env
	ns      string
	caFile  string
	bin     string
	backend *apiclient.Client
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	// Every test and benchmark here starts with a fixture, so they all skip here.
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	e, err := testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	f := &fixture{env: e, ns: "apps", bin: filepath.Join(t.TempDir(), "vend"), caFile: filepath.Join(t.TempDir(), "ca.crt")}
	if out, err := exec.Command("go", "build", "-o", f.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.WriteFile(f.caFile, e.APICA(), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must(t, e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}))
	must(t, e.Client.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}))
	h, err := apiclient.HTTPClientWithCA(f.caFile, 10*time.Second)
	must(t, err)
	f.backend = apiclient.New(e.APIURL(), apiclient.WithHTTPClient(h), apiclient.WithToken(f.token(t, "backend", "pipes-backend", "")))
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// token creates a ServiceAccount bound to role (none if "") and mints a token for audience.
func (f *fixture) token(t testing.TB, sa, role, audience string) string {
	var audiences []string
	if audience != "" {
		audiences = []string{audience}
	}
	tok, err := f.env.ServiceAccountToken(context.Background(), f.ns, sa, role, f.ns, audiences...)
	must(t, err)
	return tok
}

type vendProcess struct {
	cmd    *exec.Cmd
	listen string
	dir    string
	stderr *bytes.Buffer
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// start runs the vend binary with a token for sa.
func (f *fixture) start(t testing.TB, token, credentials string, extra ...string) *vendProcess {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	must(t, os.WriteFile(tokenFile, []byte(token), 0o600))
	p := &vendProcess{listen: freePort(t), dir: filepath.Join(dir, "pipes"), stderr: &bytes.Buffer{}}
	args := append([]string{"--api-url=" + f.env.APIURL(), "--ca-file=" + f.caFile, "--token-file=" + tokenFile,
		"--credentials=" + credentials, "--listen=" + p.listen, "--dir=" + p.dir, "--watch-timeout=20s"}, extra...)
	p.cmd = exec.Command(f.bin, args...)
	p.cmd.Stderr = p.stderr
	must(t, p.cmd.Start())
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	return p
}

func (p *vendProcess) get(path string) (int, string) {
	resp, err := http.Get("http://" + p.listen + path)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getURL returns the body of GET http://addr+path ("" on error).
func getURL(addr, path string) string {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return ""
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (p *vendProcess) credential(user string) (wire.CredentialsResponse, error) {
	var out wire.CredentialsResponse
	body, _ := json.Marshal(wire.CredentialsRequest{UserID: user})
	resp, err := http.Post("http://"+p.listen+"/data-integrations/openai/credentials", "application/json", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return out, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

func (p *vendProcess) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := p.get("/readyz"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			_, body := p.get("/readyz")
			t.Fatalf("sidecar not ready: %s\n%s", body, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func TestSidecarAgainstTheBackendAPI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	key1, key2 := "sk-side-"+strings.Repeat("1", 30)+"ONE1", "sk-side-"+strings.Repeat("2", 30)+"TWO2"
	_, err := f.backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", Secret: key1})
	must(t, err)

	metricsAddr := freePort(t)
	p := f.start(t, f.token(t, "app", "pipes-vendor", webhook.TokenAudience), "openai:user_a, openai:user_b", "--metrics-listen="+metricsAddr)
	p.waitReady(t)

	resp, err := p.credential("user_a")
	must(t, err)
	if !resp.Active || resp.Credential.Value != key1 {
		t.Fatalf("loopback vend: %+v", resp)
	}
	valueFile := filepath.Join(sidecar.FilePath(p.dir, wire.CredentialRef{Provider: "openai", UserID: "user_a"}), "value")
	if b, err := os.ReadFile(valueFile); err != nil || string(b) != key1 {
		t.Fatalf("value file: %q, %v", b, err)
	}
	if fi, err := os.Stat(valueFile); err != nil || fi.Mode().Perm() != 0o440 {
		t.Fatalf("value file mode: %v, %v", fi.Mode(), err)
	}
	var meta sidecar.Metadata
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(valueFile), "metadata.json"))
	must(t, err)
	must(t, json.Unmarshal(raw, &meta))
	if meta.Version != 1 || meta.Last4 != "ONE1" || bytes.Contains(raw, []byte(key1)) {
		t.Fatalf("metadata.json: %s", raw)
	}
	if resp, err := p.credential("user_b"); err != nil || resp.Active || resp.Error != wire.ErrorNotInstalled {
		t.Fatalf("user_b: %+v %v", resp, err)
	}
	if _, err := os.Stat(sidecar.FilePath(p.dir, wire.CredentialRef{Provider: "openai", UserID: "user_b"})); !os.IsNotExist(err) {
		t.Fatalf("no files may exist for a credential that is not installed: %v", err)
	}
	if _, err := p.credential("user_c"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("a credential outside --credentials must be 404: %v", err)
	}

	// Rotation: both the HTTP answer and the file change, without a restart.
	start := time.Now()
	_, err = f.backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", Secret: key2})
	must(t, err)
	eventually(t, 5*time.Second, "HTTP sees the rotated key", func() bool {
		r, err := p.credential("user_a")
		return err == nil && r.Credential.GetValue() == key2
	})
	eventually(t, 5*time.Second, "the file holds the rotated key", func() bool {
		b, _ := os.ReadFile(valueFile)
		return string(b) == key2
	})
	t.Logf("rotation visible over HTTP and in the file %s after the upsert", time.Since(start).Round(time.Millisecond))

	// The separate metrics listener: the sidecar measured that rotation (stored to served
	// within the 5 s target), and serves nothing there but /metrics.
	eventually(t, 5*time.Second, "the rotation is counted", func() bool {
		return strings.Contains(getURL(metricsAddr, "/metrics"), "pipes_vend_rotation_to_visible_seconds_count 1\n")
	})
	if m := getURL(metricsAddr, "/metrics"); !strings.Contains(m, `pipes_vend_rotation_to_visible_seconds_bucket{le="5"} 1`) {
		t.Fatalf("the rotation took over 5 s to reach the sidecar:\n%s", m)
	}
	for _, path := range []string{"/data-integrations/openai/credentials", "/readyz", "/"} {
		resp, err := http.Post("http://"+metricsAddr+path, "application/json", strings.NewReader(`{"user_id":"user_a"}`))
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if (resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed) || bytes.Contains(body, []byte(key2)) {
			t.Fatalf("the metrics listener answered POST %s with %d: it must serve /metrics alone", path, resp.StatusCode)
		}
	}

	// Disconnect: not_installed, and the files go.
	must(t, f.backend.Disconnect(ctx, "user_a", "openai", ""))
	eventually(t, 5*time.Second, "disconnect reaches the sidecar", func() bool {
		r, err := p.credential("user_a")
		_, statErr := os.Stat(valueFile)
		return err == nil && r.Error == wire.ErrorNotInstalled && os.IsNotExist(statErr)
	})

	if bytes.Contains(p.stderr.Bytes(), []byte(key1)) || bytes.Contains(p.stderr.Bytes(), []byte(key2)) {
		t.Fatal("the sidecar logged a credential")
	}
	code, metrics := p.get("/metrics")
	if code != http.StatusOK || !strings.Contains(metrics, "pipes_vend_backend_up 1") {
		t.Fatalf("metrics: %d %s", code, metrics)
	}

	// Graceful shutdown.
	must(t, p.cmd.Process.Signal(os.Interrupt))
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("vend exited with %v on SIGINT", err)
	}
}

func TestSidecarWithoutPermissionIsNotReady(t *testing.T) {
	f := newFixture(t)
	_, err := f.backend.UpsertAPIKey(context.Background(), "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", Secret: "sk-" + strings.Repeat("n", 30)})
	must(t, err)
	p := f.start(t, f.token(t, "norole", "", webhook.TokenAudience), "openai:user_a")
	var body string
	eventually(t, 10*time.Second, "a reason for not being ready", func() bool {
		var code int
		code, body = p.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "forbidden")
	})
	if !strings.Contains(body, "may not vend") || !strings.Contains(body, "pipes-vendor") {
		t.Fatalf("readyz reason should name the missing permission and the role: %s", body)
	}
	if _, err := p.credential("user_a"); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "may not vend") {
		t.Fatalf("vend while the backend API refuses must be its 403: %v", err)
	}
	if entries, _ := os.ReadDir(p.dir); len(entries) != 0 {
		t.Fatalf("nothing may be written without permission, found %v", entries)
	}
}

func TestOnceAndFlags(t *testing.T) {
	f := newFixture(t)
	key := "sk-once-" + strings.Repeat("o", 30)
	_, err := f.backend.UpsertAPIKey(context.Background(), "openai", wire.UpsertAPIKeyRequest{UserID: "job", Secret: key})
	must(t, err)
	p := f.start(t, f.token(t, "job", "pipes-vendor", ""), "openai:job", "--once")
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("--once: %v\n%s", err, p.stderr)
	}
	b, err := os.ReadFile(filepath.Join(sidecar.FilePath(p.dir, wire.CredentialRef{Provider: "openai", UserID: "job"}), "value"))
	if err != nil || string(b) != key {
		t.Fatalf("--once wrote %q, %v", b, err)
	}

	for args, want := range map[string]string{
		"--api-url=http://x --ca-file=/ca --credentials=a:b":                         "--api-url",
		"--api-url=https://x --credentials=a:b":                                      "--ca-file or --ca-data",
		"--api-url=https://x --ca-file=/ca --credentials=a":                          "--credentials: entry 1",
		"--api-url=https://x --ca-file=/ca --credentials=a:b --listen=0.0.0.0:80":    "--listen",
		"--api-url=https://x --ca-file=/ca --credentials=a:b --watch-timeout=2h":     "--watch-timeout",
		"--api-url=https://x --ca-file=/ca --credentials=a:b --max-backoff=100ms":    "--max-backoff",
		"--api-url=https://x --ca-file=/ca --credentials=a:b --forbidden-grace=-1s":  "--forbidden-grace",
		"--api-url=https://x --ca-file=/ca --credentials=a:b --no-such-flag=1":       "no-such-flag",
		"--api-url=https://x --ca-file=/ca --credentials=a:b --metrics-listen=:8299": "--metrics-listen",
		"--api-url=https://x --ca-file=/ca --credentials=a:b --metrics-listen=9299":  "--metrics-listen",
	} {
		cmd := exec.Command(f.bin, strings.Fields(args)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), want) {
			t.Errorf("vend %s: exit %v, output %q; want exit 2 naming %s", args, err, out, want)
		}
	}
}

// BenchmarkLocalRead measures what an application sees: POST /credentials on the
// sidecar's loopback port (8 concurrent readers, keep-alive), and the sidecar's resident
// memory afterwards.
func BenchmarkLocalRead(b *testing.B) {
	f := newFixture(b)
	key := "sk-bench-" + strings.Repeat("b", 48)
	_, err := f.backend.UpsertAPIKey(context.Background(), "openai", wire.UpsertAPIKeyRequest{UserID: "u", Secret: key})
	must(b, err)
	p := f.start(b, f.token(b, "app", "pipes-vendor", webhook.TokenAudience), "openai:u")
	p.waitReady(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	body := []byte(`{"user_id":"u"}`)
	url := "http://" + p.listen + "/data-integrations/openai/credentials"

	testenv.MeasureParallel(b, func() error {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	must(b, err)
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb float64
			_, _ = fmt.Sscanf(strings.TrimSpace(rest), "%f", &kb) // no number: reports 0
			b.ReportMetric(kb/1024, "rss-MiB")
		}
	}
}

// testCA is a CA that signs serving certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) serving(t testing.TB) *tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "pipes-api"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestSidecarStopsServingWhatItMayNoLongerRead narrows the sidecar's ServiceAccount to one
// account (RBAC resourceNames) and takes its permission away: a 403 from the backend API
// is an authoritative answer, so the files go, loopback answers 403 and /readyz says why;
// it recovers once allowed again.
func TestSidecarStopsServingWhatItMayNoLongerRead(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	key1, key2 := "sk-narrow-"+strings.Repeat("1", 30)+"ONE1", "sk-narrow-"+strings.Repeat("2", 30)+"TWO2"
	_, err := f.backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", Secret: key1})
	must(t, err)
	var accounts pipesv1.ConnectedAccountList
	must(t, f.env.Client.List(ctx, &accounts, client.InNamespace(f.ns)))
	if len(accounts.Items) != 1 {
		t.Fatalf("want one ConnectedAccount, got %d", len(accounts.Items))
	}
	// A Role for exactly this account (names are deterministic, so it may be written first).
	must(t, f.env.Client.Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "vend-user-a"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"pipes.dev"}, Resources: []string{"connectedaccounts"},
			Verbs: []string{"vend"}, ResourceNames: []string{accounts.Items[0].Name}}},
	}))
	bind := func() {
		must(t, f.env.Bind(ctx, f.ns, "narrow-vends", rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "vend-user-a"}, f.ns, "narrow"))
	}
	bind()
	p := f.start(t, f.token(t, "narrow", "", webhook.TokenAudience), "openai:user_a", "--watch-timeout=2s", "--forbidden-grace=2s")
	p.waitReady(t)
	valueFile := filepath.Join(sidecar.FilePath(p.dir, wire.CredentialRef{Provider: "openai", UserID: "user_a"}), "value")
	if b, err := os.ReadFile(valueFile); err != nil || string(b) != key1 {
		t.Fatalf("value file: %q, %v", b, err)
	}
	gone := func(key string) func() bool {
		return func() bool {
			_, statErr := os.Stat(valueFile)
			r, err := p.credential("user_a")
			return os.IsNotExist(statErr) && (err != nil || r.Credential.GetValue() != key)
		}
	}
	serves := func(key string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(valueFile)
			r, err := p.credential("user_a")
			return string(b) == key && err == nil && r.Credential.GetValue() == key
		}
	}

	// Disconnect: whatever the backend answers for an account that is gone (403 for a
	// narrowed role that cannot name it, or not_installed), the key is no longer served.
	must(t, f.backend.Disconnect(ctx, "user_a", "openai", ""))
	eventually(t, 5*time.Second, "the disconnected key is gone from file and loopback", gone(key1))

	// Reconnected under the same (deterministic) name: allowed again.
	eventually(t, 10*time.Second, "reconnecting once the old account is gone", func() bool {
		_, err = f.backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", Secret: key2})
		if err != nil && !apiclient.IsCode(err, wire.CodeConflict) {
			t.Fatal(err)
		}
		return err == nil
	})
	eventually(t, 45*time.Second, "the sidecar serves the reconnected key", serves(key2))

	// The permission is taken away. The backend API caches access reviews for 10 s, each
	// long poll (2 s here) authorizes again, and the sidecar obeys a 403 that lasts the
	// grace (2 s here).
	must(t, f.env.Client.Delete(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "narrow-vends"}}))
	eventually(t, 30*time.Second, "a revoked permission removes the file and the loopback answer", gone(key2))
	resp, err := http.Post("http://"+p.listen+"/data-integrations/openai/credentials", "application/json", strings.NewReader(`{"user_id":"user_a"}`))
	must(t, err)
	var body wire.ErrorResponse
	must(t, json.NewDecoder(resp.Body).Decode(&body))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || body.Code != wire.CodeForbidden || !strings.Contains(body.Message, "may not vend") {
		t.Fatalf("loopback after the revocation: %d %+v; want 403 forbidden with the backend's reason", resp.StatusCode, body)
	}
	if code, ready := p.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(ready, "403 forbidden") {
		t.Fatalf("readyz after the revocation: %d %q", code, ready)
	}
	if _, metrics := p.get("/metrics"); !strings.Contains(metrics, "pipes_vend_ready 0") || !strings.Contains(metrics, "pipes_vend_credentials_active 0") {
		t.Fatalf("metrics after the revocation:\n%s", metrics)
	}

	bind()
	eventually(t, 45*time.Second, "the sidecar recovers once allowed again", serves(key2))
	if code, ready := p.get("/readyz"); code != http.StatusOK || ready != "ok\n" {
		t.Fatalf("readyz after recovery: %d %q", code, ready)
	}
	for _, key := range []string{key1, key2} {
		if bytes.Contains(p.stderr.Bytes(), []byte(key)) {
			t.Fatal("the sidecar logged a credential")
		}
	}
}
