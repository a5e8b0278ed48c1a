package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/secretwatch"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
)

// DefaultWidgetKeyRotation is how often the leader makes a new widget signing key.
const DefaultWidgetKeyRotation = 24 * time.Hour

// WidgetKeysetReconciler keeps the widget token signing keyset current in every replica
// (each one verifies tokens another signed) and, on the leader, rotates it: a new primary
// key every RotationPeriod, and the key retired by the previous rotation dropped, since
// every token it signed has expired by then (RotationPeriod is at least twice the tokens'
// lifetime).
type WidgetKeysetReconciler struct {
	Secret types.NamespacedName
	Tokens *widgettoken.Tokens
	// Client reads and writes the Secret on the API server (not a cache).
	Client         client.Client
	RotationPeriod time.Duration
	// CheckInterval is how often the leader checks the key's age (default: a minute, or
	// less for short periods).
	CheckInterval time.Duration
	Now           func() time.Time
}

func (r *WidgetKeysetReconciler) reload(ctx context.Context, s *corev1.Secret) error {
	log := ctrl.LoggerFrom(ctx)
	if s == nil {
		log.Info("the widget signing keyset Secret was deleted; the leader makes a new one, which ends open widget sessions", "secret", r.Secret.String())
		return nil
	}
	ks, err := keyring.WidgetSigning.FromSecret(s)
	if err != nil {
		log.Error(err, "ignoring an unreadable widget signing keyset; the previous one stays in use")
		return nil
	}
	if r.Tokens.Update(ks) {
		log.Info("widget signing key changed", "primaryKeyID", ks.PrimaryKeyID(), "keyIDs", ks.KeyIDs())
	}
	return nil
}

func (r *WidgetKeysetReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// RotateIfDue makes a new primary key when the current one is older than RotationPeriod
// (recording the time on a Secret that has none yet), re-creates a deleted Secret, and
// reports whether it rotated.
func (r *WidgetKeysetReconciler) RotateIfDue(ctx context.Context) (bool, error) {
	var s corev1.Secret
	if err := r.Client.Get(ctx, r.Secret, &s); client.IgnoreNotFound(err) != nil {
		return false, err
	} else if err != nil {
		_, err := keyring.WidgetSigning.Ensure(ctx, r.Client, r.Secret, ctrl.LoggerFrom(ctx))
		return false, err
	}
	ks, err := keyring.WidgetSigning.FromSecret(&s)
	if err != nil {
		return false, err
	}
	now := r.now().UTC()
	rotatedAt, err := time.Parse(time.RFC3339, s.Annotations[pipesv1.AnnotationKeyRotatedAt])
	next := ks
	switch {
	case err != nil:
		// First check of a keyset made on first start (or restored): its key's age starts now.
	case now.Sub(rotatedAt) < r.RotationPeriod:
		return false, nil
	default:
		// The key retired by the last rotation signed its last token one period ago:
		// all of them have expired.
		if next, _, err = ks.Prune(func(uint32) bool { return false }); err != nil {
			return false, err
		}
		if next, err = next.Rotate(); err != nil {
			return false, err
		}
	}
	updated, err := keyring.WidgetSigning.Secret(r.Secret, next, &s)
	if err != nil {
		return false, err
	}
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	updated.Annotations[pipesv1.AnnotationKeyRotatedAt] = now.Format(time.RFC3339)
	if err := r.Client.Update(ctx, updated); err != nil {
		return false, fmt.Errorf("rotating the widget signing keyset: %w", err)
	}
	return next != ks, nil
}

// SetupWithManager reloads the keyset in every replica and rotates it on the leader.
func (r *WidgetKeysetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.RotationPeriod <= 0 {
		r.RotationPeriod = DefaultWidgetKeyRotation
	}
	if r.CheckInterval <= 0 {
		r.CheckInterval = min(time.Minute, r.RotationPeriod/4)
	}
	if err := secretwatch.Add(mgr, "widget-keyset", r.Secret, r.reload); err != nil {
		return err
	}
	// A RunnableFunc runs on the leader only.
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		log := mgr.GetLogger().WithName("widget-keyset")
		wait.UntilWithContext(ctx, func(ctx context.Context) {
			rotated, err := r.RotateIfDue(ctx)
			switch {
			case err != nil:
				log.Error(err, "checking the widget signing key's age; retrying", "secret", r.Secret.String())
			case rotated:
				log.Info("rotated the widget signing key", "secret", r.Secret.String(), "period", r.RotationPeriod.String())
			}
		}, r.CheckInterval)
		return nil
	}))
}
