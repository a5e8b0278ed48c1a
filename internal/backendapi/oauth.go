package backendapi

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/oauth"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// OAuthFlow runs OAuth providers' flows: the authorization's state, the callback URL
// browsers come back to, and the refresh of stored tokens.
type OAuthFlow struct {
	States    *oauth.States
	Refresher *oauth.Refresher
	// CallbackURL is the public listener's OAuthCallbackPath as browsers reach it
	// (--public-url): the redirect URI registered with providers.
	CallbackURL func() string
	// HTTP calls providers (oauth.NewHTTPClient); nil: the default.
	HTTP *http.Client
}

// oauthClient builds p's client for org, answering what keeps it from being built.
func (c *call) oauthClient(p *pipesv1.Provider, org string) (*oauth.Client, error) {
	return c.s.oauthClient(c.ctx, c.namespace, p, org)
}

// oauthClient builds p's client for org with ctx (which may outlive a request: a
// background refresh).
func (s *Server) oauthClient(ctx context.Context, namespace string, p *pipesv1.Provider, org string) (*oauth.Client, error) {
	var op *pipesv1.OrganizationProvider
	if org != "" {
		var err error
		if op, err = credential.FindOrganizationProvider(ctx, s.Client, namespace, p.Name, org); err != nil {
			return nil, err
		}
	}
	cl, err := oauth.NewClient(ctx, s.APIReader, p, op, s.OAuth.CallbackURL(), s.OAuth.HTTP)
	if errors.Is(err, oauth.ErrNotConfigured) {
		return nil, errorf(http.StatusConflict, wire.CodeNotConfigured, "%s", err)
	}
	return cl, err
}

// RefreshAhead refreshes ca's token stored in secret now, ahead of its expiry: the
// leader's reconciler calls it. A refused refresh token is recorded on the Secret (whose
// event brings the account's status along), not returned.
func (s *Server) RefreshAhead(ctx context.Context, ca *pipesv1.ConnectedAccount, secret *corev1.Secret) error {
	if s.OAuth == nil {
		return nil
	}
	avail, err := credential.CheckAvailability(ctx, s.Client, ca.Namespace, ca.Spec.ProviderRef.Name, ca.Spec.OrganizationID)
	if err != nil || avail.Provider == nil {
		return err
	}
	_, _, err = s.OAuth.Refresher.Current(ctx, ca, secret, func(ctx context.Context) (*oauth.Client, error) {
		return s.oauthClient(ctx, ca.Namespace, avail.Provider, ca.Spec.OrganizationID)
	}, true)
	if errors.Is(err, oauth.ErrNeedsReauthorization) {
		return nil
	}
	return err
}

func (s *Server) oauthAvailable() error {
	if s.OAuth == nil {
		return errorf(http.StatusNotImplemented, wire.CodeNotImplemented, "OAuth is off on this operator: it needs the public listener (--public-bind-address) and its URL (--public-url)")
	}
	return nil
}

// authorizeOAuth answers POST /data-integrations/{slug}/authorize: the URL to send the
// user to. The caller must be allowed to connect that user's account (create or update).
func (s *Server) authorizeOAuth(c *call) error {
	var req wire.AuthorizeRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := identityErrors(req.UserID, req.OrganizationID); err != nil {
		return err
	}
	slug := c.r.PathValue("slug")
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
	u, err := c.beginOAuth(slug, req.UserID, req.OrganizationID, req.ReturnTo)
	if err != nil {
		return err
	}
	return c.respond(wire.AuthorizeResponse{URL: u})
}

