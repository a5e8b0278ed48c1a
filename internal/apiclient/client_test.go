package apiclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// newCA returns a CA's PEM and a function issuing serving certificates for 127.0.0.1.
func newCA(t *testing.T, name string) ([]byte, func() *tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	issue := func() *tls.Certificate {
		leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf := &x509.Certificate{
			SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &leafKey.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: leafKey}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), issue
}

func TestHTTPClientWithCAFollowsTheFile(t *testing.T) {
	pem1, issue1 := newCA(t, "one")
	pem2, issue2 := newCA(t, "two")
	var cert atomic.Pointer[tls.Certificate]
	cert.Store(issue1())
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		TLSConfig:         &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.Load(), nil }},
		ErrorLog:          log.New(io.Discard, "", 0),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String()

	file := filepath.Join(t.TempDir(), "ca.crt")
	write := func(b []byte) {
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	get := func(h *http.Client) error {
		resp, err := h.Get(url)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}

	write([]byte("not a certificate"))
	if _, err := HTTPClientWithCA(file, 5*time.Second); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("a bad bundle at start: %v", err)
	}
	write(pem1)
	h, err := HTTPClientWithCA(file, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := get(h); err != nil {
		t.Fatal(err)
	}
	// The name is verified too, not only the chain: the certificate is for 127.0.0.1.
	if resp, err := h.Get(strings.Replace(url, "127.0.0.1", "localhost", 1)); err == nil || !strings.Contains(err.Error(), "wanted to match localhost") {
		if err == nil {
			_ = resp.Body.Close()
		}
		t.Fatalf("a certificate for another name was accepted: %v", err)
	}

	write([]byte("half-written garbage"))
	if err := get(h); err != nil {
		t.Fatalf("an unreadable bundle keeps the last good one: %v", err)
	}

	cert.Store(issue2()) // the server rotates first; the file is still bad
	h.CloseIdleConnections()
	if err := get(h); err == nil || !strings.Contains(err.Error(), "still trusting the last good CA bundle") {
		t.Fatalf("a failure while the bundle cannot be reloaded must say so: %v", err)
	}

	write(pem2) // the rotated bundle arrives
	if err := get(h); err != nil {
		t.Fatalf("after the bundle changed: %v", err)
	}
}
