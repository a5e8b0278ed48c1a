package backendapi

import (
	"net/http"
	"time"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// credentialsRequest reads the body of the vend routes and authorizes vend on the account;
// the account is nil when the user has none.
func (c *call) credentialsRequest() (wire.CredentialsRequest, *pipesv1.ConnectedAccount, error) {
	var req wire.CredentialsRequest
	if err := c.decode(&req); err != nil {
		return req, nil, err
	}
	if err := identityErrors(req.UserID, req.OrganizationID); err != nil {
		return req, nil, err
	}
	ca, err := c.authorizedAccount("vend", c.r.PathValue("slug"), req.UserID, req.OrganizationID)
	return req, ca, err
}

// vendCredentials returns the user's credential, or why there is none.
func (s *Server) vendCredentials(c *call) error {
	req, ca, err := c.credentialsRequest()
	if err != nil {
		return err
	}
	p, err := c.provider(c.r.PathValue("slug"))
	if err != nil {
		return err
	}
	resp, _, err := s.vend(c, p, ca, req.OrganizationID)
	if err != nil {
		return err
	}
	return c.respond(resp)
}

// vend answers with the credential of ca (nil: no account), on which the caller is
// authorized to vend. origin names the objects the answer comes from (UIDs and the
// Secret's resourceVersion, never a value), for the watch's ETag.
func (s *Server) vend(c *call, p *pipesv1.Provider, ca *pipesv1.ConnectedAccount, org string) (resp wire.CredentialsResponse, origin string, err error) {
	resp, origin, _, err = s.vendStored(c, p, ca, org)
	return resp, origin, err
}

// vendStored is vend that also says when the vended credential was stored (zero when
// none is vended), which the watch passes on to the sidecar.
func (s *Server) vendStored(c *call, p *pipesv1.Provider, ca *pipesv1.ConnectedAccount, org string) (resp wire.CredentialsResponse, origin string, rotatedAt time.Time, err error) {
	notInstalled := wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}
	if ca == nil {
		c.result = wire.ErrorNotInstalled
		return notInstalled, "", time.Time{}, nil
	}
	origin = string(ca.UID)
	avail, err := credential.CheckAvailability(c.ctx, c.s.Client, c.namespace, p.Name, org)
	if err != nil {
		return notInstalled, origin, time.Time{}, err
	}
	if !avail.Available() {
		c.result = wire.ErrorNotInstalled + ":" + avail.Reason
		return notInstalled, origin, time.Time{}, nil
	}
	if p.Spec.Method == pipesv1.AuthMethodOAuth {
		return s.vendOAuth(c, p, ca, avail)
	}
	secret, err := s.Store.Get(c.ctx, ca)
	if err != nil || secret == nil {
		c.result = wire.ErrorNotInstalled
		return notInstalled, origin, time.Time{}, err
	}
	origin += "/" + string(secret.UID) + "/" + secret.ResourceVersion
	plain, err := s.Store.Open(ca, secret)
	if err != nil {
		c.result = wire.ErrorNeedsReauthorization
		return wire.CredentialsResponse{Active: false, Error: wire.ErrorNeedsReauthorization}, origin, time.Time{}, nil
	}
	c.result = "ok"
	stored := credential.Describe(secret)
	return wire.CredentialsResponse{Active: true, Credential: &wire.Credential{
		Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: string(plain), Version: stored.Version,
	}}, origin, stored.RotatedAt, nil
}

// vendToken is the OAuth access-token route; API-key providers have no token.
func (s *Server) vendToken(c *call) error {
	req, ca, err := c.credentialsRequest()
	if err != nil {
		return err
	}
	p, err := c.provider(c.r.PathValue("slug"))
	if err != nil {
		return err
	}
	if p.Spec.Method == pipesv1.AuthMethodAPIKey {
		return errorf(http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch,
			"%s", validation.TokenForAPIKeyProvider(p.Name))
	}
	resp, _, err := s.vend(c, p, ca, req.OrganizationID)
	if err != nil {
		return err
	}
	return c.respond(resp)
}
