package backendapi

import (
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

func (s *Server) listDataProviders(c *call) error {
	user, org := c.r.PathValue("user_id"), c.r.URL.Query().Get("organization_id")
	if err := identityErrors(user, org); err != nil {
		return err
	}
	providers, err := c.listProviders("list", accounts)
	if err != nil {
		return err
	}
	items := make([]wire.DataProvider, 0, len(providers.Items))
	for i := range providers.Items {
		p := &providers.Items[i]
		avail, err := credential.CheckAvailability(c.ctx, c.s.Client, c.namespace, p.Name, org)
		if err != nil {
			return err
		}
		dp := wire.DataProvider{
			Object: "data_provider", ID: string(p.UID), Name: orDefault(p.Spec.DisplayName, p.Name), Slug: p.Name,
			Description: p.Spec.Description, AuthMethods: []string{authMethod(p)}, Enabled: avail.Available(),
		}
		ca, err := c.account(p.Name, user, org)
		if err != nil {
			return err
		}
		if ca != nil {
			stored, err := c.storedOf(ca)
			if err != nil {
				return err
			}
			dp.ConnectedAccount = accountView(ca, p, stored)
		}
		items = append(items, dp)
	}
	list, err := page(c, items, func(d wire.DataProvider) string { return d.Slug })
	if err != nil {
		return err
	}
	return c.respond(list)
}

// listProviders authorizes verb on resource, then lists the namespace's Providers.
func (c *call) listProviders(verb, resource string) (*pipesv1.ProviderList, error) {
	if err := c.authorize(verb, resource, ""); err != nil {
		return nil, err
	}
	var providers pipesv1.ProviderList
	return &providers, c.s.Client.List(c.ctx, &providers, client.InNamespace(c.namespace))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
