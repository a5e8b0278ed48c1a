package devenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Names of the files WriteServingCerts writes.
const (
	CAFile   = "ca.crt"  // the dev CA's certificate: what clients trust (PIPES_API_CA)
	CertFile = "tls.crt" // the serving certificate, issued by the CA
	KeyFile  = "tls.key" // its private key
)

// ServingNames are the names the dev serving certificate is valid for: the loopback
// addresses the webhooks and the backend API listen on.
var ServingNames = []string{"localhost", "127.0.0.1", "::1"}

// WriteServingCerts creates a throwaway CA and a serving certificate it issues for names
// (ServingNames when none), and writes ca.crt, tls.crt and tls.key into dir. It returns the CA's
// certificate (PEM). The CA's key is never written: nothing else can be issued by it.
//
// envtest's own webhook certificate cannot be used for this: envtest hands out the
// serving certificate itself as the "CA" (WebhookInstallOptions.LocalServingCAData),
// which Go and curl accept as a trust anchor but OpenSSL-based clients and Node do not
// (UNABLE_TO_VERIFY_LEAF_SIGNATURE).
func WriteServingCerts(dir string, names ...string) (caPEM []byte, err error) {
	if len(names) == 0 {
		names = ServingNames
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "pipes-operator dev CA", Organization: []string{"pipes.dev"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "pipes-operator dev server", Organization: []string{"pipes.dev"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, name := range names {
		if ip := net.ParseIP(name); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, name)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}

	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for name, data := range map[string][]byte{
		CAFile:   caPEM,
		CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// TrustCA points the webhook configurations envtest installed (from
// WebhookInstallOptions) at caPEM instead of envtest's own certificate, so the API
// server accepts webhooks served with a certificate from WriteServingCerts.
func TrustCA(ctx context.Context, c client.Client, w *envtest.WebhookInstallOptions, caPEM []byte) error {
	for _, installed := range w.MutatingWebhooks {
		var cfg admissionv1.MutatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: installed.Name}, &cfg); err != nil {
			return err
		}
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = caPEM
		}
		if err := c.Update(ctx, &cfg); err != nil {
			return fmt.Errorf("trusting the dev CA in %s: %w", cfg.Name, err)
		}
	}
	for _, installed := range w.ValidatingWebhooks {
		var cfg admissionv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: installed.Name}, &cfg); err != nil {
			return err
		}
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = caPEM
		}
		if err := c.Update(ctx, &cfg); err != nil {
			return fmt.Errorf("trusting the dev CA in %s: %w", cfg.Name, err)
		}
	}
	w.LocalServingCAData = bytes.Clone(caPEM)
	return nil
}
