package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
)

// Check outcomes, as doctor prints them.
const (
	statusOK   = "OK"
	statusWarn = "WARN"
	statusFail = "FAIL"
)

// finding is one line of doctor's report.
type finding struct {
	status, check, message, fix string
}

func (f finding) String() string {
	s := fmt.Sprintf("%-4s  %-13s %s", f.status, f.check, f.message)
	if f.fix != "" {
		s += "; fix: " + f.fix
	}
	return s
}

// doctorFlags name what doctor looks at (the names config/default gives them).
type doctorFlags struct {
	deployment, validating, mutating, certSecret, keysetSecret, sealingKeysetSecret string
	expiryWarning                                                                   time.Duration
}

func (a *app) doctorCommand() *cobra.Command {
	var f doctorFlags
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check the operator, its webhooks and certificate, the keyset and its backup, and your rights",
		Long: `doctor checks an installation and prints one line per check, OK, WARN or FAIL, each
problem with its fix. It exits 1 if any check fails.

  operator      the manager Deployment exists and has available replicas
  webhooks      the API server reaches the validating webhook (a dry-run create it must reject)
  webhook-ca    the webhook configurations exist and carry a caBundle
  certificate   the serving certificate is valid, not expiring soon, and signed by that caBundle
  keyset        the keyset Secret exists and parses
  keyset-backup the keyset was backed up (kubectl pipes keyset backup) since its last rotation
  seal-keyset   the sealing keyset Secret exists and parses (spec.apiKey.sealed opens with it)
  seal-public   the public sealing keyset is published, and seals with the primary sealing key
  seal-backup   the sealing keyset was backed up (keyset backup --sealing) since its last
                rotation (WARN only)
  rbac          you may use the accounts commands in the namespace (get, set-key, disconnect)
  rbac-admin    you may use the keyset commands (Secrets in the operator's namespace)

Checks that need rights you lack say so (WARN) rather than fail.`,
		Example: `  kubectl pipes doctor
  kubectl pipes doctor -n apps --operator-namespace pipes-system`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			d := &doctor{c: c, ns: ns, opNS: a.operatorNamespace, f: f}
			findings := d.run(cmd.Context())
			failed, warned := 0, 0
			for _, x := range findings {
				_, _ = fmt.Fprintln(a.out, x)
				switch x.status {
				case statusFail:
					failed++
				case statusWarn:
					warned++
				}
			}
			if failed > 0 {
				return fmt.Errorf("doctor: %d check(s) failed, %d warning(s): see the FAIL lines", failed, warned)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.deployment, "deployment", "pipes-controller-manager", "the manager's Deployment, in --operator-namespace")
	fl.StringVar(&f.validating, "webhook-config", "pipes-validating-webhook-configuration", "the operator's ValidatingWebhookConfiguration")
	fl.StringVar(&f.mutating, "mutating-webhook-config", "pipes-mutating-webhook-configuration", "the operator's MutatingWebhookConfiguration")
	fl.StringVar(&f.certSecret, "cert-secret", "pipes-webhook-cert", "Secret holding the webhook and API serving certificate (cert-controller's, or cert-manager's)")
	fl.StringVar(&f.keysetSecret, "keyset-secret", keyadmin.KeysetSecret, "Secret holding the key-encryption keyset, in --operator-namespace")
	fl.StringVar(&f.sealingKeysetSecret, "sealing-keyset-secret", pipesv1.SealingKeysetSecret, "Secret holding the sealing keyset, in --operator-namespace")
	fl.DurationVar(&f.expiryWarning, "expiry-warning", 7*24*time.Hour, "warn when the serving certificate expires within this")
	return c
}

type doctor struct {
	c        client.Client
	ns, opNS string
	f        doctorFlags
	// caBundle is the validating configuration's, once read (for the certificate check).
	caBundle []byte
}

func (d *doctor) run(ctx context.Context) []finding {
	var out []finding
	out = append(out, d.operator(ctx), d.webhooks(ctx), d.webhookCA(ctx), d.certificate(ctx))
	out = append(out, d.keyset(ctx)...)
	out = append(out, d.sealingKeyset(ctx)...)
	out = append(out, d.rbac(ctx)...)
	return out
}

