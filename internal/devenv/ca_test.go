package devenv

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestWriteServingCerts checks that ca.crt is a CA that issued tls.crt, not tls.crt
// itself, and that clients which never take a leaf as a trust anchor (OpenSSL, Node)
// accept a server using tls.crt when given only ca.crt.
func TestWriteServingCerts(t *testing.T) {
	dir := t.TempDir()
	caPEM, err := WriteServingCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca := parseCert(t, filepath.Join(dir, CAFile))
	leaf := parseCert(t, filepath.Join(dir, CertFile))
	if onDisk, _ := os.ReadFile(filepath.Join(dir, CAFile)); !bytes.Equal(onDisk, caPEM) {
		t.Error("WriteServingCerts returned something else than ca.crt")
	}
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("ca.crt: IsCA %v, KeyUsageCertSign %v; want a CA", ca.IsCA, ca.KeyUsage&x509.KeyUsageCertSign != 0)
	}
	if bytes.Equal(ca.Raw, leaf.Raw) || leaf.IsCA {
		t.Fatal("tls.crt is the CA certificate, or a CA")
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("tls.crt is not issued by ca.crt: %v", err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("tls.crt lacks ExtKeyUsageServerAuth: %v", leaf.ExtKeyUsage)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range ServingNames {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("tls.crt does not verify for %s: %v", name, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tls.key: %v, mode %v; want 0600", err, fi.Mode())
	}

	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })} //nolint:gosec // test server
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	addr := ln.Addr().String()
	host, port, _ := net.SplitHostPort(addr)

	if openssl, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed; skipping")
	} else {
		cmd := exec.Command(openssl, "s_client", "-connect", addr, "-verify_return_error", "-verify_ip", host, "-CAfile", filepath.Join(dir, CAFile))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verify return code: 0 (ok)") {
			t.Errorf("openssl s_client -verify_return_error -CAfile ca.crt: %v\n%s", err, out)
		}
	}
	if node, err := exec.LookPath("node"); err != nil {
		t.Log("node not installed; skipping")
	} else {
		for _, h := range []string{"127.0.0.1", "localhost"} {
			script := `require("https").get({host: process.argv[1], port: process.argv[2], ca: require("fs").readFileSync(process.argv[3])}, (r) => process.exit(r.statusCode === 200 ? 0 : 2))
  .on("error", (e) => { console.error(e.code || e.message); process.exit(1); });`
			if out, err := exec.Command(node, "-e", script, h, port, filepath.Join(dir, CAFile)).CombinedOutput(); err != nil {
				t.Errorf("node https.get(%s) with ca: ca.crt: %v\n%s", h, err, out)
			}
		}
	}
}

func parseCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: want exactly one PEM certificate", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
