package backendapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// WidgetTokenResource is the pipes.dev resource whose "create" lets a caller issue widget
// tokens in a namespace (POST /widgets/token); the ClusterRole pipes-backend grants it.
// It is not a kind: like TokenRequest, it exists only as a permission.
const WidgetTokenResource = "widgettokens"

// WidgetAPIPrefix is where the widget API is served on the public listener.
const WidgetAPIPrefix = "/widget/api/v1"

// issueWidgetToken answers POST /widgets/token: a token for one user of the caller's
// namespace, which the public widget API accepts for that user's connections only. The
// caller must be allowed to create widgettokens there; the admin scope also needs update
// on organizationproviders, the rights it hands on.
func (s *Server) issueWidgetToken(c *call) error {
	var req wire.WidgetTokenRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if s.Widgets == nil {
		return errorf(http.StatusNotImplemented, wire.CodeNotImplemented, "widget sessions are disabled on this operator (no public listener: --public-bind-address)")
	}
	if err := identityErrors(req.UserID, req.OrganizationID); err != nil {
		return err
	}
	if err := widgettoken.CheckScopes(req.Scopes); err != nil {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "scopes: %s", err)
	}
	manage := slices.Contains(req.Scopes, widgettoken.ScopeManage)
	if manage && req.OrganizationID == "" {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "scopes: %s manages an organization's providers: set organization_id", widgettoken.ScopeManage)
	}
	if err := c.authorize("create", WidgetTokenResource, ""); err != nil {
		return err
	}
	if manage {
		if err := c.authorize("update", orgProviders, ""); err != nil {
			return err
		}
	}
	c.auditAccount = "widget session of " + req.UserID + credential.InOrganization(req.OrganizationID)
	token, _, err := s.Widgets.Issue(widgettoken.Claims{Namespace: c.namespace, UserID: req.UserID, OrganizationID: req.OrganizationID, Scopes: req.Scopes})
	if err != nil {
		return err
	}
	return c.respond(wire.WidgetTokenResponse{Token: token})
}

// WidgetHandler serves the widget API (under WidgetAPIPrefix), authenticated by widget
// tokens alone, for the public listener. The backend API's Handler does not serve it,
// and it serves none of the backend API's routes.
func (s *Server) WidgetHandler() http.Handler {
	s.init()
	mux := http.NewServeMux()
	routes := []route{
		{"GET /session", "widget_session", s.widgetSession},
		{"GET /providers", "widget_list", s.widgetProviders},
		{"PUT /providers/{slug}/api-key", "widget_set_key", s.widgetSetKey},
		{"DELETE /providers/{slug}/connection", "widget_disconnect", s.widgetDisconnect},
		{"PUT /providers/{slug}/organization", "widget_set_enabled", s.widgetSetEnabled},
		{"POST /providers/{slug}/authorize", "widget_authorize", s.widgetAuthorize},
	}
	s.register(mux, routes, s.authenticateWidget, WidgetAPIPrefix)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, wire.ErrorResponse{Code: wire.CodeNotFound, Message: fmt.Sprintf("no widget route %s %s; see docs/widget.md", r.Method, r.URL.Path)})
	})
	return mux
}

// authenticateWidget verifies the widget token; the session it binds replaces RBAC.
func (s *Server) authenticateWidget(c *call) error {
	token, ok := strings.CutPrefix(c.r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return errorf(http.StatusUnauthorized, wire.CodeUnauthorized, "missing widget token: send 'Authorization: Bearer <token>' with a token from POST /widgets/token")
	}
	if s.Widgets == nil {
		return errorf(http.StatusNotImplemented, wire.CodeNotImplemented, "widget sessions are disabled on this operator")
	}
	claims, err := s.Widgets.Verify(c.ctx, token)
	if err != nil {
		if errors.Is(err, widgettoken.ErrExpired) {
			return errorf(http.StatusUnauthorized, wire.CodeSessionExpired, "%s", err)
		}
		return errorf(http.StatusUnauthorized, wire.CodeUnauthorized, "%s", err)
	}
	c.session = claims
	c.namespace = claims.Namespace
	c.id = &Identity{User: authnv1.UserInfo{Username: "widget:" + claims.UserID + credential.InOrganization(claims.OrganizationID)}, Namespace: claims.Namespace}
	if delay := s.identities.take(time.Now(), c.namespace+"/"+c.id.User.Username); delay > 0 {
		return rateLimited(delay, "too many requests from this widget session")
	}
	return nil
}

// sessionAllows is authorize on the widget API: the handlers name only the session's own
// user and organization, so what remains to check is the verb against the scopes.
func (c *call) sessionAllows(verb, resource string) error {
	switch {
	case resource == accounts && verb != "vend":
		return nil
	case resource == orgProviders && (verb == "list" || verb == "get"):
		return nil
	case resource == orgProviders && c.session.Manage():
		return nil
	}
	c.result = "forbidden"
	if resource == orgProviders {
		return errorf(http.StatusForbidden, wire.CodeForbidden,
			"this widget session may not enable or disable providers: that needs a token issued with scope %s for an organization", widgettoken.ScopeManage)
	}
	return errorf(http.StatusForbidden, wire.CodeForbidden, "a widget session may not %s %s", verb, resource)
}

func (s *Server) widgetSession(c *call) error {
	scopes := c.session.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return c.respond(wire.WidgetSession{UserID: c.session.UserID, OrganizationID: c.session.OrganizationID, Namespace: c.namespace,
		Scopes: scopes, ExpiresAt: c.session.ExpiresAt.UTC()})
}

