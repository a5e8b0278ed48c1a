package backendapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	accounts      = "connectedaccounts"
	orgProviders  = "organizationproviders"
	fieldSecret   = "secret"
	fieldUserID   = "user_id"
	fieldOrgID    = "organization_id"
	defaultLimit  = 10
	maxListLimit  = 100
	cacheWaitTime = 5 * time.Second
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

// upsertAPIKey installs or rotates a user's key: the plaintext goes straight into the
// sealed credential Secret; no plaintext object is ever written.
func (s *Server) upsertAPIKey(c *call) error {
	var req wire.UpsertAPIKeyRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	secret := []byte(req.Secret)
	defer clear(secret)
	slug := c.r.PathValue("slug")
	if err := identityErrors(req.UserID, req.OrganizationID); err != nil {
		return err
	}
	if errs := validation.APIKey(field.NewPath(fieldSecret), secret); len(errs) > 0 {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "%s", validation.Message(errs))
	}
	found, err := c.account(slug, req.UserID, req.OrganizationID)
	if err != nil {
		return err
	}
	verb := "update"
	if found == nil {
		verb = "create"
	}
	if err := c.authorize(verb, accounts, accountName(found, slug, req.UserID, req.OrganizationID)); err != nil {
		return err
	}
	p, err := c.provider(slug)
	if err != nil {
		return err
	}
	if p.Spec.Method != pipesv1.AuthMethodAPIKey {
		return errorf(http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch, "data integration %q uses OAuth: its users connect through the OAuth flow, not with an API key", slug)
	}
	ca, err := c.targetAccount(found, slug, req.UserID, req.OrganizationID)
	if err != nil {
		return err
	}
	c.auditAccount = ca.Name
	stored, err := s.storeKey(c.ctx, ca, secret)
	if err != nil {
		return err
	}
	return c.respond(http.StatusOK, accountView(ca, p, &stored))
}

// targetAccount returns the account an upsert stores the key in, read fresh from the API
// server: found, or else a new account with the deterministic name. Whatever already holds
// that name (a concurrent first upsert, an account the cache did not show yet, or an
// object someone else created) is used only if checkTarget accepts it.
func (c *call) targetAccount(found *pipesv1.ConnectedAccount, slug, user, org string) (*pipesv1.ConnectedAccount, error) {
	ca := &pipesv1.ConnectedAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: accountName(found, slug, user, org)},
		Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: slug}, UserID: user, OrganizationID: org},
	}
	if found == nil {
		err := c.s.Client.Create(c.ctx, ca)
		if err == nil || !apierrors.IsAlreadyExists(err) {
			return ca, err
		}
		// We authorized a create but will write to an existing account.
		if err := c.authorize("update", accounts, ca.Name); err != nil {
			return nil, err
		}
	}
	existing := &pipesv1.ConnectedAccount{} // fresh: what is checked comes from the API server alone
	if err := c.s.APIReader.Get(c.ctx, client.ObjectKeyFromObject(ca), existing); apierrors.IsNotFound(err) {
		return nil, errorf(http.StatusConflict, wire.CodeConflict, "ConnectedAccount %q was deleted while the key was being stored: nothing was stored; retry", ca.Name)
	} else if err != nil {
		return nil, err
	}
	return existing, checkTarget(existing, slug, user, org)
}

// checkTarget refuses to store a key in an account of another identity (a name collision,
// or an object created by hand under the API's name), in one being deleted (its
// credential is about to go), or in one whose key comes from a Secret.
func checkTarget(ca *pipesv1.ConnectedAccount, slug, user, org string) error {
	switch {
	case ca.Spec.ProviderRef.Name != slug || ca.Spec.UserID != user || ca.Spec.OrganizationID != org:
		return errorf(http.StatusConflict, wire.CodeConflict,
			"ConnectedAccount %q (the name this API gives the account of user %q%s for %q) belongs to user %q%s for %q: nothing was stored; it was not created by this API for this user, so delete it or recreate it under another name, then retry",
			ca.Name, user, credential.InOrganization(org), slug, ca.Spec.UserID, credential.InOrganization(ca.Spec.OrganizationID), ca.Spec.ProviderRef.Name)
	case !ca.DeletionTimestamp.IsZero():
		return errorf(http.StatusConflict, wire.CodeConflict,
			"ConnectedAccount %q is being deleted (finalizers %v hold it): nothing was stored; retry once it is gone", ca.Name, ca.Finalizers)
	case ca.Spec.APIKey != nil:
		return errorf(http.StatusConflict, wire.CodeConflict,
			"the key of ConnectedAccount %q comes from Secret %q (spec.apiKey.secretKeyRef): update that Secret, or remove spec.apiKey to manage the key through this API",
			ca.Name, ca.Spec.APIKey.SecretKeyRef.Name)
	}
	return nil
}

