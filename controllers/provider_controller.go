package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/index"
)

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
	var p pipesv1.Provider
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := p.DeepCopy()

	var accounts pipesv1.ConnectedAccountList
	if err := r.Client.List(ctx, &accounts, client.InNamespace(p.Namespace), client.MatchingFields{index.AccountProvider: p.Name}); err != nil {
		return ctrl.Result{}, err
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
			return ctrl.Result{}, err
		}
		if !found {
			status, reason, msg = metav1.ConditionFalse, pipesv1.ReasonClientSecretNotFound, "spec.oauth.clientSecretRef: "+why
		}
	}
	apimeta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{Type: pipesv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: p.Generation})
	p.Status.ObservedGeneration = p.Generation
	if equality.Semantic.DeepEqual(before.Status, p.Status) {
		return ctrl.Result{}, nil
	}
	// Update, not a merge patch: a patch computed from 0 to 0 would never write the count.
	return ctrl.Result{}, r.Client.Status().Update(ctx, &p)
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

// SetupWithManager watches Providers and, to keep the count current, their accounts.
func (r *ProviderReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&pipesv1.Provider{}).
		Watches(&pipesv1.ConnectedAccount{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			ca := o.(*pipesv1.ConnectedAccount)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ca.Namespace, Name: ca.Spec.ProviderRef.Name}}}
		})).
		WithOptions(controller.Options{RateLimiter: rateLimiter()}).
		Complete(r)
}