// widgetProvider is p as the session's user sees it.
func (c *call) widgetProvider(p *pipesv1.Provider) (wire.WidgetProvider, error) {
	user, org := c.session.UserID, c.session.OrganizationID
	avail, err := credential.CheckAvailability(c.ctx, c.s.Client, c.namespace, p.Name, org)
	if err != nil {
		return wire.WidgetProvider{}, err
	}
	ca, err := c.account(p.Name, user, org)
	if err != nil || ca == nil {
		return c.widgetView(p, avail, nil, nil), err
	}
	stored, err := c.storedOf(ca)
	return c.widgetView(p, avail, ca, stored), err
}

// widgetView is p, whose availability for the session's organization is avail, with the
// connection ca (nil for none) holding stored (nil for none).
func (c *call) widgetView(p *pipesv1.Provider, avail credential.Availability, ca *pipesv1.ConnectedAccount, stored *credential.Stored) wire.WidgetProvider {
	v := wire.WidgetProvider{Slug: p.Name, Name: orDefault(p.Spec.DisplayName, p.Name), Description: p.Spec.Description,
		Method: authMethod(p), Enabled: avail.Available(), State: wire.StateDisconnected, OAuthAvailable: c.s.oauthReady(p, avail.Organization)}
	if ca == nil {
		return v
	}
	account := accountView(ca, p, stored)
	v.State, v.APIKeyLast4 = account.State, account.APIKeyLast4
	if stored != nil {
		v.UpdatedAt = &account.UpdatedAt
	}
	return v
}

func (s *Server) widgetProviders(c *call) error {
	providers, err := c.listProviders("list", accounts)
	if err != nil {
		return err
	}
	items := make([]wire.WidgetProvider, 0, len(providers.Items))
	for i := range providers.Items {
		v, err := c.widgetProvider(&providers.Items[i])
		if err != nil {
			return err
		}
		items = append(items, v)
	}
	slices.SortFunc(items, func(a, b wire.WidgetProvider) int {
		return compare(strings.ToLower(a.Name)+"\x00"+a.Slug, strings.ToLower(b.Name)+"\x00"+b.Slug)
	})
	return c.respond(wire.WidgetProviderList{Data: items})
}

func (s *Server) widgetSetKey(c *call) error {
	var req wire.WidgetAPIKeyRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	secret := []byte(req.Secret)
	defer clear(secret)
	org := c.session.OrganizationID
	// An end user connects only what their organization has enabled.
	available := func(p *pipesv1.Provider) error {
		avail, err := credential.CheckAvailability(c.ctx, c.s.Client, c.namespace, p.Name, org)
		if err != nil {
			return err
		}
		if !avail.Available() {
			return errorf(http.StatusConflict, wire.CodeProviderDisabled, "%s is not enabled for your organization, so no key can be connected; ask your administrator", orDefault(p.Spec.DisplayName, p.Name))
		}
		return nil
	}
	p, ca, stored, err := c.putAPIKey(c.r.PathValue("slug"), c.session.UserID, org, secret, available)
	if err != nil {
		return err
	}
	// From what was written, not the cache, which may not show the new account yet.
	// Available: checked before the key was stored. An API-key provider has no OAuth client.
	return c.respond(c.widgetView(p, credential.Availability{Provider: p}, ca, &stored))
}

func (s *Server) widgetDisconnect(c *call) error {
	p, ca, err := c.userAccountOf("delete", c.r.PathValue("slug"), c.session.UserID, c.session.OrganizationID)
	if err != nil {
		return err
	}
	return c.deleteAccount(p, ca)
}

func (s *Server) widgetSetEnabled(c *call) error {
	var req wire.WidgetOrganizationRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Enabled == nil {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "enabled: required: send {\"enabled\": true} or {\"enabled\": false}")
	}
	if !c.session.Manage() {
		return c.sessionAllows("update", orgProviders)
	}
	p, op, err := c.setOrgConfig(c.r.PathValue("slug"), c.session.OrganizationID, wire.PutDataIntegrationConfigurationRequest{Enabled: req.Enabled}, true)
	if err != nil {
		return err
	}
	v, err := c.widgetProvider(p)
	if err != nil {
		return err
	}
	// From what was written: the cache may not show the OrganizationProvider yet.
	v.Enabled = p.IsEnabled() && op.IsEnabled()
	return c.respond(v)
}

// oauthReady reports whether p's OAuth flow can start for an organization whose
// OrganizationProvider is op (nil: none): OAuth runs here, and p has a client for it (its
// own, or the organization's when credentialsMode is Organization).
func (s *Server) oauthReady(p *pipesv1.Provider, op *pipesv1.OrganizationProvider) bool {
	if s.OAuth == nil || p.Spec.Method != pipesv1.AuthMethodOAuth || p.Spec.OAuth == nil {
		return false
	}
	if p.Spec.OAuth.CredentialsMode != pipesv1.OAuthCredentialsOrganization {
		return true
	}
	return op != nil && op.Spec.Credentials != nil
}

// widgetAuthorize starts the session user's OAuth flow for a provider: the URL the widget
// opens. Without return_to the flow ends on the operator's own page ("you can close this
// window"), which suits the widget's popup.
func (s *Server) widgetAuthorize(c *call) error {
	var req wire.WidgetAuthorizeRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	u, err := c.beginOAuth(c.r.PathValue("slug"), c.session.UserID, c.session.OrganizationID, req.ReturnTo)
	if err != nil {
		return err
	}
	return c.respond(wire.AuthorizeResponse{URL: u})
}
