package controllers

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
)

// KeysetReconciler reloads the key-encryption keyset when its Secret changes (a rotation
// by `manager keyset rotate`), and tells the ConnectedAccount reconciler to re-encrypt
// every credential when the primary key changed.
type KeysetReconciler struct {
	Client  client.Client
	Secret  types.NamespacedName
	Keyring *keyring.Keyring
	// Rotated receives one event per primary-key change.
	Rotated chan<- event.GenericEvent
}

// Reconcile implements reconcile.Reconciler.
func (r *KeysetReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	var s corev1.Secret
	if err := r.Client.Get(ctx, r.Secret, &s); err != nil {
		// A deleted keyset Secret is not re-created while running: the keyring keeps the
		// keys in memory, and re-creating would orphan every stored credential.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ks, err := keyring.FromSecret(&s)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "ignoring an unreadable keyset; the previous one stays in use")
		return ctrl.Result{}, nil
	}
	if r.Keyring.Update(ks) {
		ctrl.LoggerFrom(ctx).Info("keyset primary key changed; re-encrypting stored credentials", "primaryKeyID", ks.PrimaryKeyID(), "keyIDs", ks.KeyIDs())
		r.Rotated <- event.GenericEvent{Object: &s}
	}
	return ctrl.Result{}, nil
}

// SetupWithManager watches the keyset Secret only.
func (r *KeysetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("keyset").
		For(&corev1.Secret{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Secret.Namespace && o.GetName() == r.Secret.Name
		}))).
		Complete(r)
}

// CredentialCollector exports how many credentials are stored and how many still wait
// for re-encryption under the current primary key. It reads the managed-Secret cache at
// scrape time, so it costs nothing between scrapes and is never stale.
type CredentialCollector struct {
	Reader  client.Reader
	Keyring *keyring.Keyring

	stored, stale *prometheus.Desc
}

// NewCredentialCollector returns a collector reading from r.
func NewCredentialCollector(r client.Reader, k *keyring.Keyring) *CredentialCollector {
	return &CredentialCollector{
		Reader: r, Keyring: k,
		stored: prometheus.NewDesc("pipes_credentials_stored", "Credentials stored encrypted in managed Secrets.", nil, nil),
		stale:  prometheus.NewDesc("pipes_credentials_on_old_keys", "Stored credentials still wrapped by a key other than the keyset's primary; 0 once re-encryption after a rotation is done.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *CredentialCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.stored; ch <- c.stale }

// Collect implements prometheus.Collector.
func (c *CredentialCollector) Collect(ch chan<- prometheus.Metric) {
	usage, err := credential.KeyUsage(context.Background(), c.Reader)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.stored, err)
		return
	}
	stored, stale := usage.Stale(c.Keyring.Keyset().PrimaryKeyID())
	ch <- prometheus.MustNewConstMetric(c.stored, prometheus.GaugeValue, float64(stored))
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, float64(stale))
}
