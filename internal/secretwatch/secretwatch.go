// Package secretwatch runs, in every replica of the manager (not only the leader), a
// function on one named Secret each time it changes. Every replica serves traffic, so
// every replica needs what such Secrets hold (the webhook certificate, the keyset) as
// soon as it changes; the Secret is watched alone, through a cache of its own, because
// the manager's cache holds only the Secrets it selects by label.
package secretwatch

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// Func handles the Secret's current content; it is called with nil once the Secret is
// deleted. A returned error is retried with backoff.
type Func func(ctx context.Context, secret *corev1.Secret) error

// Add registers a controller named name that calls fn in every replica whenever the
// Secret key changes (and once at start).
func Add(mgr ctrl.Manager, name string, key types.NamespacedName, fn Func) error {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:            mgr.GetScheme(),
		Mapper:            mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{key.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Field: fields.OneTermEqualSelector("metadata.name", key.Name)},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return err
	}
	// As the manager's own cache: started in every replica, and synced before controllers start.
	if err := mgr.Add(replicaCache{c}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(name).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 1}).
		WatchesRawSource(source.Kind(c, &corev1.Secret{}, &handler.TypedEnqueueRequestForObject[*corev1.Secret]{})).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if req.NamespacedName != key {
				return reconcile.Result{}, nil
			}
			var secret corev1.Secret
			if err := c.Get(ctx, key, &secret); err != nil {
				if client.IgnoreNotFound(err) != nil {
					return reconcile.Result{}, err
				}
				return reconcile.Result{}, fn(ctx, nil)
			}
			return reconcile.Result{}, fn(ctx, &secret)
		}))
}

// replicaCache makes the manager run a cache in its caches group (every replica, synced
// before the controllers start); a bare cache would run with the leader only.
type replicaCache struct{ cache.Cache }

func (c replicaCache) GetCache() cache.Cache { return c.Cache }
