package credential

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
)

// FindAccount returns the ConnectedAccount that holds the credential of (provider, user,
// organization) in namespace, or nil. The webhook admits one account per identity, but
// two can still get in (created within the cache's lag of each other, or while the
// webhook was not installed); then the oldest, then the first by name, is the account:
// the reconciler stores a credential for it alone and the backend API vends it alone, so
// both always agree. Accounts being deleted do not count.
func FindAccount(ctx context.Context, r client.Reader, namespace, provider, user, organization string) (*pipesv1.ConnectedAccount, error) {
	var list pipesv1.ConnectedAccountList
	if err := r.List(ctx, &list, client.InNamespace(namespace),
		client.MatchingFields{index.AccountIdentity: index.AccountKey(provider, user, organization)}); err != nil {
		return nil, err
	}
	var found *pipesv1.ConnectedAccount
	for i := range list.Items {
		ca := &list.Items[i]
		if !ca.DeletionTimestamp.IsZero() {
			continue
		}
		if found == nil || olderThan(ca, found) {
			found = ca
		}
	}
	return found, nil
}

func olderThan(a, b *pipesv1.ConnectedAccount) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// InOrganization is the phrase messages append to a user to name their organization:
// ` in organization "o"`, or nothing for a personal account.
func InOrganization(organization string) string {
	if organization == "" {
		return ""
	}
	return fmt.Sprintf(" in organization %q", organization)
}

// SealingContext is what a value in ca's spec.apiKey.sealed is bound to: its namespace,
// name, provider, user and organization.
func SealingContext(ca *pipesv1.ConnectedAccount) sealing.Context {
	return sealing.Context{Namespace: ca.Namespace, Name: ca.Name, Provider: ca.Spec.ProviderRef.Name, User: ca.Spec.UserID, Organization: ca.Spec.OrganizationID}
}
