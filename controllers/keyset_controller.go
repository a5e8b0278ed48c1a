package controllers

import (
	"context"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/secretwatch"
)

// KeysetReconciler reloads the key-encryption keyset when its Secret changes (a rotation
// or prune by `manager keyset`), in every replica: each one seals new credentials and
// opens stored ones with its own keyring, so a replica left on the old keyset would keep
// sealing under a key that prune later removes, or fail to open re-encrypted credentials.
// When the primary key changed it tells the ConnectedAccount reconciler (which runs on
// the leader) to re-encrypt every credential.
type KeysetReconciler struct {
	Secret  types.NamespacedName
	Keyring *keyring.Keyring
	// Rotated receives an event per primary-key change. Only the leader drains it; a
	// send never blocks, since one pending event already re-encrypts everything.
	Rotated chan<- event.GenericEvent
}

// reload applies the keyset held in s.
func (r *KeysetReconciler) reload(ctx context.Context, s *corev1.Secret) error {
	if s == nil {
		// A deleted keyset Secret is not re-created while running: the keyring keeps the
		// keys in memory, and re-creating would orphan every stored credential.
		ctrl.LoggerFrom(ctx).Error(nil, "the keyset Secret was deleted; the keys in memory stay in use until a restart, which will refuse to start without it: restore it from your backup", "secret", r.Secret.String())
		return nil
	}
	ks, err := keyring.FromSecret(s)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "ignoring an unreadable keyset; the previous one stays in use")
		return nil
	}
	if r.Keyring.Update(ks) {
		ctrl.LoggerFrom(ctx).Info("keyset primary key changed; re-encrypting stored credentials", "primaryKeyID", ks.PrimaryKeyID(), "keyIDs", ks.KeyIDs())
		select {
		case r.Rotated <- event.GenericEvent{Object: s}:
		default:
		}
	}
	return nil
}

// SetupWithManager watches the keyset Secret, alone, in every replica.
func (r *KeysetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return secretwatch.Add(mgr, "keyset", r.Secret, r.reload)
}

// CredentialCollector exports how many credentials are stored, how many still wait for
// re-encryption under the current primary key, and how many ConnectedAccounts are in each
// state. It reads the manager's cache at scrape time, so it costs nothing between scrapes
// and is never stale.
type CredentialCollector struct {
	Reader  client.Reader
	Keyring *keyring.Keyring

	stored, stale, accounts *prometheus.Desc
}

// accountStates are the values of pipes_connected_accounts' state label, always all
// exported (0 included) so that alerts on them see a series. "pending" is an account the
// reconciler has not given a state yet.
var accountStates = []pipesv1.ConnectedAccountState{
	pipesv1.StateConnected, pipesv1.StateNeedsReauthorization, pipesv1.StateDisconnected, statePending,
}

const statePending pipesv1.ConnectedAccountState = "pending"

// NewCredentialCollector returns a collector reading from r.
func NewCredentialCollector(r client.Reader, k *keyring.Keyring) *CredentialCollector {
	return &CredentialCollector{
		Reader: r, Keyring: k,
		stored: prometheus.NewDesc("pipes_credentials_stored", "Credentials stored encrypted in managed Secrets.", nil, nil),
		stale:  prometheus.NewDesc("pipes_credentials_on_old_keys", "Stored credentials still wrapped by a key other than the keyset's primary; 0 once re-encryption after a rotation is done.", nil, nil),
		accounts: prometheus.NewDesc("pipes_connected_accounts",
			"ConnectedAccounts by status.state: connected, needs_reauthorization (the stored credential cannot be used; the user must supply it again), disconnected, pending (not reconciled yet).",
			[]string{"state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *CredentialCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.stored
	ch <- c.stale
	ch <- c.accounts
}

// Collect implements prometheus.Collector.
func (c *CredentialCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	if usage, err := credential.KeyUsage(ctx, c.Reader); err != nil {
		ch <- prometheus.NewInvalidMetric(c.stored, err)
	} else {
		stored, stale := usage.Stale(c.Keyring.Keyset().PrimaryKeyID())
		ch <- prometheus.MustNewConstMetric(c.stored, prometheus.GaugeValue, float64(stored))
		ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, float64(stale))
	}
	// Read-only use of the cache's objects: no copy of every account per scrape.
	var list pipesv1.ConnectedAccountList
	if err := c.Reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(c.accounts, err)
		return
	}
	counts := make(map[pipesv1.ConnectedAccountState]int, len(accountStates))
	for i := range list.Items {
		state := list.Items[i].Status.State
		if state == "" || !slices.Contains(accountStates, state) {
			state = statePending // the state is an enum in the CRD; "" until first reconciled
		}
		counts[state]++
	}
	for _, state := range accountStates {
		ch <- prometheus.MustNewConstMetric(c.accounts, prometheus.GaugeValue, float64(counts[state]), string(state))
	}
}
