// Package wire holds the JSON shapes of the backend API, which follow the hosted Pipes
// API so an existing backend can switch by changing its base URL and key. It has no
// dependencies beyond the standard library, so the vend sidecar stays small.
package wire

import "time"

// Audience is the audience of the ServiceAccount tokens the backend API accepts: the
// vend sidecar's projected token and `kubectl pipes`' TokenRequest ask for it. With
// --api-require-audience (the default) it is the only one accepted; without, tokens for
// the API server's own audiences are accepted too. Here, not in package backendapi, so
// clients need not link the server.
const Audience = "pipes.dev"

// Auth methods as the hosted API names them.
const (
	AuthMethodAPIKey = "api_key"
	AuthMethodOAuth  = "oauth"
)

// Errors returned in CredentialsResponse.Error.
const (
	ErrorNotInstalled         = "not_installed"
	ErrorNeedsReauthorization = "needs_reauthorization"
)

// Error codes of ErrorResponse.
const (
	CodeInvalidRequest     = "invalid_request"
	CodeUnauthorized       = "unauthorized"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeConflict           = "conflict"
	CodeAuthMethodMismatch = "auth_method_mismatch"
	CodeRequestTooLarge    = "request_too_large"
	CodeRateLimited        = "rate_limited"
	CodeNotImplemented     = "not_implemented"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal_error"
	// CodeSessionExpired is a widget token past its expiry: mint a new one.
	CodeSessionExpired = "session_expired"
	// CodeProviderDisabled is a provider the session's organization has not enabled.
	CodeProviderDisabled = "provider_disabled"
)

// ErrorResponse is every non-2xx body: a machine-readable code and a message that says what to fix.
type ErrorResponse struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// UpsertAPIKeyRequest is the body of PUT /data-integrations/{slug}/api-key.
type UpsertAPIKeyRequest struct {
	UserID         string `json:"user_id"`
	Secret         string `json:"secret"`
	OrganizationID string `json:"organization_id,omitempty"`
}

