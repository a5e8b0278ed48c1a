package backendapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// upsertAPIKey installs or rotates a user's key: the plaintext goes straight into the
// sealed credential Secret; no plaintext object is ever written.
func (s *Server) upsertAPIKey(c *call) error {
	var req wire.UpsertAPIKeyRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	secret := []byte(req.Secret)
	defer clear(secret)
	if err := identityErrors(req.UserID, req.OrganizationID); err != nil {
		return err
	}
	p, ca, stored, err := c.putAPIKey(c.r.PathValue("slug"), req.UserID, req.OrganizationID, secret, nil)
	if err != nil {
		return err
	}
	return c.respond(accountView(ca, p, &stored))
}

// putAPIKey stores secret as the key of (slug, user, org), creating the account if needed:
// the one path of the backend API and the widget. check, when set, vets the Provider
// before anything is written.
func (c *call) putAPIKey(slug, user, org string, secret []byte, check func(*pipesv1.Provider) error) (*pipesv1.Provider, *pipesv1.ConnectedAccount, credential.Stored, error) {
	var stored credential.Stored
	if errs := validation.APIKey(field.NewPath(fieldSecret), secret); len(errs) > 0 {
		return nil, nil, stored, errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "%s", validation.Message(errs))
	}
	found, err := c.account(slug, user, org)
	if err != nil {
		return nil, nil, stored, err
	}
	verb := "update"
	if found == nil {
		verb = "create"
	}
	if err := c.authorize(verb, accounts, accountName(found, slug, user, org)); err != nil {
		return nil, nil, stored, err
	}
	p, err := c.provider(slug)
	if err != nil {
		return nil, nil, stored, err
	}
	if p.Spec.Method != pipesv1.AuthMethodAPIKey {
		return nil, nil, stored, errorf(http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch, "%s", validation.APIKeyForOAuthProvider(slug))
	}
	if check != nil {
		if err := check(p); err != nil {
			return nil, nil, stored, err
		}
	}
	ca, err := c.targetAccount(found, slug, user, org)
	if err != nil {
		return nil, nil, stored, err
	}
	c.auditAccount = ca.Name
	stored, err = c.s.storeCredential(c.ctx, ca, "API key", secret, func(version int64) credential.Stored {
		return credential.Stored{Version: version, Last4: validation.Last4(secret)}
	})
	return p, ca, stored, err
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
	case ca.Spec.APIKey != nil && ca.Spec.APIKey.SecretKeyRef != nil:
		return errorf(http.StatusConflict, wire.CodeConflict,
			"the key of ConnectedAccount %q comes from Secret %q (spec.apiKey.secretKeyRef): update that Secret, or remove spec.apiKey to manage the key through this API",
			ca.Name, ca.Spec.APIKey.SecretKeyRef.Name)
	case ca.Spec.APIKey != nil:
		return errorf(http.StatusConflict, wire.CodeConflict,
			"the key of ConnectedAccount %q is sealed in its spec.apiKey.sealed (GitOps): reseal the new key with kubectl pipes seal and commit it, or remove spec.apiKey to manage the key through this API",
			ca.Name)
	}
	return nil
}

const cacheWaitTime = 5 * time.Second