// cannot is the WARN of a check the user lacks the rights to make.
func cannot(check, what string, err error) finding {
	if apierrors.IsForbidden(err) {
		return finding{statusWarn, check, "not checked: you may not " + what, "run doctor as an administrator of the operator to check it"}
	}
	return finding{statusFail, check, "cannot " + what + ": " + err.Error(), ""}
}

func (d *doctor) operator(ctx context.Context) finding {
	const check = "operator"
	key := types.NamespacedName{Namespace: d.opNS, Name: d.f.deployment}
	var dep appsv1.Deployment
	if err := d.c.Get(ctx, key, &dep); apierrors.IsNotFound(err) {
		return finding{statusFail, check, fmt.Sprintf("Deployment %s not found", key),
			"install the operator (kubectl apply --server-side -k config/default, or helm install), or name its namespace with --operator-namespace"}
	} else if err != nil {
		return cannot(check, "get Deployment "+key.String(), err)
	}
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	available := dep.Status.AvailableReplicas
	switch {
	case want == 0:
		return finding{statusFail, check, fmt.Sprintf("Deployment %s is scaled to 0", key), fmt.Sprintf("kubectl scale -n %s deployment/%s --replicas=2", d.opNS, d.f.deployment)}
	case available == 0:
		return finding{statusFail, check, fmt.Sprintf("Deployment %s has 0 of %d replicas available: webhooks and the backend API are down", key, want),
			fmt.Sprintf("kubectl describe -n %s deployment/%s; kubectl logs -n %s deployment/%s", d.opNS, d.f.deployment, d.opNS, d.f.deployment)}
	case available < want:
		return finding{statusWarn, check, fmt.Sprintf("Deployment %s has %d of %d replicas available", key, available, want),
			fmt.Sprintf("kubectl describe -n %s deployment/%s", d.opNS, d.f.deployment)}
	}
	return finding{statusOK, check, fmt.Sprintf("Deployment %s: %d/%d replicas available", key, available, want), ""}
}

// webhooks has the API server call the validating webhook with a dry-run create of an
// account naming a missing Provider, which only the webhook rejects.
func (d *doctor) webhooks(ctx context.Context) finding {
	const check = "webhooks"
	ns := d.ns
	if ns == d.opNS || ns == "kube-system" { // the webhooks skip these namespaces
		ns = metav1.NamespaceDefault
	}
	probe := &pipesv1.ConnectedAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pipes-doctor-probe"},
		Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "pipes-doctor-no-such-provider"}, UserID: "pipes-doctor"},
	}
	err := d.c.Create(ctx, probe, client.DryRunAll)
	switch {
	case err == nil:
		return finding{statusFail, check, fmt.Sprintf("a dry-run ConnectedAccount naming a missing Provider was accepted in %s: the validating webhook did not run", ns),
			fmt.Sprintf("check ValidatingWebhookConfiguration %s (kubectl apply --server-side -k config/default restores it)", d.f.validating)}
	case strings.Contains(err.Error(), "denied the request"):
		return finding{statusOK, check, fmt.Sprintf("the API server calls the validating webhook (it rejected a dry-run in %s as it should)", ns), ""}
	case strings.Contains(err.Error(), "failed calling webhook"):
		return finding{statusFail, check, "the API server cannot call the webhooks, so pipes.dev objects cannot be created or changed: " + err.Error(),
			fmt.Sprintf("check the operator's pods are ready (kubectl get pods -n %s) and the webhook-ca and certificate checks", d.opNS)}
	case apierrors.IsForbidden(err):
		return cannot(check, "create ConnectedAccounts in "+ns+" (even as a dry run)", err)
	}
	return finding{statusFail, check, "dry-run create failed unexpectedly: " + err.Error(), ""}
}

