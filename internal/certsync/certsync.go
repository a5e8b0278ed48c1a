// Package certsync keeps the directory the webhook and backend API servers read their
// certificate from equal to the Secret cert-controller writes it into.
//
// The kubelet would project that Secret into the pod too, but only on its next sync of the
// pod (a minute or more), and cert-controller then notices the files with an exponential
// backoff: a fresh replica took from 40 seconds to over 3 minutes to become ready.
// Written here, a replica serves seconds after the certificate exists, and a rotated
// certificate reaches the servers (which reload on file change) as soon as it is stored.
package certsync

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

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

// Files are the Secret keys written, in order: the certificate last, so that when the
// servers reload on its change the key beside it already matches.
var Files = []string{"ca.crt", "tls.key", "tls.crt"}

// Add registers, in every replica (not only the leader), a controller that writes the
// Secret's Files into dir whenever they change. The Secret is watched alone, through a
// cache of its own: the manager's cache holds only the Secrets of stored credentials.
func Add(mgr ctrl.Manager, secret types.NamespacedName, dir string) error {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:            mgr.GetScheme(),
		Mapper:            mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{secret.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Field: fields.OneTermEqualSelector("metadata.name", secret.Name)},
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
		Named("certsync").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 1}).
		WatchesRawSource(source.Kind(c, &corev1.Secret{}, &handler.TypedEnqueueRequestForObject[*corev1.Secret]{})).
		Complete(&syncer{reader: c, secret: secret, dir: dir})
}

type syncer struct {
	reader client.Reader
	secret types.NamespacedName
	dir    string
}

func (s *syncer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req.NamespacedName != s.secret {
		return reconcile.Result{}, nil
	}
	var secret corev1.Secret
	if err := s.reader.Get(ctx, s.secret, &secret); err != nil {
		// A deleted Secret leaves the files: the servers keep the certificate they have.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	written, err := Write(s.dir, secret.Data)
	if err != nil {
		return reconcile.Result{}, err
	}
	if len(written) > 0 {
		ctrl.LoggerFrom(ctx).Info("certificate files updated from the Secret", "dir", s.dir, "files", written)
	}
	return reconcile.Result{}, nil
}

// Write writes into dir each of Files present in data whose content differs from the
// file's, each atomically (a reader sees the old file or the new one), and returns the
// names it wrote. Until cert-controller fills the Secret it has nothing to write.
func Write(dir string, data map[string][]byte) ([]string, error) {
	var written []string
	for _, name := range Files {
		want, ok := data[name]
		if !ok || len(want) == 0 {
			continue
		}
		path := filepath.Join(dir, name)
		if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
			continue
		}
		tmp, err := os.CreateTemp(dir, "."+name+".*")
		if err != nil {
			return written, fmt.Errorf("writing the certificate into %s (is it a writable volume, e.g. an emptyDir?): %w", dir, err)
		}
		_, werr := tmp.Write(want)
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), path)
		}
		if werr != nil {
			_ = os.Remove(tmp.Name())
			return written, fmt.Errorf("writing %s: %w", path, werr)
		}
		written = append(written, name)
	}
	return written, nil
}

// replicaCache makes the manager run a cache in its caches group (every replica, synced
// before the controllers start); a bare cache would run with the leader only.
type replicaCache struct{ cache.Cache }

func (c replicaCache) GetCache() cache.Cache { return c.Cache }
