package controllers

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/secretwatch"
)

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update

// CABundleReconciler keeps every CA bundle ConfigMap (pipes-api-ca, created by the pod
// injector in each namespace with injected pods) equal to the backend API's current CA.
// The kubelet updates the file mounted into each sidecar, which reloads it: a rotated CA
// reaches running pods without a restart, and an edited bundle is put back.
type CABundleReconciler struct {
	// Client is the manager's; its cache holds only ConfigMaps labelled managed-by.
	Client client.Client
	// CA returns the current CA bundle.
	CA func() ([]byte, error)
	// CASecret, when set, is the Secret whose ca.crt is the CA (cert-controller's): its
	// change reconciles every bundle at once, and its content is used instead of CA,
	// which reads a file written from it a moment later.
	CASecret *types.NamespacedName
	// Resync re-reads CA for each bundle this often (default one minute): a CA in a
	// mounted file changes without an event.
	Resync time.Duration
	// Name of the ConfigMaps (default pipesv1.CABundleConfigMap).
	Name string

	secretCA atomic.Pointer[[]byte]
}

func (r *CABundleReconciler) name() string {
	if r.Name == "" {
		return pipesv1.CABundleConfigMap
	}
	return r.Name
}

// SetupWithManager registers the reconciler (leader only).
func (r *CABundleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Resync == 0 {
		r.Resync = time.Minute
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == r.name() && o.GetLabels()[pipesv1.LabelManagedBy] == pipesv1.ManagedByValue
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("cabundle-"+r.name()).
		For(&corev1.ConfigMap{}, builder.WithPredicates(ours))
	if r.CASecret != nil {
		changed := make(chan event.GenericEvent, 1)
		err := secretwatch.Add(mgr, "cabundle-ca-secret-"+r.name(), *r.CASecret, func(_ context.Context, s *corev1.Secret) error {
			if s == nil || len(s.Data[pipesv1.CABundleKey]) == 0 {
				return nil // deleted, or not filled yet: bundles keep the CA they have
			}
			ca := bytes.Clone(s.Data[pipesv1.CABundleKey])
			if old := r.secretCA.Swap(&ca); old != nil && bytes.Equal(*old, ca) {
				return nil
			}
			// Every replica watches the Secret, only the leader's controller reads the
			// channel: never block on it.
			select {
			case changed <- event.GenericEvent{Object: &corev1.ConfigMap{}}:
			default:
			}
			return nil
		})
		if err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(changed, handler.EnqueueRequestsFromMapFunc(r.all)))
	}
	return b.Complete(r)
}

// all lists every bundle, for a CA change.
func (r *CABundleReconciler) all(ctx context.Context, _ client.Object) []reconcile.Request {
	var list corev1.ConfigMapList
	if err := r.Client.List(ctx, &list, client.MatchingLabels{pipesv1.LabelManagedBy: pipesv1.ManagedByValue}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing CA bundle ConfigMaps")
		return nil
	}
	var reqs []reconcile.Request
	for _, cm := range list.Items {
		if cm.Name == r.name() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cm)})
		}
	}
	return reqs
}

func (r *CABundleReconciler) currentCA() ([]byte, error) {
	if r.CASecret != nil {
		return *r.secretCA.Load(), nil
	}
	return r.CA()
}

// Reconcile sets one bundle's data to exactly the current CA.
func (r *CABundleReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req.Name != r.name() {
		return reconcile.Result{}, nil
	}
	var cm corev1.ConfigMap
	if err := r.Client.Get(ctx, req.NamespacedName, &cm); err != nil {
		// A deleted bundle is created again by the injector with the next pod.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if cm.Labels[pipesv1.LabelManagedBy] != pipesv1.ManagedByValue {
		return reconcile.Result{}, nil
	}
	if r.CASecret != nil && r.secretCA.Load() == nil {
		// Not seen yet (the manager is starting, or cert-controller has not filled it):
		// its first content reconciles every bundle.
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	ca, err := r.currentCA()
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("reading the backend API's CA bundle: %w", err)
	}
	if len(ca) == 0 {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil // no CA yet: never write an empty bundle
	}
	if len(cm.Data) != 1 || cm.Data[pipesv1.CABundleKey] != string(ca) || len(cm.BinaryData) != 0 {
		cm.Data, cm.BinaryData = map[string]string{pipesv1.CABundleKey: string(ca)}, nil
		if err := r.Client.Update(ctx, &cm); err != nil {
			return reconcile.Result{}, err
		}
		ctrl.LoggerFrom(ctx).Info("CA bundle updated to the backend API's current CA", "configMap", req.String())
	}
	return reconcile.Result{RequeueAfter: r.Resync}, nil
}