func (d *doctor) webhookCA(ctx context.Context) finding {
	const check = "webhook-ca"
	var vwc admissionv1.ValidatingWebhookConfiguration
	var mwc admissionv1.MutatingWebhookConfiguration
	var missing []string
	for _, cfg := range []struct {
		kind, name string
		obj        client.Object
	}{{"ValidatingWebhookConfiguration", d.f.validating, &vwc}, {"MutatingWebhookConfiguration", d.f.mutating, &mwc}} {
		err := d.c.Get(ctx, types.NamespacedName{Name: cfg.name}, cfg.obj)
		if apierrors.IsNotFound(err) {
			return finding{statusFail, check, fmt.Sprintf("%s %s not found", cfg.kind, cfg.name),
				"reinstall it (kubectl apply --server-side -k config/default), or name it with --webhook-config / --mutating-webhook-config"}
		} else if err != nil {
			return cannot(check, "get "+cfg.kind+" "+cfg.name, err)
		}
	}
	for _, w := range vwc.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			missing = append(missing, w.Name)
		} else if d.caBundle == nil {
			d.caBundle = w.ClientConfig.CABundle
		}
	}
	for _, w := range mwc.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			missing = append(missing, w.Name)
		}
	}
	if len(missing) > 0 {
		return finding{statusFail, check, fmt.Sprintf("no caBundle for webhook(s) %s: the API server cannot verify the operator's certificate", strings.Join(missing, ", ")),
			fmt.Sprintf("the manager's cert-controller writes it once running (kubectl logs -n %s deployment/%s); with cert-manager, annotate the configurations with cert-manager.io/inject-ca-from", d.opNS, d.f.deployment)}
	}
	return finding{statusOK, check, fmt.Sprintf("%s and %s carry a caBundle for all %d webhooks", d.f.validating, d.f.mutating, len(vwc.Webhooks)+len(mwc.Webhooks)), ""}
}

func (d *doctor) certificate(ctx context.Context) finding {
	const check = "certificate"
	key := types.NamespacedName{Namespace: d.opNS, Name: d.f.certSecret}
	restart := fmt.Sprintf("kubectl rollout restart -n %s deployment/%s (cert-controller issues a new one) and check its log", d.opNS, d.f.deployment)
	var s corev1.Secret
	if err := d.c.Get(ctx, key, &s); apierrors.IsNotFound(err) {
		return finding{statusFail, check, fmt.Sprintf("Secret %s not found: the webhooks and backend API have no certificate to serve", key),
			"kubectl apply --server-side -k config/default recreates it and the manager fills it; with cert-manager, name its Secret with --cert-secret"}
	} else if err != nil {
		return cannot(check, "get Secret "+key.String(), err)
	}
	block, _ := pem.Decode(s.Data[corev1.TLSCertKey])
	if block == nil {
		return finding{statusFail, check, fmt.Sprintf("Secret %s holds no certificate (tls.crt) yet", key), restart}
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return finding{statusFail, check, fmt.Sprintf("Secret %s: tls.crt does not parse: %v", key, err), restart}
	}
	now := time.Now()
	notAfter := cert.NotAfter.UTC().Format(time.RFC3339)
	switch {
	case now.After(cert.NotAfter):
		return finding{statusFail, check, fmt.Sprintf("the serving certificate in Secret %s expired at %s: the API server rejects the webhooks", key, notAfter), restart}
	case now.Before(cert.NotBefore):
		return finding{statusFail, check, fmt.Sprintf("the serving certificate in Secret %s is not valid before %s (check the clocks)", key, cert.NotBefore.UTC().Format(time.RFC3339)), restart}
	}
	if d.caBundle != nil {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(d.caBundle)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now}); err != nil {
			return finding{statusFail, check, fmt.Sprintf("the caBundle of %s does not verify the serving certificate in Secret %s (%v)", d.f.validating, key, err), restart}
		}
	}
	if left := cert.NotAfter.Sub(now); left < d.f.expiryWarning {
		return finding{statusWarn, check, fmt.Sprintf("the serving certificate in Secret %s expires at %s, in %s: it should have been renewed", key, notAfter, left.Round(time.Minute)), restart}
	}
	return finding{statusOK, check, fmt.Sprintf("serving certificate in Secret %s valid until %s", key, notAfter), ""}
}

