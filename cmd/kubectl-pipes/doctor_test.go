package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

// TestDoctor breaks, one at a time, each condition doctor claims to find, and checks the
// exact line it prints and its exit code; then puts it right and checks all is OK again.
func TestDoctor(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	c := env.Client
	const ns = "plugin-doctor"
	createNamespace(t, ns)
	opNS := testenv.OperatorNamespace

	// A healthy installation, as config/default deploys it: the Deployment (available,
	// as a controller would report it), the certificate Secret cert-controller fills (here
	// from envtest's certificate, the one the webhooks serve), and a keyset backup.
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: "pipes-controller-manager"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"control-plane": "controller-manager"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"control-plane": "controller-manager"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "pipes-operator/manager:test"}}},
			},
		},
	}
	createDeployment := func(available int32) {
		t.Helper()
		d := deployment.DeepCopy()
		if err := c.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
		setAvailable(t, available)
	}
	createDeployment(2)
	certDir := env.Env.WebhookInstallOptions.LocalServingCertDir
	tlsCrt, err := os.ReadFile(filepath.Join(certDir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	certSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: "pipes-webhook-cert"},
		Data: map[string][]byte{"ca.crt": env.APICA(), "tls.crt": tlsCrt}}
	if err := c.Create(ctx, certSecret); err != nil {
		t.Fatal(err)
	}
	if r := kubectlPipes(t, adminKube, "", "keyset", "backup", "--file", filepath.Join(t.TempDir(), "k.json")); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := kubectlPipes(t, adminKube, "", "keyset", "backup", "--sealing", "--file", filepath.Join(t.TempDir(), "s.json")); r.code != 0 {
		t.Fatal(r.stderr)
	}
	var vwc admissionv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, types.NamespacedName{Name: "validating-webhook-configuration"}, &vwc); err != nil {
		t.Fatal(err)
	}
	original := vwc.DeepCopy()
	restoreWebhooks := func(t *testing.T) {
		var cur admissionv1.ValidatingWebhookConfiguration
		err := c.Get(ctx, types.NamespacedName{Name: original.Name}, &cur)
		if err == nil {
			cur.Webhooks = original.Webhooks
			err = c.Update(ctx, &cur)
		} else if client.IgnoreNotFound(err) == nil {
			re := original.DeepCopy()
			re.ResourceVersion, re.UID = "", ""
			err = c.Create(ctx, re)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	editWebhooks := func(t *testing.T, edit func(w *admissionv1.ValidatingWebhook)) {
		var cur admissionv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: original.Name}, &cur); err != nil {
			t.Fatal(err)
		}
		for i := range cur.Webhooks {
			edit(&cur.Webhooks[i])
		}
		if err := c.Update(ctx, &cur); err != nil {
			t.Fatal(err)
		}
	}
	setCert := func(t *testing.T, pemCert []byte) {
		var s corev1.Secret
		if err := c.Get(ctx, client.ObjectKeyFromObject(certSecret), &s); err != nil {
			t.Fatal(err)
		}
		s.Data["tls.crt"] = pemCert
		if err := c.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
	}
	keysetKey := types.NamespacedName{Namespace: opNS, Name: "pipes-keyset"}
	var keyset corev1.Secret
	if err := c.Get(ctx, keysetKey, &keyset); err != nil {
		t.Fatal(err)
	}
	editKeysetAnnotations := func(t *testing.T, edit func(map[string]string)) {
		var s corev1.Secret
		if err := c.Get(ctx, keysetKey, &s); err != nil {
			t.Fatal(err)
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		edit(s.Annotations)
		if err := c.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
	}
	var backedUp map[string]string
	sealingKey := types.NamespacedName{Namespace: opNS, Name: pipesv1.SealingKeysetSecret}
	var sealingKeyset corev1.Secret
	if err := c.Get(ctx, sealingKey, &sealingKeyset); err != nil {
		t.Fatal(err)
	}
	editSealingAnnotations := func(t *testing.T, edit func(map[string]string)) {
		var s corev1.Secret
		if err := c.Get(ctx, sealingKey, &s); err != nil {
			t.Fatal(err)
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		edit(s.Annotations)
		if err := c.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
	}
	publicKey := types.NamespacedName{Namespace: opNS, Name: pipesv1.SealingPublicKeysetConfigMap}
	var public corev1.ConfigMap
	if err := c.Get(ctx, publicKey, &public); err != nil {
		t.Fatal(err)
	}
	setPublic := func(t *testing.T, data map[string]string) {
		var cm corev1.ConfigMap
		err := c.Get(ctx, publicKey, &cm)
		if client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
		if err != nil {
			cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: publicKey.Name, Labels: public.Labels}, Data: data}
			err = c.Create(ctx, &cm)
		} else {
			cm.Data = data
			err = c.Update(ctx, &cm)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	alice, err := env.Env.AddUser(envtestUser("doctor-alice"), nil)
	if err != nil {
		t.Fatal(err)
	}
	aliceKube, err := writeKubeconfig(alice, "doctor-alice")
	if err != nil {
		t.Fatal(err)
	}
	// envtest's certificate lives a week; doctor's default warning is at a week.
	args := []string{"doctor", "-n", ns, "--webhook-config", "validating-webhook-configuration", "--mutating-webhook-config", "mutating-webhook-configuration", "--expiry-warning", "24h"}
	allOK := []string{"OK    operator …", "OK    webhooks …", "OK    webhook-ca …", "OK    certificate …", "OK    keyset …", "OK    keyset-backup …",
		"OK    seal-keyset …", "OK    seal-public …", "OK    seal-backup …", "OK    rbac …", "OK    rbac-admin …"}

	cases := []struct {
		name    string
		kube    string
		breakIt func(t *testing.T)
		fix     func(t *testing.T)
		code    int
		lines   []string // whole lines doctor must print (prefixes where they end in "…")
	}{
		{name: "healthy", lines: allOK},
		{
			name:    "operator Deployment missing",
			breakIt: func(t *testing.T) { deleteObject(t, deployment.DeepCopy()) },
			fix:     func(*testing.T) { createDeployment(2) },
			code:    1,
			lines: []string{"FAIL  operator      Deployment pipes-system/pipes-controller-manager not found; fix: install the operator (kubectl apply --server-side -k config/default, or helm install), or name its namespace with --operator-namespace",
				"OK    webhooks…"},
		},
		{
			name:    "operator not ready",
			breakIt: func(t *testing.T) { setAvailable(t, 0) },
			fix:     func(t *testing.T) { setAvailable(t, 2) },
			code:    1,
			lines:   []string{"FAIL  operator      Deployment pipes-system/pipes-controller-manager has 0 of 2 replicas available: webhooks and the backend API are down; fix: kubectl describe -n pipes-system deployment/pipes-controller-manager; kubectl logs -n pipes-system deployment/pipes-controller-manager"},
		},
		{
			name:    "operator partly ready",
			breakIt: func(t *testing.T) { setAvailable(t, 1) },
			fix:     func(t *testing.T) { setAvailable(t, 2) },
			lines:   []string{"WARN  operator      Deployment pipes-system/pipes-controller-manager has 1 of 2 replicas available; fix: kubectl describe -n pipes-system deployment/pipes-controller-manager"},
		},
		{
			name: "webhook configuration without caBundle",
			breakIt: func(t *testing.T) {
				editWebhooks(t, func(w *admissionv1.ValidatingWebhook) { w.ClientConfig.CABundle = nil })
			},
			fix:  restoreWebhooks,
			code: 1,
			lines: []string{
				"FAIL  webhooks      the API server cannot call the webhooks, so pipes.dev objects cannot be created or changed: …",
				"FAIL  webhook-ca    no caBundle for webhook(s) vconnectedaccount.pipes.dev, vorganizationprovider.pipes.dev, vprovider.pipes.dev: the API server cannot verify the operator's certificate; fix: the manager's cert-controller writes it once running (kubectl logs -n pipes-system deployment/pipes-controller-manager); with cert-manager, annotate the configurations with cert-manager.io/inject-ca-from",
			},
		},
		{
			name: "webhook server unreachable",
			breakIt: func(t *testing.T) {
				editWebhooks(t, func(w *admissionv1.ValidatingWebhook) {
					u, err := url.Parse(*w.ClientConfig.URL)
					if err != nil {
						t.Fatal(err)
					}
					u.Host = "127.0.0.1:1" // nothing listens there
					w.ClientConfig.URL = ptr.To(u.String())
				})
			},
			fix:  restoreWebhooks,
			code: 1,
			lines: []string{"FAIL  webhooks      the API server cannot call the webhooks, so pipes.dev objects cannot be created or changed: …",
				"OK    webhook-ca…"},
		},
		{
			name:    "webhook configuration missing",
			breakIt: func(t *testing.T) { deleteObject(t, original.DeepCopy()) },
			fix:     restoreWebhooks,
			code:    1,
			lines: []string{
				"FAIL  webhooks      a dry-run ConnectedAccount naming a missing Provider was accepted in plugin-doctor: the validating webhook did not run; fix: check ValidatingWebhookConfiguration validating-webhook-configuration (kubectl apply --server-side -k config/default restores it)",
				"FAIL  webhook-ca    ValidatingWebhookConfiguration validating-webhook-configuration not found; fix: reinstall it (kubectl apply --server-side -k config/default), or name it with --webhook-config / --mutating-webhook-config",
			},
		},
		{
			name:    "certificate Secret missing",
			breakIt: func(t *testing.T) { deleteObject(t, certSecret.DeepCopy()) },
			fix: func(t *testing.T) {
				s := certSecret.DeepCopy()
				s.ResourceVersion = ""
				if err := c.Create(ctx, s); err != nil {
					t.Fatal(err)
				}
			},
			code:  1,
			lines: []string{"FAIL  certificate   Secret pipes-system/pipes-webhook-cert not found: the webhooks and backend API have no certificate to serve; fix: kubectl apply --server-side -k config/default recreates it and the manager fills it; with cert-manager, name its Secret with --cert-secret"},
		},
		{
			name: "certificate expired",
			breakIt: func(t *testing.T) {
				setCert(t, selfSigned(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)))
			},
			fix:   func(t *testing.T) { setCert(t, tlsCrt) },
			code:  1,
			lines: []string{"FAIL  certificate   the serving certificate in Secret pipes-system/pipes-webhook-cert expired at …"},
		},
		{
			name:    "certificate not signed by the caBundle",
			breakIt: func(t *testing.T) { setCert(t, selfSigned(t, time.Now().Add(-time.Hour), time.Now().Add(2*time.Hour))) },
			fix:     func(t *testing.T) { setCert(t, tlsCrt) },
			code:    1,
			lines:   []string{"FAIL  certificate   the caBundle of validating-webhook-configuration does not verify the serving certificate in Secret pipes-system/pipes-webhook-cert (x509: certificate signed by unknown authority…"},
		},
		{
			name:  "certificate expiring within --expiry-warning",
			kube:  "expiry",
			lines: []string{"WARN  certificate   the serving certificate in Secret pipes-system/pipes-webhook-cert expires at …"},
		},
		{
			name: "keyset never backed up",
			breakIt: func(t *testing.T) {
				editKeysetAnnotations(t, func(a map[string]string) { backedUp = maps.Clone(a); clear(a) })
			},
			fix:   func(t *testing.T) { editKeysetAnnotations(t, func(a map[string]string) { maps.Copy(a, backedUp) }) },
			code:  1,
			lines: []string{"FAIL  keyset-backup Secret pipes-system/pipes-keyset was never backed up: if it is lost, every stored credential is; fix: kubectl pipes keyset backup --file pipes-keyset.json, and keep the file offline"},
		},
		{
			name: "keyset rotated since the backup",
			breakIt: func(t *testing.T) {
				editKeysetAnnotations(t, func(a map[string]string) { backedUp = maps.Clone(a); a[pipesv1.AnnotationKeysetBackedUpKeyIDs] = "1" })
			},
			fix:   func(t *testing.T) { editKeysetAnnotations(t, func(a map[string]string) { maps.Copy(a, backedUp) }) },
			lines: []string{"WARN  keyset-backup the last backup (…"},
		},
		{
			name:    "keyset Secret missing",
			breakIt: func(t *testing.T) { deleteObject(t, keyset.DeepCopy()) },
			fix: func(t *testing.T) {
				var s corev1.Secret
				s.ObjectMeta = metav1.ObjectMeta{Namespace: opNS, Name: keysetKey.Name, Labels: keyset.Labels, Annotations: keyset.Annotations}
				s.Data = keyset.Data
				if err := c.Create(ctx, &s); err != nil {
					t.Fatal(err)
				}
			},
			code:  1,
			lines: []string{"FAIL  keyset        Secret pipes-system/pipes-keyset not found: no stored credential can be read; fix: restore it from your backup: kubectl create secret generic -n pipes-system pipes-keyset --from-file=keyset.json=pipes-keyset.json"},
		},
		{
			name: "sealing keyset never backed up",
			breakIt: func(t *testing.T) {
				editSealingAnnotations(t, func(a map[string]string) { backedUp = maps.Clone(a); clear(a) })
			},
			fix: func(t *testing.T) { editSealingAnnotations(t, func(a map[string]string) { maps.Copy(a, backedUp) }) },
			lines: []string{"WARN  seal-backup   Secret pipes-system/pipes-sealing-keyset was never backed up: if it is lost, no sealed API key in Git opens; fix: kubectl pipes keyset backup --sealing --file pipes-sealing-keyset.json, and keep the file offline",
				"OK    seal-public …"},
		},
		{
			name: "sealing keyset rotated since the backup",
			breakIt: func(t *testing.T) {
				editSealingAnnotations(t, func(a map[string]string) { backedUp = maps.Clone(a); a[pipesv1.AnnotationKeysetBackedUpKeyIDs] = "1" })
			},
			fix:   func(t *testing.T) { editSealingAnnotations(t, func(a map[string]string) { maps.Copy(a, backedUp) }) },
			lines: []string{"WARN  seal-backup   the last backup (…"},
		},
		{
			name:    "public sealing keyset missing",
			breakIt: func(t *testing.T) { deleteUntilGone(t, public.DeepCopy()) },
			fix:     func(t *testing.T) { setPublic(t, public.Data) },
			code:    1,
			lines: []string{"FAIL  seal-public   ConfigMap pipes-system/pipes-sealing-public-keyset not found: kubectl pipes seal has no public keyset to seal with; fix: kubectl rollout restart -n pipes-system deployment/pipes-controller-manager (the manager publishes it at start) and check its log",
				"OK    seal-backup …"},
		},
		{
			name: "public sealing keyset not the operator's",
			breakIt: func(t *testing.T) {
				other, err := sealing.NewKeyset()
				if err != nil {
					t.Fatal(err)
				}
				pub, err := other.PublicKeysetJSON()
				if err != nil {
					t.Fatal(err)
				}
				setPublic(t, map[string]string{pipesv1.SealingPublicKeysetKey: string(pub)})
			},
			fix:   func(t *testing.T) { setPublic(t, public.Data) },
			code:  1,
			lines: []string{"FAIL  seal-public   ConfigMap pipes-system/pipes-sealing-public-keyset seals with key …"},
		},
		{
			name:    "sealing keyset Secret missing",
			breakIt: func(t *testing.T) { deleteObject(t, sealingKeyset.DeepCopy()) },
			fix: func(t *testing.T) {
				var s corev1.Secret
				s.ObjectMeta = metav1.ObjectMeta{Namespace: opNS, Name: sealingKey.Name, Labels: sealingKeyset.Labels, Annotations: sealingKeyset.Annotations}
				s.Data = sealingKeyset.Data
				if err := c.Create(ctx, &s); err != nil {
					t.Fatal(err)
				}
			},
			code:  1,
			lines: []string{"FAIL  seal-keyset   Secret pipes-system/pipes-sealing-keyset not found: no spec.apiKey.sealed value opens, and the manager will not start while accounts use them; fix: restore it from your backup: kubectl create secret generic -n pipes-system pipes-sealing-keyset --from-file=keyset.json=pipes-sealing-keyset.json (with no sealed values yet, restarting the manager creates a new one)"},
		},
		{
			name: "user without rights",
			kube: "alice",
			code: 1,
			lines: []string{
				"WARN  operator      not checked: you may not get Deployment pipes-system/pipes-controller-manager; fix: run doctor as an administrator of the operator to check it",
				"WARN  webhooks      not checked: you may not create ConnectedAccounts in plugin-doctor (even as a dry run); fix: …",
				"FAIL  rbac          doctor-alice may not list connectedaccounts.pipes.dev in plugin-doctor (get), get connectedaccounts.pipes.dev in plugin-doctor (get NAME, disconnect NAME), list providers.pipes.dev in plugin-doctor (providers), create providers.pipes.dev in plugin-doctor (adding providers); fix: ask an administrator to bind ClusterRole pipes-backend to doctor-alice in plugin-doctor, or a Role with these verbs",
				"WARN  rbac-admin    doctor-alice may not get secrets in pipes-system (keyset status, doctor), update secrets in pipes-system (keyset rotate, prune), patch secrets in pipes-system (keyset backup), list secrets cluster-wide (keyset status, prune: counting credentials), list connectedaccounts.pipes.dev cluster-wide (keyset status, prune --sealing: counting sealed values), get deployments.apps in pipes-system (doctor); fix: …",
			},
		},
		{
			name: "user with the backend role but not the right to create Providers",
			kube: "alice",
			breakIt: func(t *testing.T) {
				if err := c.Create(ctx, &rbacv1.RoleBinding{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-backend"},
					RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "pipes-backend"},
					Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "doctor-alice"}},
				}); err != nil {
					t.Fatal(err)
				}
			},
			code:  1,
			lines: []string{"FAIL  rbac          doctor-alice may not create providers.pipes.dev in plugin-doctor (adding providers); fix: …"},
		},
		{name: "healthy again", lines: allOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.breakIt != nil {
				tc.breakIt(t)
			}
			if tc.fix != nil {
				defer tc.fix(t)
			}
			kube, a := adminKube, args
			switch tc.kube {
			case "alice":
				kube = aliceKube
			case "expiry":
				a = append(append([]string{}, args[:len(args)-1]...), "200h") // envtest's certificate has under 168h left
			}
			// The API server's view of webhook configurations lags an update briefly.
			eventually(t, func() error {
				r := kubectlPipes(t, kube, "", a...)
				return checkDoctor(r, tc.code, tc.lines)
			})
		})
	}
}

