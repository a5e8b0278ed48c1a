package operator_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/certsync"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

const webhookServiceName = "pipes-webhook-service.pipes-system.svc"

// The manager as deployed issues its own certificate: it must serve with it seconds after
// starting (not after the kubelet's next sync of a Secret volume), inject its CA into the
// webhook configurations, and follow a rotation without a restart; and so must a replica
// that is not the leader.
func TestCertRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	start := time.Now()
	env, err := testenv.Start(testenv.Options{Webhooks: true, CertRotation: true, LeaderElection: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	t.Logf("control plane up and webhook server serving its generated certificate %s after start", time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	opts := env.Env.WebhookInstallOptions
	addr := net.JoinHostPort(opts.LocalServingHost, strconv.Itoa(opts.LocalServingPort))
	dir := env.CertDir()

	first := certSecret(ctx, t, env.Client)
	if len(first["ca.crt"]) == 0 {
		t.Fatal("the webhook server started before cert-controller filled the Secret")
	}
	waitFor(t, "the files, the served certificate and the webhook configurations match the Secret", func() error {
		return matches(ctx, env.Client, dir, addr, first)
	})
	replicaAddr, replicaDir, err := env.StartReplica()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second replica, not the leader, serves the same certificate", func() error {
		return matches(ctx, env.Client, replicaDir, replicaAddr, first)
	})

	// Emptying the Secret makes cert-controller issue a new CA and certificate; everything
	// follows without a restart.
	rotated := time.Now()
	var secret corev1.Secret
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: testenv.CertSecret}, &secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = nil
	if err := env.Client.Update(ctx, &secret); err != nil {
		t.Fatal(err)
	}
	var second map[string][]byte
	waitFor(t, "cert-controller issues a new CA", func() error {
		second = certSecret(ctx, t, env.Client)
		if len(second["ca.crt"]) == 0 || bytes.Equal(second["ca.crt"], first["ca.crt"]) {
			return fmt.Errorf("the Secret still holds the old CA (or none)")
		}
		return nil
	})
	waitFor(t, "the files, the served certificate and the webhook configurations follow the rotation", func() error {
		return matches(ctx, env.Client, dir, addr, second)
	})
	waitFor(t, "the second replica follows the rotation", func() error {
		return matches(ctx, env.Client, replicaDir, replicaAddr, second)
	})
	t.Logf("rotated certificate served %s after the Secret was emptied", time.Since(rotated).Round(time.Millisecond))
	if served(addr, first["ca.crt"]) == nil {
		t.Fatal("the server still presents a certificate of the old CA")
	}
}

func certSecret(ctx context.Context, t *testing.T, c client.Client) map[string][]byte {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: testenv.CertSecret}, &s); err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// matches says how the cert dir, the served certificate or the CA bundles differ from data.
func matches(ctx context.Context, c client.Client, dir, addr string, data map[string][]byte) error {
	for _, name := range certsync.Files {
		have, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if !bytes.Equal(have, data[name]) {
			return fmt.Errorf("%s in the cert dir differs from the Secret", name)
		}
	}
	if err := served(addr, data["ca.crt"]); err != nil {
		return err
	}
	var vwc admissionv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, types.NamespacedName{Name: "validating-webhook-configuration"}, &vwc); err != nil {
		return err
	}
	var mwc admissionv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, types.NamespacedName{Name: "mutating-webhook-configuration"}, &mwc); err != nil {
		return err
	}
	var bundles [][]byte
	for _, w := range vwc.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	for _, w := range mwc.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	for _, b := range bundles {
		if !bytes.Equal(b, data["ca.crt"]) {
			return fmt.Errorf("a webhook's caBundle is not the Secret's CA")
		}
	}
	return nil
}

// served verifies the certificate the server at addr presents for the webhook Service's
// name against caPEM.
func served(addr string, caPEM []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no CA in PEM")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: pool, ServerName: webhookServiceName, MinVersion: tls.VersionTLS12})
	if err != nil {
		return err
	}
	return conn.Close()
}

func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not after a minute: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