// beginOAuth records an authorization of (slug, user, org) and returns the provider's URL
// to send the user to; the caller has authorized the connection.
func (c *call) beginOAuth(slug, user, org, returnTo string) (string, error) {
	if err := c.s.oauthAvailable(); err != nil {
		return "", err
	}
	p, err := c.provider(slug)
	if err != nil {
		return "", err
	}
	if p.Spec.Method != pipesv1.AuthMethodOAuth || p.Spec.OAuth == nil {
		return "", errorf(http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch, "data integration %q uses API keys: set the user's key with PUT /data-integrations/%s/api-key", slug, slug)
	}
	if returnTo != "" && !slices.Contains(p.Spec.OAuth.ReturnURLs, returnTo) {
		return "", errorf(http.StatusBadRequest, wire.CodeInvalidRequest,
			"return_to: %q is not one of Provider %q's spec.oauth.returnURLs (compared exactly); add it there, or leave return_to out", returnTo, slug)
	}
	avail, err := credential.CheckAvailability(c.ctx, c.s.Client, c.namespace, slug, org)
	if err != nil {
		return "", err
	}
	if !avail.Available() {
		return "", errorf(http.StatusConflict, wire.CodeProviderDisabled, "%s", avail.Message)
	}
	cl, err := c.oauthClient(p, org)
	if err != nil {
		return "", err
	}
	pending := oauth.Pending{Namespace: c.namespace, Provider: slug, UserID: user, OrganizationID: org, ReturnTo: returnTo, Scopes: cl.Scopes}
	pending.Verifier = oauth.NewVerifier()
	state, err := c.s.OAuth.States.Begin(c.ctx, pending)
	if err != nil {
		return "", err
	}
	c.auditAccount = accountName(nil, slug, user, org)
	return cl.AuthCodeURL(state, pending.Verifier), nil
}

// OAuthCallbackHandler serves wire.OAuthCallbackPath on the public listener: the
// provider sends the user's browser there with the code (or an error) and the state.
// It spends the state, exchanges the code, stores the token encrypted like an API key,
// and sends the browser to return_to with status=connected, or status=error and an
// error code. Without a usable return_to the flow ends on a plain page.
func (s *Server) OAuthCallbackHandler() http.Handler {
	s.init()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		result, account := "", ""
		defer func() {
			s.Log.Info("audit", "action", "oauth_callback", "account", account, "result", result, "duration", time.Since(start).String())
			requestsTotal.WithLabelValues("oauth_callback", resultLabel(result)).Inc()
		}()
		if r.Method != http.MethodGet {
			result = wire.CodeInvalidRequest
			http.Error(w, "the OAuth callback takes GET", http.StatusMethodNotAllowed)
			return
		}
		if delay := s.sources.take(time.Now(), remoteIP(r)); delay > 0 {
			result = wire.CodeRateLimited
			w.Header().Set("Retry-After", fmt.Sprint(int(delay.Seconds())+1))
			endPage(w, http.StatusTooManyRequests, "Too many attempts", "Wait a moment, then start again from the application.")
			return
		}
		if s.OAuth == nil {
			result = wire.CodeNotImplemented
			endPage(w, http.StatusNotFound, "OAuth is off", "This operator does not run OAuth flows.")
			return
		}
		q := r.URL.Query()
		pending, err := s.OAuth.States.Take(r.Context(), q.Get("state"))
		switch {
		case errors.Is(err, oauth.ErrStateUnknown):
			result = wire.OAuthStateInvalid
			endPage(w, http.StatusBadRequest, "This link has already been used or is not valid", oauth.ErrStateUnknown.Error())
			return
		case errors.Is(err, oauth.ErrStateExpired):
			result = wire.OAuthStateExpired
			finish(w, r, pending, wire.OAuthStateExpired, oauth.ErrStateExpired.Error())
			return
		case err != nil:
			result = wire.CodeInternal
			s.Log.Error(err, "OAuth callback: reading the authorization")
			endPage(w, http.StatusServiceUnavailable, "Please try again", "The connection could not be completed; start again from the application.")
			return
		}
		account = accountName(nil, pending.Provider, pending.UserID, pending.OrganizationID)
		if e := q.Get("error"); e != "" {
			result = providerErrorCode(e)
			s.Log.Info("OAuth callback: the provider ended the authorization with an error", "account", account, "error", oauthErrorToken(e))
			finish(w, r, pending, result, s.providerErrorMessage(e))
			return
		}
		if err := s.completeOAuth(r, pending, q.Get("code")); err != nil {
			var ae *apiError
			code, message := wire.OAuthStoreFailed, "The connection could not be stored; start again from the application."
			switch {
			case errors.As(err, &ae) && ae.code == wire.OAuthExchangeFailed:
				code, message = wire.OAuthExchangeFailed, err.Error()
			case errors.As(err, &ae):
				message = err.Error() // the operator's own explanation (not configured, disabled…)
			default:
				s.Log.Error(err, "OAuth callback: storing the token", "account", account) // the page says no more
			}
			result = code
			finish(w, r, pending, code, message)
			return
		}
		result = "ok"
		finish(w, r, pending, "", "")
	})
}