// storeKey seals key into the account's Secret, replacing what is stored (version + 1)
// unless it is the same key, and returns once this replica's cache shows the write, so
// a vend that follows sees the new key.
func (s *Server) storeKey(ctx context.Context, ca *pipesv1.ConnectedAccount, key []byte) (credential.Stored, error) {
	var stored credential.Stored
	var notOwned error
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 20 * time.Millisecond, Factor: 2, Steps: 6}, func(ctx context.Context) (bool, error) {
		existing, err := s.Store.Get(ctx, ca)
		if errors.Is(err, credential.ErrNotOwned) {
			// Usually the Secret of a disconnected account of the same name, still in the
			// cache while it is deleted; read again.
			notOwned = err
			return false, nil
		}
		if err != nil {
			return false, err
		}
		next := credential.Stored{Version: credential.NextVersion(ca, nil), Last4: validation.Last4(key)}
		if existing != nil {
			prev := credential.Describe(existing)
			if plain, err := s.Store.Open(ca, existing); err == nil && bytes.Equal(plain, key) {
				clear(plain)
				stored = prev // the same key again: nothing to rotate
				return true, nil
			}
			next.Version = credential.NextVersion(ca, &prev)
		}
		stored, err = s.Store.Put(ctx, ca, existing, key, next)
		switch {
		case apierrors.IsAlreadyExists(err):
			// The cache was behind, or a Secret it does not hold (not ours) has the name.
			notOwned = fmt.Errorf("Secret %s/%s already exists and is not ConnectedAccount %s's credential Secret; delete or rename that Secret", ca.Namespace, credential.SecretName(ca), ca.Name)
			return false, nil
		case apierrors.IsConflict(err):
			return false, nil // the cache was behind; read again
		case err != nil:
			return false, err
		}
		credential.RecordStored(s.Recorder, ca, stored, existing != nil, " through the backend API")
		return true, nil
	})
	if wait.Interrupted(err) && notOwned != nil {
		return stored, errorf(http.StatusConflict, wire.CodeConflict, "%s", notOwned.Error())
	}
	if err != nil {
		return stored, err
	}
	// Read-your-writes on this replica.
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, cacheWaitTime, true, func(ctx context.Context) (bool, error) {
		got, err := s.Store.Get(ctx, ca)
		return got != nil && credential.Describe(got).Version >= stored.Version, err
	})
	return stored, err
}

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
	return c.respond(http.StatusOK, resp)
}

// vend answers with the credential of ca (nil: no account), on which the caller is
// authorized to vend. origin names the objects the answer comes from (UIDs and the
// Secret's resourceVersion, never a value), for the watch's ETag.
func (s *Server) vend(c *call, p *pipesv1.Provider, ca *pipesv1.ConnectedAccount, org string) (resp wire.CredentialsResponse, origin string, err error) {
	notInstalled := wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}
	if ca == nil {
		c.result = wire.ErrorNotInstalled
		return notInstalled, "", nil
	}
	origin = string(ca.UID)
	if p.Spec.Method == pipesv1.AuthMethodOAuth {
		return notInstalled, origin, errorf(http.StatusNotImplemented, wire.CodeNotImplemented, "OAuth credentials are not supported yet")
	}
	avail, err := credential.CheckAvailability(c.ctx, c.s.Client, c.namespace, p.Name, org)
	if err != nil {
		return notInstalled, origin, err
	}
	if !avail.Available() {
		c.result = wire.ErrorNotInstalled + ":" + avail.Reason
		return notInstalled, origin, nil
	}
	secret, err := s.Store.Get(c.ctx, ca)
	if err != nil || secret == nil {
		c.result = wire.ErrorNotInstalled
		return notInstalled, origin, err
	}
	origin += "/" + string(secret.UID) + "/" + secret.ResourceVersion
	plain, err := s.Store.Open(ca, secret)
	if err != nil {
		c.result = wire.ErrorNeedsReauthorization
		return wire.CredentialsResponse{Active: false, Error: wire.ErrorNeedsReauthorization}, origin, nil
	}
	c.result = "ok"
	return wire.CredentialsResponse{Active: true, Credential: &wire.Credential{
		Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: string(plain), Version: credential.Describe(secret).Version,
	}}, origin, nil
}

// vendToken is the OAuth access-token route; API-key providers have no token.
func (s *Server) vendToken(c *call) error {
	if _, _, err := c.credentialsRequest(); err != nil {
		return err
	}
	p, err := c.provider(c.r.PathValue("slug"))
	if err != nil {
		return err
	}
	if p.Spec.Method == pipesv1.AuthMethodAPIKey {
		return errorf(http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch,
			"data integration %q uses API keys, which have no access token: use POST /data-integrations/%s/credentials", p.Name, p.Name)
	}
	return errorf(http.StatusNotImplemented, wire.CodeNotImplemented, "OAuth access tokens are not supported yet")
}