// storeCredential seals plaintext (an API key, an OAuth token) into the account's Secret,
// replacing what is stored (version + 1, described by describe) unless it is the same,
// and returns once this replica's cache shows the write, so a vend that follows sees it.
func (s *Server) storeCredential(ctx context.Context, ca *pipesv1.ConnectedAccount, what string, key []byte, describe func(version int64) credential.Stored) (credential.Stored, error) {
	var stored credential.Stored
	var notOwned string // why the last attempt found the Secret's name taken
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 20 * time.Millisecond, Factor: 2, Steps: 6}, func(ctx context.Context) (bool, error) {
		existing, err := s.Store.GetCurrent(ctx, ca)
		if errors.Is(err, credential.ErrCacheBehind) {
			return false, nil // this replica's own last write is not in its cache yet; read again
		}
		if errors.Is(err, credential.ErrNotOwned) {
			// Usually the Secret of a disconnected account of the same name, still in the
			// cache while it is deleted; read again.
			notOwned = err.Error()
			return false, nil
		}
		if err != nil {
			return false, err
		}
		next := describe(credential.NextVersion(ca, nil))
		if existing != nil {
			prev := credential.Describe(existing)
			if plain, err := s.Store.Open(ca, existing); err == nil && bytes.Equal(plain, key) && prev.NeedsReauthorization.IsZero() {
				clear(plain)
				stored = prev // the same key again: nothing to rotate
				return true, nil
			}
			next = describe(credential.NextVersion(ca, &prev))
		}
		stored, err = s.Store.Put(ctx, ca, existing, key, next)
		switch {
		case apierrors.IsAlreadyExists(err):
			// The cache was behind, or a Secret it does not hold (not ours) has the name.
			notOwned = fmt.Sprintf("Secret %s/%s already exists and is not ConnectedAccount %s's credential Secret; delete or rename that Secret", ca.Namespace, credential.SecretName(ca), ca.Name)
			return false, nil
		case apierrors.IsConflict(err):
			return false, nil // the cache was behind; read again
		case err != nil:
			return false, err
		}
		credential.RecordStored(s.Recorder, ca, what, stored, existing != nil, " through the backend API")
		return true, nil
	})
	if wait.Interrupted(err) && notOwned != "" {
		return stored, errorf(http.StatusConflict, wire.CodeConflict, "%s", notOwned)
	}
	if err != nil {
		return stored, err
	}
	// Read-your-writes on this replica: the Secret and the account (a new one may reach
	// the cache after its Secret: a vend then would find no account).
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, cacheWaitTime, true, func(ctx context.Context) (bool, error) {
		got, err := s.Store.Get(ctx, ca)
		if err != nil || got == nil || credential.Describe(got).Version < stored.Version {
			return false, err
		}
		cached, err := credential.FindAccount(ctx, s.Client, ca.Namespace, ca.Spec.ProviderRef.Name, ca.Spec.UserID, ca.Spec.OrganizationID)
		return cached != nil && cached.UID == ca.UID, err
	})
	return stored, err
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
			// Whole seconds, as created_at and the hosted API: the annotation has more.
			v.UpdatedAt = stored.RotatedAt.UTC().Truncate(time.Second)
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
	return c.userAccountOf(verb, c.r.PathValue("slug"), c.r.PathValue("user_id"), c.r.URL.Query().Get("organization_id"))
}

// userAccountOf resolves the account of (slug, user, org) and authorizes verb on it; a
// missing account is a 404 once the caller may do verb on it.
func (c *call) userAccountOf(verb, slug, user, org string) (*pipesv1.Provider, *pipesv1.ConnectedAccount, error) {
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
	return c.respond(accountView(ca, p, stored))
}

// disconnect deletes the account; the reconciler then removes the stored credential.
func (s *Server) disconnect(c *call) error {
	p, ca, err := c.userAccount("delete")
	if err != nil {
		return err
	}
	return c.deleteAccount(p, ca)
}

// deleteAccount deletes ca (answering 204), unless it is declared in Git; an OAuth
// token is revoked at the provider first where it can be.
func (c *call) deleteAccount(p *pipesv1.Provider, ca *pipesv1.ConnectedAccount) error {
	if ca.Spec.APIKey != nil {
		return errorf(http.StatusConflict, wire.CodeConflict,
			"ConnectedAccount %q is declared with spec.apiKey (GitOps): delete it where it is declared", ca.Name)
	}
	c.revokeOnDisconnect(p, ca)
	if err := c.s.Client.Delete(c.ctx, ca, client.Preconditions{UID: &ca.UID}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	c.result = "ok"
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
