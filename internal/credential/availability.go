package credential

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/index"
)

// Availability says whether an account's Provider and organization let its credential be
// vended, and if not, why (a condition reason and a message for people).
type Availability struct {
	Provider *pipesv1.Provider // nil when the Provider does not exist
	// Organization is the organization's OrganizationProvider (nil: none, or no
	// organization), read on the way: its scopes and OAuth client matter to OAuth.
	Organization *pipesv1.OrganizationProvider
	Reason       string // empty when available
	Message      string
}

// Available reports whether nothing stands in the way.
func (a Availability) Available() bool { return a.Reason == "" }

// CheckAvailability looks up the account's Provider and, for organization-scoped
// accounts, the organization's OrganizationProvider. r is normally the manager's cache.
func CheckAvailability(ctx context.Context, r client.Reader, namespace, providerName, organizationID string) (Availability, error) {
	var p pipesv1.Provider
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: providerName}, &p); err != nil {
		if apierrors.IsNotFound(err) {
			return Availability{Reason: pipesv1.ReasonProviderNotFound,
				Message: fmt.Sprintf("Provider %q does not exist in namespace %q: a stored credential is kept encrypted and not vended; it is vended again once the Provider is recreated, and removed when this ConnectedAccount is deleted", providerName, namespace)}, nil
		}
		return Availability{}, err
	}
	a := Availability{Provider: &p}
	if !p.IsEnabled() {
		a.Reason, a.Message = pipesv1.ReasonProviderDisabled,
			fmt.Sprintf("Provider %q is disabled (spec.enabled=false); credentials are kept and vended again once it is enabled", p.Name)
		return a, nil
	}
	if organizationID == "" {
		return a, nil
	}
	var ops pipesv1.OrganizationProviderList
	if err := r.List(ctx, &ops, client.InNamespace(namespace),
		client.MatchingFields{index.OrganizationProviderIdentity: index.OrganizationKey(providerName, organizationID)}); err != nil {
		return Availability{}, err
	}
	for i := range ops.Items {
		op := &ops.Items[i]
		if a.Organization == nil {
			a.Organization = op
		}
		if !op.IsEnabled() {
			a.Reason, a.Message = pipesv1.ReasonOrganizationDisabled,
				fmt.Sprintf("OrganizationProvider %q disables Provider %q for organization %q; credentials are kept and vended again once it is enabled", op.Name, providerName, organizationID)
			return a, nil
		}
	}
	return a, nil
}

// FindOrganizationProvider finds the OrganizationProvider of (provider, organization) in
// namespace, or nil. r is normally the manager's cache (it needs the identity index).
func FindOrganizationProvider(ctx context.Context, r client.Reader, namespace, provider, organization string) (*pipesv1.OrganizationProvider, error) {
	var list pipesv1.OrganizationProviderList
	if err := r.List(ctx, &list, client.InNamespace(namespace),
		client.MatchingFields{index.OrganizationProviderIdentity: index.OrganizationKey(provider, organization)}); err != nil {
		return nil, err
	}
	if len(list.Items) == 0 {
		return nil, nil
	}
	return &list.Items[0], nil
}
