package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/index"
)

// CountDelay is how long the Provider reconciler lets account changes gather before it
// recounts: one status write per Provider per CountDelay at most, however many accounts
// change (10,000 connecting at once cost a handful of writes, not 10,000 conflicting ones).
const CountDelay = 2 * time.Second

// ProviderReconciler reports whether each Provider can be used and counts its connected accounts.
type ProviderReconciler struct {
	Client client.Client
	// APIReader reads OAuth client-secret Secrets, which are not cached.
	APIReader client.Reader
}

// +kubebuilder:rbac:groups=pipes.dev,resources=providers,verbs=get;list;watch
// +kubebuilder:rbac:groups=pipes.dev,resources=providers/status,verbs=get;update;patch

// Reconcile implements reconcile.Reconciler.
func (r *ProviderReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return requeueOnStaleCache(ctx, ctrl.Result{}, r.reconcile(ctx, req))
}

func (r *ProviderReconciler) reconcile(ctx context.Context, req ctrl.Request) error {
	var p pipesv1.Provider
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return client.IgnoreNotFound(err)
	}
	before := p.DeepCopy()

	// Read-only, so the cache's objects are not copied: counting stays O(accounts).
	var accounts pipesv1.ConnectedAccountList
	if err := r.Client.List(ctx, &accounts, client.InNamespace(p.Namespace), client.MatchingFields{index.AccountProvider: p.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	var connected int32
	for _, ca := range accounts.Items {
		if ca.Status.State == pipesv1.StateConnected {
			connected++
		}
	}
	p.Status.ConnectedAccounts = connected

	status, reason, msg := metav1.ConditionTrue, pipesv1.ReasonReady, "users can connect and credentials can be vended"
	switch {
	case !p.IsEnabled():
		status, reason, msg = metav1.ConditionFalse, pipesv1.ReasonDisabled, "spec.enabled is false: stored credentials are kept but not vended"
	case p.Spec.OAuth != nil && p.Spec.OAuth.ClientSecretRef != nil:
		found, why, err := secretKeyExists(ctx, r.APIReader, p.Namespace, *p.Spec.OAuth.ClientSecretRef)
		if err != nil {
			return err
		}
		if !found {
			status, reason, msg = metav1.ConditionFalse, pipesv1.ReasonClientSecretNotFound, "spec.oauth.clientSecretRef: "+why
		}
	}
	apimeta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{Type: pipesv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: p.Generation})
	p.Status.ObservedGeneration = p.Generation
	if equality.Semantic.DeepEqual(before.Status, p.Status) {
		return nil
	}
	// A merge patch: no resourceVersion, so no conflict with a spec change made meanwhile
	// (connectedAccounts has no omitempty, so a count falling to 0 is written too).
	return r.Client.Status().Patch(ctx, &p, client.MergeFrom(before))
}

// secretKeyExists reports whether a Secret key exists, and if not, a sentence saying what is missing.
func secretKeyExists(ctx context.Context, r client.Reader, namespace string, ref pipesv1.SecretKeyReference) (bool, string, error) {
	var s corev1.Secret
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("Secret %q does not exist in namespace %q", ref.Name, namespace), nil
		}
		return false, "", err
	}
	if _, ok := s.Data[ref.Key]; !ok {
		return false, fmt.Sprintf("Secret %q has no key %q", ref.Name, ref.Key), nil
	}
	return true, "", nil
}

// SetupWithManager watches Providers and, to keep the count current, their accounts:
// an account's creation, deletion or change of state schedules a recount CountDelay
// later, and the queue merges every change until then into that one recount.
func (r *ProviderReconciler) SetupWithManager(mgr ctrl.Manager) error {
	recount := func(ca *pipesv1.ConnectedAccount, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ca.Namespace, Name: ca.Spec.ProviderRef.Name}}, CountDelay)
	}
	accounts := handler.TypedFuncs[*pipesv1.ConnectedAccount, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[*pipesv1.ConnectedAccount], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[*pipesv1.ConnectedAccount], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld.Status.State != e.ObjectNew.Status.State {
				recount(e.ObjectNew, q)
			}
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[*pipesv1.ConnectedAccount], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&pipesv1.Provider{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Kind(mgr.GetCache(), &pipesv1.ConnectedAccount{}, accounts)).
		WithOptions(controller.Options{RateLimiter: rateLimiter()}).
		Complete(r)
}
