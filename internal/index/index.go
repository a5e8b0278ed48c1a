// Package index owns the cache field indexes that let reconcilers, webhooks and the
// backend API find objects by reference (accounts of a provider, the account of a user)
// without listing everything.
package index

import (
	"context"
	"fmt"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// Index names, usable with client.MatchingFields and a namespace.
const (
	// AccountProvider indexes ConnectedAccounts by spec.providerRef.name.
	AccountProvider = "spec.providerRef.name"
	// AccountIdentity indexes ConnectedAccounts by AccountKey(provider, user, organization).
	AccountIdentity = "pipes.dev/identity"
	// AccountSourceSecret indexes ConnectedAccounts by spec.apiKey.secretKeyRef.name.
	AccountSourceSecret = "spec.apiKey.secretKeyRef.name"
	// OrganizationProviderProvider indexes OrganizationProviders by spec.providerRef.name.
	OrganizationProviderProvider = "spec.providerRef.name"
	// OrganizationProviderIdentity indexes OrganizationProviders by OrganizationKey(provider, organization).
	OrganizationProviderIdentity = "pipes.dev/identity"
)

// AccountKey is a ConnectedAccount's identity: one account per key and namespace holds
// the credential (see credential.FindAccount).
func AccountKey(provider, user, organization string) string {
	return provider + "\x00" + user + "\x00" + organization
}

// AccountKeyOf is ca's AccountKey.
func AccountKeyOf(ca *pipesv1.ConnectedAccount) string {
	return AccountKey(ca.Spec.ProviderRef.Name, ca.Spec.UserID, ca.Spec.OrganizationID)
}

// OrganizationKey is an OrganizationProvider's identity: at most one exists per key and namespace.
func OrganizationKey(provider, organization string) string {
	return provider + "\x00" + organization
}

// Register adds every index to indexer (the manager's field indexer).
func Register(ctx context.Context, indexer client.FieldIndexer) error {
	indexes := []struct {
		obj   client.Object
		field string
		fn    client.IndexerFunc
	}{
		{&pipesv1.ConnectedAccount{}, AccountProvider, func(o client.Object) []string {
			return []string{o.(*pipesv1.ConnectedAccount).Spec.ProviderRef.Name}
		}},
		{&pipesv1.ConnectedAccount{}, AccountIdentity, func(o client.Object) []string {
			return []string{AccountKeyOf(o.(*pipesv1.ConnectedAccount))}
		}},
		{&pipesv1.ConnectedAccount{}, AccountSourceSecret, func(o client.Object) []string {
			s := o.(*pipesv1.ConnectedAccount).Spec
			if s.APIKey == nil || s.APIKey.SecretKeyRef == nil {
				return nil
			}
			return []string{s.APIKey.SecretKeyRef.Name}
		}},
		{&pipesv1.OrganizationProvider{}, OrganizationProviderProvider, func(o client.Object) []string {
			return []string{o.(*pipesv1.OrganizationProvider).Spec.ProviderRef.Name}
		}},
		{&pipesv1.OrganizationProvider{}, OrganizationProviderIdentity, func(o client.Object) []string {
			s := o.(*pipesv1.OrganizationProvider).Spec
			return []string{OrganizationKey(s.ProviderRef.Name, s.OrganizationID)}
		}},
	}
	for _, ix := range indexes {
		if err := indexer.IndexField(ctx, ix.obj, ix.field, ix.fn); err != nil {
			return err
		}
	}
	return nil
}

// Namespaced is a field indexer for c's informers that indexes each value under its
// object's namespace only. controller-runtime's own indexer also indexes every value
// cluster-wide, for lists without a namespace: that doubles the indexes (at 10,000
// accounts, two of three indexes unique per account, about 8 MB), and the operator never
// lists by field without a namespace. Such a list finds nothing here.
func Namespaced(c cache.Cache) client.FieldIndexer { return namespaced{c} }

type namespaced struct{ cache cache.Cache }

func (n namespaced) IndexField(ctx context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	informer, err := n.cache.GetInformer(ctx, obj)
	if err != nil {
		return err
	}
	// The index name and key format are those controller-runtime's cache reader queries
	// (internal.FieldIndexName, internal.KeyToNamespacedKey); the envtest suites, which
	// run the operator, fail if they change.
	return informer.AddIndexers(toolscache.Indexers{"field:" + field: func(raw any) ([]string, error) {
		o, ok := raw.(client.Object)
		if !ok {
			return nil, fmt.Errorf("index %s: %T is not an object", field, raw)
		}
		ns := o.GetNamespace()
		if ns == "" {
			ns = "__all_namespaces"
		}
		values := fn(o)
		keys := make([]string, len(values))
		for i, v := range values {
			keys[i] = ns + "/" + v
		}
		return keys, nil
	}})
}
