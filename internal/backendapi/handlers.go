package backendapi

import (
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	accounts     = "connectedaccounts"
	orgProviders = "organizationproviders"
	fieldSecret  = "secret"
	fieldUserID  = "user_id"
	fieldOrgID   = "organization_id"
)

// provider looks up the route's Provider. Callers authorize first, so that a caller
// without permission cannot probe which Providers exist or what their method is.
func (c *call) provider(slug string) (*pipesv1.Provider, error) {
	var p pipesv1.Provider
	err := c.s.Client.Get(c.ctx, types.NamespacedName{Namespace: c.namespace, Name: slug}, &p)
	if apierrors.IsNotFound(err) {
		return nil, errorf(http.StatusNotFound, wire.CodeNotFound, "data integration %q not found: no Provider %q in namespace %q", slug, slug, c.namespace)
	}
	return &p, err
}

// account finds the ConnectedAccount of (slug, user, org), or nil.
func (c *call) account(slug, user, org string) (*pipesv1.ConnectedAccount, error) {
	return credential.FindAccount(c.ctx, c.s.Client, c.namespace, slug, user, org)
}

// accountName is ca's name, or for no account the name the API gives a new one: what
// verbs on a missing account are authorized against, so RBAC resourceNames narrow them too.
func accountName(ca *pipesv1.ConnectedAccount, slug, user, org string) string {
	if ca != nil {
		return ca.Name
	}
	return credential.AccountName(slug, user, org)
}

// authorizedAccount finds the account of (slug, user, org), or nil, and authorizes verb on it.
func (c *call) authorizedAccount(verb, slug, user, org string) (*pipesv1.ConnectedAccount, error) {
	ca, err := c.account(slug, user, org)
	if err != nil {
		return nil, err
	}
	if ca != nil {
		c.auditAccount = ca.Name
	}
	return ca, c.authorize(verb, accounts, accountName(ca, slug, user, org))
}

func identityErrors(user, org string) error {
	return invalidRequest(append(validation.UserID(field.NewPath(fieldUserID), user), validation.OrganizationID(field.NewPath(fieldOrgID), org)...))
}

// organizationErrors checks the organization ID of the /organizations/{organization_id} routes.
func organizationErrors(org string) error {
	return invalidRequest(validation.OrganizationID(field.NewPath(fieldOrgID), org))
}

func invalidRequest(errs field.ErrorList) error {
	if len(errs) > 0 {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "%s", validation.Message(errs))
	}
	return nil
}

func authMethod(p *pipesv1.Provider) string {
	if p.Spec.Method == pipesv1.AuthMethodOAuth {
		return wire.AuthMethodOAuth
	}
	return wire.AuthMethodAPIKey
}
