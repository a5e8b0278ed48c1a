// Package oauth owns the client side of OAuth 2.0 providers: a Provider's client for one
// organization (whose client ID and secret, which scopes, PKCE, how it authenticates), the
// authorization in progress (its state, kept encrypted in a short-lived Secret every
// replica sees and spent once), the token as stored encrypted in the account's credential
// Secret, and refreshing it once across replicas. The HTTP side of OAuth is
// golang.org/x/oauth2's.
package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// ErrNotConfigured means the organization must bring its own OAuth client first
// (credentialsMode Organization), or the client secret cannot be read.
var ErrNotConfigured = errors.New("the OAuth client is not configured")

// ErrInvalidGrant means the provider refused the refresh token (revoked, expired, or spent):
// only the user can fix it, by connecting again.
var ErrInvalidGrant = errors.New("the provider refused the refresh token (invalid_grant): the user must connect again")

// Client is a Provider's OAuth client for one organization.
type Client struct {
	Provider string
	// Scopes are the scopes requested: the Provider's, narrowed by the organization.
	Scopes    []string
	config    oauth2.Config
	refresh   oauth2.Config
	pkce      bool
	params    []oauth2.AuthCodeOption
	separator string
	revoke    string
	http      *http.Client
}

// HTTPTimeout bounds every request to a provider.
const HTTPTimeout = 15 * time.Second

// NewClient builds p's client for the organization whose settings are op (nil: none),
// with the client secret read through r (the API server: client secrets are the
// application's own Secrets, opted in with the credential-source label like API key
// sources), redirecting to callbackURL.
func NewClient(ctx context.Context, r client.Reader, p *pipesv1.Provider, op *pipesv1.OrganizationProvider, callbackURL string, h *http.Client) (*Client, error) {
	o := p.Spec.OAuth
	if p.Spec.Method != pipesv1.AuthMethodOAuth || o == nil {
		return nil, fmt.Errorf("provider %q does not use OAuth", p.Name)
	}
	clientID, secretRef := o.ClientID, o.ClientSecretRef
	if o.CredentialsMode == pipesv1.OAuthCredentialsOrganization {
		if op == nil || op.Spec.Credentials == nil {
			return nil, fmt.Errorf("%w: Provider %q uses each organization's own OAuth client, and this organization has not set one: set spec.credentials on its OrganizationProvider", ErrNotConfigured, p.Name)
		}
		clientID, secretRef = op.Spec.Credentials.ClientID, &op.Spec.Credentials.ClientSecretRef
	}
	secret := ""
	if secretRef != nil {
		var err error
		if secret, err = readClientSecret(ctx, r, p.Namespace, *secretRef); err != nil {
			return nil, err
		}
	}
	scopes := RequestedScopes(p, op)
	style := oauth2.AuthStyleInHeader
	if o.ClientAuthentication == pipesv1.OAuthClientAuthBody {
		style = oauth2.AuthStyleInParams
	}
	c := &Client{
		Provider: p.Name, Scopes: scopes, pkce: o.PKCE == nil || *o.PKCE, separator: o.ScopeSeparator, revoke: o.RevocationURL,
		config: oauth2.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: callbackURL,
			Endpoint: oauth2.Endpoint{AuthURL: o.AuthorizationURL, TokenURL: o.TokenURL, AuthStyle: style}},
		http: h,
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: HTTPTimeout}
	}
	if c.separator == "" {
		c.separator = " "
	}
	c.refresh = c.config
	if o.RefreshURL != "" {
		c.refresh.Endpoint.TokenURL = o.RefreshURL
	}
	keys := make([]string, 0, len(o.AuthorizationParams))
	for k := range o.AuthorizationParams {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		c.params = append(c.params, oauth2.SetAuthURLParam(k, o.AuthorizationParams[k]))
	}
	return c, nil
}

// RequestedScopes are the scopes p's flow asks for in the organization whose settings
// are op (nil: none): the Provider's, narrowed by the organization's.
func RequestedScopes(p *pipesv1.Provider, op *pipesv1.OrganizationProvider) []string {
	if p.Spec.OAuth == nil {
		return []string{}
	}
	all := p.Spec.OAuth.Scopes
	if op == nil || len(op.Spec.Scopes) == 0 {
		return append([]string{}, all...)
	}
	// Narrowing only: the webhook refuses wider sets; a Provider narrowed later is
	// honoured here too.
	return slices.DeleteFunc(slices.Clone(op.Spec.Scopes), func(s string) bool { return !slices.Contains(all, s) })
}

// NewHTTPClient is the client for providers' endpoints: the system's CA roots plus, when
// caFile is set (--provider-ca-file), the CAs in that PEM file, for providers behind a
// private CA (a self-hosted GitLab, a test server).
func NewHTTPClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return &http.Client{Timeout: HTTPTimeout}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--provider-ca-file: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--provider-ca-file %s holds no PEM certificate", caFile)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: HTTPTimeout, Transport: t}, nil
}