// providerErrorCode is the code a callback carrying the provider's error e ends with.
func providerErrorCode(e string) string {
	switch e {
	case wire.OAuthDenied:
		return wire.OAuthDenied
	case wire.OAuthRedirectMismatch:
		return wire.OAuthRedirectMismatch
	}
	return wire.OAuthProviderError
}

// providerErrorMessage explains the provider's error e on the page a flow ends on.
func (s *Server) providerErrorMessage(e string) string {
	switch providerErrorCode(e) {
	case wire.OAuthDenied:
		return "Access was not granted at the provider."
	case wire.OAuthRedirectMismatch:
		return "The provider does not accept this operator's callback URL " + s.OAuth.CallbackURL() + ": an administrator must register it with the provider's OAuth app."
	}
	return "The provider ended the authorization with the error " + strconv.Quote(oauthErrorToken(e)) + "."
}

// oauthErrorToken is e if it is an RFC 6749 error code (printable ASCII without " and \,
// at most 64 characters), otherwise "invalid": what the provider sent is neither
// echoed into pages and logs nor trusted.
func oauthErrorToken(e string) string {
	if len(e) > 64 {
		return "invalid"
	}
	for _, c := range []byte(e) {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return "invalid"
		}
	}
	return e
}

// completeOAuth exchanges code for a token and stores it in the account of pending,
// creating the account when needed: the authorization was checked when the flow began.
func (s *Server) completeOAuth(r *http.Request, pending *oauth.Pending, code string) error {
	c := &call{r: r, ctx: r.Context(), s: s, namespace: pending.Namespace,
		// The caller that began the flow was authorized for this user's account; the
		// callback acts for that user alone, as a widget session does.
		session: &widgettoken.Claims{Namespace: pending.Namespace, UserID: pending.UserID, OrganizationID: pending.OrganizationID},
		id:      &Identity{User: authnv1.UserInfo{Username: "oauth-callback"}, Namespace: pending.Namespace}}
	p, err := c.provider(pending.Provider)
	if err != nil {
		return err
	}
	cl, err := c.oauthClient(p, pending.OrganizationID)
	if err != nil {
		return err
	}
	if code == "" {
		return errorf(http.StatusBadRequest, wire.OAuthExchangeFailed, "the provider sent no authorization code")
	}
	token, err := cl.Exchange(c.ctx, code, pending.Verifier)
	if err != nil {
		return errorf(http.StatusBadGateway, wire.OAuthExchangeFailed, "the provider did not exchange the code: %s", err)
	}
	found, err := c.account(pending.Provider, pending.UserID, pending.OrganizationID)
	if err != nil {
		return err
	}
	ca, err := c.targetAccount(found, pending.Provider, pending.UserID, pending.OrganizationID)
	if err != nil {
		return err
	}
	plain := token.Marshal()
	defer clear(plain)
	_, err = s.storeCredential(c.ctx, ca, "OAuth token", plain, func(version int64) credential.Stored {
		return credential.Stored{Version: version, TokenExpiry: token.Expiry}
	})
	return err
}