func (d *doctor) keyset(ctx context.Context) []finding {
	key := types.NamespacedName{Namespace: d.opNS, Name: d.f.keysetSecret}
	var s corev1.Secret
	if err := d.c.Get(ctx, key, &s); apierrors.IsNotFound(err) {
		return []finding{{statusFail, "keyset", fmt.Sprintf("Secret %s not found: no stored credential can be read", key),
			fmt.Sprintf("restore it from your backup: kubectl create secret generic -n %s %s --from-file=%s=%s", key.Namespace, key.Name, keyring.SecretKey, keyring.KEK.BackupFile)}}
	} else if err != nil {
		return []finding{cannot("keyset", "get Secret "+key.String(), err)}
	}
	ks, err := keyring.FromSecret(&s)
	if err != nil {
		return []finding{{statusFail, "keyset", err.Error(), "restore the Secret from your backup (kubectl pipes keyset backup wrote it)"}}
	}
	out := []finding{{statusOK, "keyset", fmt.Sprintf("Secret %s: primary key %d, %d key(s)", key, ks.PrimaryKeyID(), len(ks.KeyIDs())), ""}}
	return append(out, backupFinding("keyset-backup", statusFail, &s, ks.PrimaryKeyID(), "every stored credential is",
		"credentials re-encrypted under it are not covered", "kubectl pipes keyset backup --file "+keyring.KEK.BackupFile+", and keep the file offline"))
}

// sealingKeyset checks the sealing keyset Secret, the public keyset published from it
// and its backup (a WARN at worst: it matters once sealed values are in Git).
func (d *doctor) sealingKeyset(ctx context.Context) []finding {
	key := types.NamespacedName{Namespace: d.opNS, Name: d.f.sealingKeysetSecret}
	var s corev1.Secret
	if err := d.c.Get(ctx, key, &s); apierrors.IsNotFound(err) {
		return []finding{{statusFail, "seal-keyset", fmt.Sprintf("Secret %s not found: no spec.apiKey.sealed value opens, and the manager will not start while accounts use them", key),
			fmt.Sprintf("restore it from your backup: kubectl create secret generic -n %s %s --from-file=%s=%s (with no sealed values yet, restarting the manager creates a new one)", key.Namespace, key.Name, keyring.SecretKey, keyring.Sealing.BackupFile)}}
	} else if err != nil {
		return []finding{cannot("seal-keyset", "get Secret "+key.String(), err)}
	}
	ks, err := keyring.Sealing.FromSecret(&s)
	if err != nil {
		return []finding{{statusFail, "seal-keyset", err.Error(), "restore the Secret from your backup (kubectl pipes keyset backup --sealing wrote it)"}}
	}
	out := []finding{{statusOK, "seal-keyset", fmt.Sprintf("Secret %s: primary key %d, %d key(s)", key, ks.PrimaryKeyID(), len(ks.KeyIDs())), ""}}
	out = append(out, d.publicKeyset(ctx, ks.PrimaryKeyID()))
	return append(out, backupFinding("seal-backup", statusWarn, &s, ks.PrimaryKeyID(), "no sealed API key in Git opens",
		"values sealed with it since are not covered", "kubectl pipes keyset backup --sealing --file "+keyring.Sealing.BackupFile+", and keep the file offline"))
}

// publicKeyset checks the published public sealing keyset seals with primary.
func (d *doctor) publicKeyset(ctx context.Context, primary uint32) finding {
	const check = "seal-public"
	key := types.NamespacedName{Namespace: d.opNS, Name: pipesv1.SealingPublicKeysetConfigMap}
	restart := fmt.Sprintf("kubectl rollout restart -n %s deployment/%s (the manager publishes it at start) and check its log", d.opNS, d.f.deployment)
	var cm corev1.ConfigMap
	if err := d.c.Get(ctx, key, &cm); apierrors.IsNotFound(err) {
		return finding{statusFail, check, fmt.Sprintf("ConfigMap %s not found: kubectl pipes seal has no public keyset to seal with", key), restart}
	} else if err != nil {
		return cannot(check, "get ConfigMap "+key.String(), err)
	}
	h, err := sealing.ParsePublicKeyset([]byte(cm.Data[pipesv1.SealingPublicKeysetKey]))
	if err != nil {
		return finding{statusFail, check, fmt.Sprintf("ConfigMap %s: %v", key, err), restart}
	}
	if published := h.KeysetInfo().GetPrimaryKeyId(); published != primary {
		return finding{statusFail, check, fmt.Sprintf("ConfigMap %s seals with key %d, but the primary sealing key is %d: values sealed now open only while key %d stays", key, published, primary, published), restart}
	}
	return finding{statusOK, check, fmt.Sprintf("ConfigMap %s publishes primary key %d", key, primary), ""}
}

