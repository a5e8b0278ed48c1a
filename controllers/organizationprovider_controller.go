package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/validation"
)

// OrganizationProviderReconciler reports whether each organization's setting is usable.
type OrganizationProviderReconciler struct {
	Client client.Client
	// APIReader reads OAuth client-secret Secrets, which are not cached.
	APIReader client.Reader
}

// +kubebuilder:rbac:groups=pipes.dev,resources=organizationproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups=pipes.dev,resources=organizationproviders/status,verbs=get;update;patch

// Reconcile implements reconcile.Reconciler.
func (r *OrganizationProviderReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var op pipesv1.OrganizationProvider
	if err := r.Client.Get(ctx, req.NamespacedName, &op); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := op.DeepCopy()
	status, reason, msg := metav1.ConditionTrue, pipesv1.ReasonReady, fmt.Sprintf("organization %q can use Provider %q", op.Spec.OrganizationID, op.Spec.ProviderRef.Name)

	var p pipesv1.Provider
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: op.Namespace, Name: op.Spec.ProviderRef.Name}, &p)
	switch {
	case apierrors.IsNotFound(err):
		status, reason, msg = metav1.ConditionFalse, pipesv1.ReasonProviderNotFound, fmt.Sprintf("Provider %q does not exist in namespace %q", op.Spec.ProviderRef.Name, op.Namespace)
	case err != nil:
		return ctrl.Result{}, err
	case !op.IsEnabled():
		status, reason, msg = metav1.ConditionFalse, pipesv1.ReasonDisabled, fmt.Sprintf("spec.enabled is false: organization %q's users cannot use Provider %q; their credentials are kept", op.Spec.OrganizationID, p.Name)
	default:
		// The Provider may have changed since admission (e.g. scopes narrowed).
		if errs := validation.OrganizationSettings(&p, op.Spec.Scopes, op.Spec.Credentials != nil, field.NewPath("spec", "scopes"), field.NewPath("spec", "credentials")); len(errs) > 0 {
			status, reason, msg = metav1.ConditionFalse, pipesv1.ReasonInvalidSettings, validation.Message(errs)
		} else if op.Spec.Credentials != nil {
			found, why, err := secretKeyExists(ctx, r.APIReader, op.Namespace, op.Spec.Credentials.ClientSecretRef)
			if err != nil {
				return ctrl.Result{}, err
			}
			if !found {
				status, reason, msg = metav1.ConditionFalse, pipesv1.ReasonClientSecretNotFound, "spec.credentials.clientSecretRef: "+why
			}
		}
	}
	apimeta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{Type: pipesv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: op.Generation})
	op.Status.ObservedGeneration = op.Generation
	if equality.Semantic.DeepEqual(before.Status, op.Status) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.Client.Status().Patch(ctx, &op, client.MergeFrom(before))
}

// SetupWithManager watches OrganizationProviders and their Providers.
func (r *OrganizationProviderReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&pipesv1.OrganizationProvider{}).
		Watches(&pipesv1.Provider{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var list pipesv1.OrganizationProviderList
			if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index.OrganizationProviderProvider: o.GetName()}); err != nil {
				return nil
			}
			reqs := make([]reconcile.Request, 0, len(list.Items))
			for _, op := range list.Items {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
			}
			return reqs
		})).
		WithOptions(controller.Options{RateLimiter: rateLimiter()}).
		Complete(r)
}