// accountView is the hosted API's connected_account; stored is nil when no credential is stored.
func accountView(ca *pipesv1.ConnectedAccount, p *pipesv1.Provider, stored *credential.Stored) *wire.ConnectedAccount {
	v := &wire.ConnectedAccount{
		Object: "connected_account", ID: string(ca.UID), UserID: ca.Spec.UserID, Scopes: []string{},
		State: string(pipesv1.StateDisconnected), AuthMethod: authMethod(p),
		CreatedAt: ca.CreationTimestamp.UTC(), UpdatedAt: ca.CreationTimestamp.UTC(),
	}
	if ca.Spec.OrganizationID != "" {
		org := ca.Spec.OrganizationID
		v.OrganizationID = &org
	}
	if stored != nil {
		v.State = string(pipesv1.StateConnected)
		if ca.Status.State == pipesv1.StateNeedsReauthorization {
			v.State = string(pipesv1.StateNeedsReauthorization)
		}
		v.APIKeyLast4 = stored.Last4
		if !stored.RotatedAt.IsZero() {
			v.UpdatedAt = stored.RotatedAt.UTC()
		}
	}
	return v
}

func (c *call) storedOf(ca *pipesv1.ConnectedAccount) (*credential.Stored, error) {
	secret, err := c.s.Store.Get(c.ctx, ca)
	if err != nil || secret == nil {
		return nil, err
	}
	stored := credential.Describe(secret)
	return &stored, nil
}

// userAccount resolves the route's user account and authorizes verb on it; a missing
// account is a 404 once the caller may do verb on it.
func (c *call) userAccount(verb string) (*pipesv1.Provider, *pipesv1.ConnectedAccount, error) {
	slug, user, org := c.r.PathValue("slug"), c.r.PathValue("user_id"), c.r.URL.Query().Get("organization_id")
	ca, err := c.authorizedAccount(verb, slug, user, org)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.provider(slug)
	if err != nil {
		return nil, nil, err
	}
	if ca == nil {
		return nil, nil, errorf(http.StatusNotFound, wire.CodeNotFound, "user %q has no connected account for %q%s", user, slug, credential.InOrganization(org))
	}
	return p, ca, nil
}

func (s *Server) getConnectedAccount(c *call) error {
	p, ca, err := c.userAccount("get")
	if err != nil {
		return err
	}
	stored, err := c.storedOf(ca)
	if err != nil {
		return err
	}
	return c.respond(http.StatusOK, accountView(ca, p, stored))
}

// disconnect deletes the account; its finalizer removes the stored credential.
func (s *Server) disconnect(c *call) error {
	_, ca, err := c.userAccount("delete")
	if err != nil {
		return err
	}
	if ca.Spec.APIKey != nil {
		return errorf(http.StatusConflict, wire.CodeConflict,
			"ConnectedAccount %q is declared with spec.apiKey.secretKeyRef (GitOps): delete it where it is declared", ca.Name)
	}
	if err := c.s.Client.Delete(c.ctx, ca, client.Preconditions{UID: &ca.UID}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	c.result = "ok"
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// page applies ?limit= and ?after= (a slug) to slugs sorted ascending.
func page[T any](c *call, items []T, slug func(T) string) (wire.List[T], error) {
	limit := defaultLimit
	if raw := c.r.URL.Query().Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxListLimit {
			return wire.List[T]{}, errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "limit must be a whole number from 1 to %d", maxListLimit)
		}
		limit = n
	}
	slices.SortFunc(items, func(a, b T) int { return compare(slug(a), slug(b)) })
	start := 0
	if after := c.r.URL.Query().Get("after"); after != "" {
		start = len(items)
		for i, it := range items {
			if slug(it) > after {
				start = i
				break
			}
		}
	}
	list := wire.List[T]{Object: "list", Data: []T{}}
	end := min(start+limit, len(items))
	list.Data = append(list.Data, items[start:end]...)
	if start > 0 && start <= len(items) && len(list.Data) > 0 {
		before := slug(list.Data[0])
		list.ListMetadata.Before = &before
	}
	if end < len(items) {
		after := slug(items[end-1])
		list.ListMetadata.After = &after
	}
	return list, nil
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

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
	return c.respond(http.StatusOK, list)
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

// orgProvider finds the OrganizationProvider of (slug, org), or nil.
func (c *call) orgProvider(slug, org string) (*pipesv1.OrganizationProvider, error) {
	var list pipesv1.OrganizationProviderList
	if err := c.s.Client.List(c.ctx, &list, client.InNamespace(c.namespace),
		client.MatchingFields{index.OrganizationProviderIdentity: index.OrganizationKey(slug, org)}); err != nil {
		return nil, err
	}
	if len(list.Items) == 0 {
		return nil, nil
	}
	return &list.Items[0], nil
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
	return c.respond(http.StatusOK, list)
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
		op.Spec.Scopes = req.Scopes
		return c.s.Client.Update(c.ctx, op)
	})
	if err != nil {
		return admissionError(err)
	}
	return c.respond(http.StatusOK, orgConfigView(p, org, op))
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
