package backendapi

import (
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/util/retry"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// orgProvider finds the OrganizationProvider of (slug, org), or nil.
func (c *call) orgProvider(slug, org string) (*pipesv1.OrganizationProvider, error) {
	return credential.FindOrganizationProvider(c.ctx, c.s.Client, c.namespace, slug, org)
}

func orgConfigView(p *pipesv1.Provider, org string, op *pipesv1.OrganizationProvider) wire.DataIntegrationConfiguration {
	v := wire.DataIntegrationConfiguration{
		Object: "data_integration_configuration", Slug: p.Name, OrganizationID: org, Enabled: true, AuthMethod: authMethod(p), Scopes: []string{},
	}
	if p.Spec.OAuth != nil {
		v.Scopes = append(v.Scopes, p.Spec.OAuth.Scopes...)
	}
	if op != nil {
		v.Enabled = op.IsEnabled()
		if len(op.Spec.Scopes) > 0 {
			v.Scopes = append([]string{}, op.Spec.Scopes...)
		}
		if op.Spec.Credentials != nil {
			v.ClientID = op.Spec.Credentials.ClientID
		}
	}
	return v
}

func (s *Server) listOrgConfigs(c *call) error {
	org := c.r.PathValue("organization_id")
	if err := organizationErrors(org); err != nil {
		return err
	}
	providers, err := c.listProviders("list", orgProviders)
	if err != nil {
		return err
	}
	items := make([]wire.DataIntegrationConfiguration, 0, len(providers.Items))
	for i := range providers.Items {
		op, err := c.orgProvider(providers.Items[i].Name, org)
		if err != nil {
			return err
		}
		items = append(items, orgConfigView(&providers.Items[i], org, op))
	}
	list, err := page(c, items, func(d wire.DataIntegrationConfiguration) string { return d.Slug })
	if err != nil {
		return err
	}
	return c.respond(list)
}

// putOrgConfig creates or updates the organization's OrganizationProvider, with the
// same rules as the webhook.
func (s *Server) putOrgConfig(c *call) error {
	var req wire.PutDataIntegrationConfigurationRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	slug, org := c.r.PathValue("slug"), c.r.PathValue("organization_id")
	if err := organizationErrors(org); err != nil {
		return err
	}
	p, op, err := c.setOrgConfig(slug, org, req, false)
	if err != nil {
		return err
	}
	return c.respond(orgConfigView(p, org, op))
}

// setOrgConfig creates or updates the OrganizationProvider of (slug, org), with the same
// rules as the webhook: the one path of the backend API and the admin widget.
// With keepScopes, an existing object's scopes stay (the admin widget sets enabled only).
func (c *call) setOrgConfig(slug, org string, req wire.PutDataIntegrationConfigurationRequest, keepScopes bool) (*pipesv1.Provider, *pipesv1.OrganizationProvider, error) {
	var p *pipesv1.Provider
	var op *pipesv1.OrganizationProvider
	// The cache may lag behind our own or the operator's writes: retry conflicts on fresh reads.
	err := retry.OnError(retry.DefaultRetry, func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }, func() error {
		existing, err := c.currentOrgProvider(slug, org)
		if err != nil {
			return err
		}
		verb, name := "create", credential.AccountName(slug, "", org)
		if existing != nil {
			verb, name = "update", existing.Name
		}
		if err := c.authorize(verb, orgProviders, name); err != nil {
			return err
		}
		if p, err = c.provider(slug); err != nil {
			return err
		}
		hasCredentials := req.ClientID != "" || req.ClientSecret != ""
		if errs := validation.OrganizationSettings(p, req.Scopes, hasCredentials, field.NewPath("scopes"), field.NewPath("client_id")); len(errs) > 0 {
			return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "%s", validation.Message(errs))
		}
		if hasCredentials {
			return errorf(http.StatusNotImplemented, wire.CodeNotImplemented, "organization OAuth clients cannot be set through the API yet; create an OrganizationProvider with spec.credentials")
		}
		if existing == nil {
			op = &pipesv1.OrganizationProvider{
				ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: name},
				Spec:       pipesv1.OrganizationProviderSpec{ProviderRef: pipesv1.LocalObjectReference{Name: slug}, OrganizationID: org, Enabled: req.Enabled, Scopes: req.Scopes},
			}
			return c.s.Client.Create(c.ctx, op)
		}
		if err := checkOrgTarget(existing, slug, org); err != nil {
			return err
		}
		op = existing
		if req.Enabled != nil {
			op.Spec.Enabled = req.Enabled
		}
		if !keepScopes {
			op.Spec.Scopes = req.Scopes
		}
		return c.s.Client.Update(c.ctx, op)
	})
	if err != nil {
		return nil, nil, admissionError(err)
	}
	return p, op, nil
}

// checkOrgTarget refuses to change the settings of another organization (an object
// created by hand under the name the API gives this one) or settings being deleted.
func checkOrgTarget(op *pipesv1.OrganizationProvider, slug, org string) error {
	switch {
	case op.Spec.ProviderRef.Name != slug || op.Spec.OrganizationID != org:
		return errorf(http.StatusConflict, wire.CodeConflict,
			"OrganizationProvider %q (the name this API gives the settings of organization %q for %q) holds the settings of organization %q for %q: nothing was changed; it was not created by this API for this organization, so delete it or recreate it under another name, then retry",
			op.Name, org, slug, op.Spec.OrganizationID, op.Spec.ProviderRef.Name)
	case !op.DeletionTimestamp.IsZero():
		return errorf(http.StatusConflict, wire.CodeConflict,
			"OrganizationProvider %q is being deleted (finalizers %v hold it): nothing was changed; retry once it is gone", op.Name, op.Finalizers)
	}
	return nil
}

// currentOrgProvider finds the OrganizationProvider of (slug, org) and reads it fresh
// from the API server: the one the API created (deterministic name) or any other.
func (c *call) currentOrgProvider(slug, org string) (*pipesv1.OrganizationProvider, error) {
	name := credential.AccountName(slug, "", org)
	if cached, err := c.orgProvider(slug, org); err != nil {
		return nil, err
	} else if cached != nil {
		name = cached.Name
	}
	var op pipesv1.OrganizationProvider
	err := c.s.APIReader.Get(c.ctx, types.NamespacedName{Namespace: c.namespace, Name: name}, &op)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return &op, err
}

// admissionError passes the webhook's and CEL's messages through as 400s and conflicts as 409s.
func admissionError(err error) error {
	switch {
	case isAPIError(err):
		return err
	case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err):
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "%s", err.Error())
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return errorf(http.StatusConflict, wire.CodeConflict, "the organization's configuration changed concurrently; retry")
	}
	return err
}

func isAPIError(err error) bool {
	_, ok := err.(*apiError)
	return ok
}