// ConnectedAccount is a user's connection, as the hosted API shows it. It never holds the credential.
type ConnectedAccount struct {
	Object         string    `json:"object"` // "connected_account"
	ID             string    `json:"id"`
	UserID         string    `json:"user_id"`
	OrganizationID *string   `json:"organization_id"`
	Scopes         []string  `json:"scopes"`
	State          string    `json:"state"`
	AuthMethod     string    `json:"auth_method"`
	APIKeyLast4    string    `json:"api_key_last_4,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// CredentialsRequest is the body of POST /data-integrations/{slug}/credentials and /token.
type CredentialsRequest struct {
	UserID         string `json:"user_id"`
	OrganizationID string `json:"organization_id,omitempty"`
}

// CredentialsResponse is {active:true, credential} or {active:false, error}.
type CredentialsResponse struct {
	Active     bool        `json:"active"`
	Credential *Credential `json:"credential,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// Credential is a vended credential.
type Credential struct {
	Object     string `json:"object"` // "credential"
	AuthMethod string `json:"auth_method"`
	Value      string `json:"value"`
	// Version increases each time the stored credential is replaced (an extension of
	// the hosted shape, used by the vend sidecar to notice rotations).
	Version int64 `json:"version,omitempty"`
	// ExpiresAt is when an OAuth access token expires (absent for API keys and tokens
	// that do not expire).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Scopes are the scopes an OAuth token was granted; MissingScopes those requested
	// (the Provider's, narrowed by the organization) that were not.
	Scopes        []string `json:"scopes,omitempty"`
	MissingScopes []string `json:"missing_scopes,omitempty"`
}

// AuthorizeRequest is the body of POST /data-integrations/{slug}/authorize.
type AuthorizeRequest struct {
	UserID         string `json:"user_id"`
	OrganizationID string `json:"organization_id,omitempty"`
	// ReturnTo is where the user's browser goes once the flow ends; it must be one of
	// the Provider's spec.oauth.returnURLs.
	ReturnTo string `json:"return_to,omitempty"`
}

// ImportConnectedAccountRequest is the body of POST
// /user_management/users/{user_id}/connected_accounts/{slug}: tokens obtained elsewhere
// (a migration). Without tokens the account needs reauthorization; an expiry needs both
// an access token and a refresh token.
type ImportConnectedAccountRequest struct {
	OrganizationID string     `json:"organization_id,omitempty"`
	AccessToken    string     `json:"access_token,omitempty"`
	RefreshToken   string     `json:"refresh_token,omitempty"`
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
	Scopes         []string   `json:"scopes,omitempty"`
}

// AuthorizeResponse is the URL to send the user to.
type AuthorizeResponse struct {
	URL string `json:"url"`
}

// Codes the OAuth flow ends with: the callback's redirect to return_to carries
// status=connected, or status=error with one of these in error.
const (
	OAuthDenied = "access_denied"
	// OAuthRedirectMismatch: the provider refused the operator's callback URL (its
	// error=redirect_uri_mismatch): register the URL with the provider's app.
	OAuthRedirectMismatch = "redirect_uri_mismatch"
	// OAuthProviderError: the provider ended the authorization with another error
	// (invalid_scope, server_error…), sent along in provider_error.
	OAuthProviderError   = "provider_error"
	OAuthStateInvalid    = "invalid_state"
	OAuthStateExpired    = "expired_state"
	OAuthExchangeFailed  = "token_exchange_failed"
	OAuthStoreFailed     = "storage_failed"
	CodeNotConfigured    = "not_configured"
	OAuthCallbackPath    = "/oauth/callback"
	OAuthStatusConnected = "connected"
)

// DataProvider is a Provider as shown to one user.
type DataProvider struct {
	Object           string            `json:"object"` // "data_provider"
	ID               string            `json:"id"`
	Name             string            `json:"name"`
	Slug             string            `json:"slug"`
	Description      string            `json:"description"`
	AuthMethods      []string          `json:"auth_methods"`
	Enabled          bool              `json:"enabled"`
	ConnectedAccount *ConnectedAccount `json:"connected_account"`
}

// DataIntegrationConfiguration is an organization's setting for one provider.
type DataIntegrationConfiguration struct {
	Object         string   `json:"object"` // "data_integration_configuration"
	Slug           string   `json:"slug"`
	OrganizationID string   `json:"organization_id"`
	Enabled        bool     `json:"enabled"`
	AuthMethod     string   `json:"auth_method"`
	Scopes         []string `json:"scopes"`
	ClientID       string   `json:"client_id,omitempty"`
}

// PutDataIntegrationConfigurationRequest is the body of PUT /organizations/{org}/data_integration_configurations/{slug}.
type PutDataIntegrationConfigurationRequest struct {
	Enabled      *bool    `json:"enabled"`
	Scopes       []string `json:"scopes,omitempty"`
	ClientID     string   `json:"client_id,omitempty"`
	ClientSecret string   `json:"client_secret,omitempty"`
}

// List is the hosted API's cursor-paginated list.
type List[T any] struct {
	Object       string       `json:"object"` // "list"
	Data         []T          `json:"data"`
	ListMetadata ListMetadata `json:"list_metadata"`
}

// ListMetadata holds the cursors: pass After as ?after= to get the next page.
type ListMetadata struct {
	Before *string `json:"before"`
	After  *string `json:"after"`
}

// GetValue returns the credential's value, or "" for a nil credential.
func (c *Credential) GetValue() string {
	if c == nil {
		return ""
	}
	return c.Value
}

// CredentialRef names one user's credential for one provider.
type CredentialRef struct {
	Provider       string `json:"provider"`
	UserID         string `json:"user_id"`
	OrganizationID string `json:"organization_id,omitempty"`
}

// String is PROVIDER:USER_ID[@ORGANIZATION_ID], the syntax of the pipes.dev/credentials annotation.
func (r CredentialRef) String() string {
	s := r.Provider + ":" + r.UserID
	if r.OrganizationID != "" {
		s += "@" + r.OrganizationID
	}
	return s
}

// WatchRequest is the body of POST /credentials/watch: a long poll that answers as soon
// as any of the credentials differs from the snapshot the caller holds (named by ETag),
// or after TimeoutSeconds with Changed false.
type WatchRequest struct {
	Credentials    []CredentialRef `json:"credentials"`
	ETag           string          `json:"etag,omitempty"`
	TimeoutSeconds int             `json:"timeout_seconds,omitempty"`
}

// WatchResponse carries the whole current snapshot when Changed.
type WatchResponse struct {
	ETag        string              `json:"etag"`
	Changed     bool                `json:"changed"`
	Credentials []WatchedCredential `json:"credentials,omitempty"`
}

// WatchedCredential is one credential of a watch snapshot.
type WatchedCredential struct {
	CredentialRef
	CredentialsResponse
	// RotatedAt is when the active credential was stored (RFC 3339, sub-second; absent
	// when none is active or the time is unknown). Only the watch carries it, beside the
	// hosted shape rather than in it: the sidecar measures with it how long a rotation
	// takes to reach the workload (pipes_vend_rotation_to_visible_seconds).
	RotatedAt time.Time `json:"rotated_at,omitzero"`
}

// Last4 is what may be shown of a credential: its last four characters, or nothing for
// values shorter than 12 characters, where four would reveal too much.
func Last4(value string) string {
	r := []rune(value)
	if len(r) < 12 {
		return ""
	}
	return string(r[len(r)-4:])
}

// WidgetTokenRequest is the body of POST /widgets/token, as the hosted SDKs'
// widgets.getToken({organizationId, userId, scopes}) sends it.
type WidgetTokenRequest struct {
	OrganizationID string   `json:"organization_id,omitempty"`
	UserID         string   `json:"user_id"`
	Scopes         []string `json:"scopes,omitempty"`
}

// WidgetTokenResponse is the answer of POST /widgets/token.
type WidgetTokenResponse struct {
	Token string `json:"token"`
}

// WidgetSession is GET /widget/api/v1/session: what the widget token binds.
type WidgetSession struct {
	UserID         string    `json:"user_id"`
	OrganizationID string    `json:"organization_id"`
	Namespace      string    `json:"namespace"`
	Scopes         []string  `json:"scopes"`
	ExpiresAt      time.Time `json:"expires_at"`
}

// Connection states of WidgetProvider.State (the ConnectedAccount states, plus
// disconnected for no account).
const (
	StateConnected            = "connected"
	StateDisconnected         = "disconnected"
	StateNeedsReauthorization = "needs_reauthorization"
)

// WidgetProvider is one provider as the widget shows it to the session's user. It never
// holds the credential: only its last four characters.
type WidgetProvider struct {
	Slug        string `json:"slug"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Method      string `json:"method"`  // AuthMethodAPIKey or AuthMethodOAuth
	Enabled     bool   `json:"enabled"` // for the session's organization
	State       string `json:"state"`
	APIKeyLast4 string `json:"api_key_last_4,omitempty"`
	// UpdatedAt is when the stored key was set or last replaced.
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	// OAuthAvailable is whether the widget can start this provider's OAuth flow.
	OAuthAvailable bool `json:"oauth_available"`
}

// WidgetProviderList is GET /widget/api/v1/providers.
type WidgetProviderList struct {
	Data []WidgetProvider `json:"data"`
}

// WidgetAPIKeyRequest is the body of PUT /widget/api/v1/providers/{slug}/api-key.
type WidgetAPIKeyRequest struct {
	Secret string `json:"secret"`
}

// WidgetAuthorizeRequest is the body of POST /widget/api/v1/providers/{slug}/authorize.
type WidgetAuthorizeRequest struct {
	ReturnTo string `json:"return_to,omitempty"`
}

// WidgetOrganizationRequest is the body of PUT /widget/api/v1/providers/{slug}/organization.
type WidgetOrganizationRequest struct {
	Enabled *bool `json:"enabled"`
}