// finish sends the browser back to pending's return_to with the outcome, or shows it.
func finish(w http.ResponseWriter, r *http.Request, pending *oauth.Pending, code, message string) {
	if pending != nil && pending.ReturnTo != "" {
		u, err := url.Parse(pending.ReturnTo)
		if err == nil {
			q := u.Query()
			q.Set("provider", pending.Provider)
			if code == "" {
				q.Set("status", wire.OAuthStatusConnected)
			} else {
				q.Set("status", "error")
				q.Set("error", code)
				if pe := r.URL.Query().Get("error"); code == wire.OAuthProviderError {
					q.Set("provider_error", oauthErrorToken(pe))
				}
			}
			u.RawQuery = q.Encode()
			// return_to came from the state, where only one of the Provider's
			// spec.oauth.returnURLs (compared exactly) could be put.
			http.Redirect(w, r, u.String(), http.StatusSeeOther) //nolint:gosec // G710: an allow-listed URL, see above
			return
		}
	}
	if code == "" {
		endPage(w, http.StatusOK, "Connected", "You can close this window and return to the application.")
		return
	}
	endPage(w, http.StatusBadRequest, "The connection was not completed", message)
}

var endTemplate = template.Must(template.New("end").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title></head>
<body><main><h1>{{.Title}}</h1><p>{{.Message}}</p></main></body></html>
`))

// endPage is the plain page a flow ends on without a return_to: no script, nothing to leak.
func endPage(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = endTemplate.Execute(w, struct{ Title, Message string }{title, message})
}

// vendOAuth answers with the account's access token, refreshed first when it expires soon.
// avail is the account's availability, already checked: its OrganizationProvider narrows
// the scopes missing_scopes is computed against.
func (s *Server) vendOAuth(c *call, p *pipesv1.Provider, ca *pipesv1.ConnectedAccount, avail credential.Availability) (wire.CredentialsResponse, string, time.Time, error) {
	origin := string(ca.UID)
	notInstalled := wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}
	if err := s.oauthAvailable(); err != nil {
		return notInstalled, origin, time.Time{}, err
	}
	secret, err := s.Store.Get(c.ctx, ca)
	if err != nil || secret == nil {
		c.result = wire.ErrorNotInstalled
		return notInstalled, origin, time.Time{}, err
	}
	origin += "/" + string(secret.UID) + "/" + secret.ResourceVersion
	token, stored, err := s.OAuth.Refresher.Current(c.ctx, ca, secret, func(ctx context.Context) (*oauth.Client, error) {
		return s.oauthClient(ctx, c.namespace, p, ca.Spec.OrganizationID)
	}, false)
	switch {
	case errors.Is(err, oauth.ErrNeedsReauthorization):
		c.result = wire.ErrorNeedsReauthorization
		return wire.CredentialsResponse{Active: false, Error: wire.ErrorNeedsReauthorization}, origin, time.Time{}, nil
	case err != nil && isAPIError(err):
		return notInstalled, origin, time.Time{}, err
	case err != nil:
		var retry *oauth.RetryError
		if errors.As(err, &retry) {
			e := errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "the access token expired and %s; retry then", retry)
			e.header = http.Header{"Retry-After": {strconv.Itoa(max(1, int(math.Ceil(time.Until(retry.At).Seconds()))))}}
			return notInstalled, origin, time.Time{}, e
		}
		var pe *oauth.ProviderError
		if errors.As(err, &pe) {
			e := errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "the access token expired and %s; retry shortly", pe)
			e.header = http.Header{"Retry-After": {"5"}}
			return notInstalled, origin, time.Time{}, e
		}
		return notInstalled, origin, time.Time{}, err
	}
	c.result = "ok"
	cred := &wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodOAuth, Value: token.AccessToken, Version: stored.Version,
		Scopes: token.Scopes, MissingScopes: token.MissingScopes(oauth.RequestedScopes(p, avail.Organization))}
	if !token.Expiry.IsZero() {
		expiry := token.Expiry.UTC()
		cred.ExpiresAt = &expiry
	}
	return wire.CredentialsResponse{Active: true, Credential: cred}, origin, stored.RotatedAt, nil
}

// importConnectedAccount answers POST /user_management/users/{user_id}/connected_accounts/{slug}:
// an OAuth account with tokens obtained elsewhere, with the hosted product's rules: no
// tokens, needs reauthorization; an access token (with an expiry only if there is a
// refresh token too), connected; 409 when the account exists.
func (s *Server) importConnectedAccount(c *call) error {
	var req wire.ImportConnectedAccountRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	slug, user := c.r.PathValue("slug"), c.r.PathValue("user_id")
	if err := identityErrors(user, req.OrganizationID); err != nil {
		return err
	}
	switch {
	case req.ExpiresAt != nil && req.AccessToken == "":
		return errorf(http.StatusUnprocessableEntity, wire.CodeInvalidRequest, "expires_at: an expiry needs the access_token it belongs to")
	case req.ExpiresAt != nil && req.RefreshToken == "":
		return errorf(http.StatusUnprocessableEntity, wire.CodeInvalidRequest, "expires_at: a token that expires needs a refresh_token to be renewed; send one, or leave expires_at out for a token that does not expire")
	}
	found, err := c.account(slug, user, req.OrganizationID)
	if err != nil {
		return err
	}
	if err := c.authorize("create", accounts, accountName(found, slug, user, req.OrganizationID)); err != nil {
		return err
	}
	p, err := c.provider(slug)
	if err != nil {
		return err
	}
	if p.Spec.Method != pipesv1.AuthMethodOAuth {
		return errorf(http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch, "data integration %q uses API keys: set the user's key with PUT /data-integrations/%s/api-key", slug, slug)
	}
	exists := func(name string) error {
		return errorf(http.StatusConflict, wire.CodeConflict, "user %q already has a connected account for %q%s (ConnectedAccount %q): disconnect it first to import other tokens", user, slug, credential.InOrganization(req.OrganizationID), name)
	}
	if found != nil {
		return exists(found.Name)
	}
	ca := &pipesv1.ConnectedAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: accountName(nil, slug, user, req.OrganizationID)},
		Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: slug}, UserID: user, OrganizationID: req.OrganizationID},
	}
	if err := c.s.Client.Create(c.ctx, ca); apierrors.IsAlreadyExists(err) {
		return exists(ca.Name) // the cache did not show it yet, or someone else made it
	} else if err != nil {
		return err
	}
	c.auditAccount = ca.Name
	token := &oauth.Token{AccessToken: req.AccessToken, RefreshToken: req.RefreshToken, TokenType: "Bearer", Scopes: req.Scopes}
	if token.Scopes == nil {
		token.Scopes = []string{}
	}
	if req.ExpiresAt != nil {
		token.Expiry = req.ExpiresAt.UTC()
	}
	plain := token.Marshal()
	defer clear(plain)
	stored, err := s.storeCredential(c.ctx, ca, "OAuth token", plain, func(version int64) credential.Stored {
		d := credential.Stored{Version: version, TokenExpiry: token.Expiry}
		if req.AccessToken == "" {
			d.NeedsReauthorization = time.Now() // nothing to vend until the user connects
		}
		return d
	})
	if err != nil {
		return err
	}
	v := accountView(ca, p, &stored)
	v.Scopes = token.Scopes
	if req.AccessToken == "" {
		v.State = string(pipesv1.StateNeedsReauthorization)
	}
	return c.respond(v)
}

// revokeOnDisconnect revokes ca's refresh token (or its access token, without one) at the
// provider before the account goes, when the provider has a revocation endpoint. Best
// effort: the stored token is removed whatever the provider answers.
func (c *call) revokeOnDisconnect(p *pipesv1.Provider, ca *pipesv1.ConnectedAccount) {
	if c.s.OAuth == nil || p.Spec.Method != pipesv1.AuthMethodOAuth || p.Spec.OAuth == nil || p.Spec.OAuth.RevocationURL == "" {
		return
	}
	secret, err := c.s.Store.Get(c.ctx, ca)
	if err != nil || secret == nil {
		return
	}
	token, err := c.s.OAuth.Refresher.Open(ca, secret)
	if err != nil {
		return
	}
	cl, err := c.oauthClient(p, ca.Spec.OrganizationID)
	if err != nil {
		return
	}
	value, hint := token.RefreshToken, "refresh_token"
	if value == "" {
		value, hint = token.AccessToken, "access_token"
	}
	if err := cl.Revoke(c.ctx, value, hint); err != nil {
		c.s.Log.Info("revoking the token at the provider on disconnect failed; the stored token is removed anyway", "account", ca.Name, "error", err.Error())
	}
}
