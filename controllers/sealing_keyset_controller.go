package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/secretwatch"
)

// SealingKeysetReconciler reloads the sealing keyset when its Secret changes (`manager
// keyset rotate|prune --sealing`, a restored backup), in every replica, and publishes its
// public half in the public-keyset ConfigMap, so that values sealed with the new primary
// key open on whichever replica leads next.
type SealingKeysetReconciler struct {
	Secret types.NamespacedName
	Opener *sealing.Opener
	// Reader reads the public-keyset ConfigMap from the API server; Writer writes it.
	Reader client.Reader
	Writer client.Writer
}

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;update

func (r *SealingKeysetReconciler) reload(ctx context.Context, s *corev1.Secret) error {
	log := ctrl.LoggerFrom(ctx)
	if s == nil {
		log.Error(nil, "the sealing keyset Secret was deleted; the keys in memory stay in use until a restart, which will refuse to start while sealed values exist: restore it from your backup", "secret", r.Secret.String())
		return nil
	}
	ks, err := keyring.Sealing.FromSecret(s)
	if err != nil {
		log.Error(err, "ignoring an unreadable sealing keyset; the previous one stays in use")
		return nil
	}
	if r.Opener.Update(ks) {
		log.Info("sealing keyset primary key changed", "primaryKeyID", ks.PrimaryKeyID(), "keyIDs", ks.KeyIDs())
	}
	if wrote, err := keyring.PublishPublicKeyset(ctx, r.Reader, r.Writer, r.Secret.Namespace, ks); err != nil {
		return err
	} else if wrote {
		log.Info("published the public sealing keyset", "primaryKeyID", ks.PrimaryKeyID(), "keyIDs", ks.KeyIDs())
	}
	return nil
}

// SetupWithManager watches the sealing keyset Secret, alone, in every replica.
func (r *SealingKeysetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return secretwatch.Add(mgr, "sealing-keyset", r.Secret, r.reload)
}