// checkDoctor checks the exit code and that each wanted line is printed: exactly, or up
// to a final "…".
func checkDoctor(r result, code int, lines []string) error {
	if r.code != code {
		return fmt.Errorf("doctor exited %d, want %d\n%s%s", r.code, code, r.stdout, r.stderr)
	}
	got := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	for _, want := range lines {
		found := false
		for _, l := range got {
			if prefix, ok := strings.CutSuffix(want, "…"); ok && strings.HasPrefix(l, prefix) || l == want {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("doctor did not print %q; it printed:\n%s", want, r.stdout)
		}
	}
	if code == 1 && !strings.HasPrefix(r.stderr, "error: doctor: ") {
		return fmt.Errorf("doctor's error line: %q", r.stderr)
	}
	return nil
}

func setAvailable(t *testing.T, n int32) {
	t.Helper()
	var d appsv1.Deployment
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "pipes-controller-manager"}, &d); err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{Replicas: 2, ReadyReplicas: n, AvailableReplicas: n, UpdatedReplicas: 2, ObservedGeneration: d.Generation}
	if err := env.Client.Status().Update(context.Background(), &d); err != nil {
		t.Fatal(err)
	}
}

func deleteObject(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

// deleteUntilGone deletes obj until it stays deleted for a second: the manager
// publishes the public sealing keyset again whenever the sealing keyset Secret changes,
// which the case before this one did, and may do so after a first delete.
func deleteUntilGone(t *testing.T, obj client.Object) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(20 * time.Second); ; {
		if err := env.Client.Delete(ctx, obj.DeepCopyObject().(client.Object)); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)); apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s keeps being re-created", obj.GetObjectKind().GroupVersionKind().Kind, client.ObjectKeyFromObject(obj))
		}
	}
}

// selfSigned is a PEM certificate valid from notBefore to notAfter, signed by no CA doctor knows.
func selfSigned(t *testing.T, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pipes-webhook-service.pipes-system.svc"},
		NotBefore: notBefore, NotAfter: notAfter, DNSNames: []string{"pipes-webhook-service.pipes-system.svc"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