// NewVerifier makes a PKCE code verifier (RFC 7636).
func NewVerifier() string { return oauth2.GenerateVerifier() }

func readClientSecret(ctx context.Context, r client.Reader, namespace string, ref pipesv1.SecretKeyReference) (string, error) {
	var s corev1.Secret
	err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, &s)
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("%w: the client secret's Secret %s/%s does not exist", ErrNotConfigured, namespace, ref.Name)
	case err != nil:
		return "", err
	case s.Labels[pipesv1.LabelCredentialSource] != pipesv1.CredentialSourceValue:
		return "", fmt.Errorf("%w: Secret %s/%s is not opted in as a credential source: label it %s=%s", ErrNotConfigured, namespace, ref.Name, pipesv1.LabelCredentialSource, pipesv1.CredentialSourceValue)
	}
	v, ok := s.Data[ref.Key]
	if !ok || len(v) == 0 {
		return "", fmt.Errorf("%w: Secret %s/%s has no key %q", ErrNotConfigured, namespace, ref.Name, ref.Key)
	}
	return string(v), nil
}

// AuthCodeURL is where the user is sent to grant access, bound to state and, with PKCE,
// to verifier's S256 challenge.
func (c *Client) AuthCodeURL(state, verifier string) string {
	opts := slices.Clone(c.params)
	if c.pkce {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	cfg := c.config
	if len(c.Scopes) > 0 {
		// Joined here: some providers separate scopes with commas.
		opts = append(opts, oauth2.SetAuthURLParam("scope", strings.Join(c.Scopes, c.separator)))
	}
	return cfg.AuthCodeURL(state, opts...)
}

func (c *Client) context(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.http)
}

// Exchange trades an authorization code (and, with PKCE, its verifier) for a token.
func (c *Client) Exchange(ctx context.Context, code, verifier string) (*Token, error) {
	var opts []oauth2.AuthCodeOption
	if c.pkce {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	t, err := c.config.Exchange(c.context(ctx), code, opts...)
	if err != nil {
		return nil, describe(err)
	}
	return fromOAuth2(t, c.Scopes, nil), nil
}

// Refresh trades t's refresh token for a new token. A refusal of the grant is
// ErrInvalidGrant; anything else (timeouts, 5xx, 429) is transient.
func (c *Client) Refresh(ctx context.Context, t *Token) (*Token, error) {
	if t.RefreshToken == "" {
		return nil, fmt.Errorf("%w (there is no refresh token)", ErrInvalidGrant)
	}
	next, err := c.refresh.TokenSource(c.context(ctx), &oauth2.Token{RefreshToken: t.RefreshToken}).Token()
	if err != nil {
		return nil, describe(err)
	}
	return fromOAuth2(next, c.Scopes, t), nil
}

// CanRevoke reports whether the provider has a revocation endpoint.
func (c *Client) CanRevoke() bool { return c.revoke != "" }

// Revoke asks the provider to revoke token (RFC 7009), authenticating as the client does
// at the token endpoint. Providers answer 200 for tokens they do not know.
func (c *Client) Revoke(ctx context.Context, token, hint string) error {
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	if c.config.Endpoint.AuthStyle == oauth2.AuthStyleInParams {
		form.Set("client_id", c.config.ClientID)
		form.Set("client_secret", c.config.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.revoke, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.config.Endpoint.AuthStyle != oauth2.AuthStyleInParams {
		req.SetBasicAuth(url.QueryEscape(c.config.ClientID), url.QueryEscape(c.config.ClientSecret))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &ProviderError{Cause: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &ProviderError{Status: resp.StatusCode}
	}
	return nil
}

// describe turns an oauth2 error into one that never quotes the provider's body (which
// may echo a token) and tells a refused grant apart.
func describe(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode == "invalid_grant" {
			return ErrInvalidGrant
		}
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if re.ErrorCode != "" {
			return &ProviderError{Status: status, Code: re.ErrorCode}
		}
		return &ProviderError{Status: status}
	}
	return &ProviderError{Cause: err}
}

// ProviderError is a failed request to the provider's token endpoint: its status and
// OAuth error code, or the transport error.
type ProviderError struct {
	Status int
	Code   string
	Cause  error
}

func (e *ProviderError) Error() string {
	switch {
	case e.Cause != nil:
		return "the provider's token endpoint did not answer: " + e.Cause.Error()
	case e.Code != "":
		return fmt.Sprintf("the provider's token endpoint answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("the provider's token endpoint answered %d", e.Status)
}

func (e *ProviderError) Unwrap() error { return e.Cause }