// backupFinding is check's line about the last backup recorded on keyset Secret s:
// status never (FAIL, or WARN) when never backed up (if the Secret is lost, lost), WARN
// when it predates key primary (uncovered says what that leaves out).
func backupFinding(check, never string, s *corev1.Secret, primary uint32, lost, uncovered, fix string) finding {
	b := keyadmin.LastBackup(s)
	switch {
	case b.At.IsZero():
		return finding{never, check, fmt.Sprintf("Secret %s/%s was never backed up: if it is lost, %s", s.Namespace, s.Name, lost), fix}
	case !b.Covers(primary):
		return finding{statusWarn, check, fmt.Sprintf("the last backup (%s) of Secret %s/%s predates primary key %d: %s", b.At.Format(time.RFC3339), s.Namespace, s.Name, primary, uncovered), fix}
	}
	return finding{statusOK, check, fmt.Sprintf("backed up %s, with primary key %d", b.At.Format(time.RFC3339), primary), ""}
}

// permission is one thing a command needs.
type permission struct {
	verb, group, resource, subresource, namespace, usedBy string
}

func (p permission) String() string {
	r := p.resource
	if p.subresource != "" {
		r += "/" + p.subresource
	}
	if p.group != "" {
		r += "." + p.group
	}
	if p.namespace == "" {
		return fmt.Sprintf("%s %s cluster-wide (%s)", p.verb, r, p.usedBy)
	}
	return fmt.Sprintf("%s %s in %s (%s)", p.verb, r, p.namespace, p.usedBy)
}

func (d *doctor) rbac(ctx context.Context) []finding {
	const g = "pipes.dev"
	accounts := []permission{
		{"list", g, "connectedaccounts", "", d.ns, "get"},
		{"get", g, "connectedaccounts", "", d.ns, "get NAME, disconnect NAME"},
		{"list", g, "providers", "", d.ns, "providers"},
		{"create", g, "providers", "", d.ns, "adding providers"},
	}
	admin := []permission{
		{"get", "", "secrets", "", d.opNS, "keyset status, doctor"},
		{"update", "", "secrets", "", d.opNS, "keyset rotate, prune"},
		{"patch", "", "secrets", "", d.opNS, "keyset backup"},
		{"list", "", "secrets", "", "", "keyset status, prune: counting credentials"},
		{"list", g, "connectedaccounts", "", "", "keyset status, prune --sealing: counting sealed values"},
		{"get", "apps", "deployments", "", d.opNS, "doctor"},
	}
	who := "you"
	review := &authnv1.SelfSubjectReview{}
	if err := d.c.Create(ctx, review); err == nil && review.Status.UserInfo.Username != "" {
		who = review.Status.UserInfo.Username
	}
	out := []finding{}
	for _, set := range []struct {
		check, status, fix string
		perms              []permission
	}{
		{"rbac", statusFail, fmt.Sprintf("ask an administrator to bind ClusterRole pipes-backend to %s in %s, or a Role with these verbs", who, d.ns), accounts},
		{"rbac-admin", statusWarn, fmt.Sprintf("the keyset commands need these rights in %s; run them as an administrator of the operator", d.opNS), admin},
	} {
		var missing []string
		for _, p := range set.perms {
			allowed, err := d.allowed(ctx, p)
			if err != nil {
				out = append(out, finding{statusWarn, set.check, "SelfSubjectAccessReview failed: " + err.Error(), ""})
				missing = nil
				break
			}
			if !allowed {
				missing = append(missing, p.String())
			}
		}
		switch {
		case len(missing) > 0:
			out = append(out, finding{set.status, set.check, who + " may not " + strings.Join(missing, ", "), set.fix})
		case len(out) == 0 || out[len(out)-1].check != set.check:
			out = append(out, finding{statusOK, set.check, fmt.Sprintf("%s may do all %d things the %s commands need", who, len(set.perms), map[string]string{"rbac": "accounts", "rbac-admin": "keyset"}[set.check]), ""})
		}
	}
	return out
}

func (d *doctor) allowed(ctx context.Context, p permission) (bool, error) {
	r := &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
		Verb: p.verb, Group: p.group, Resource: p.resource, Subresource: p.subresource, Namespace: p.namespace,
	}}}
	if err := d.c.Create(ctx, r); err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}
