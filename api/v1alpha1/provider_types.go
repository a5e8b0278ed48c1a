package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AuthMethod is how end users authenticate to a Provider.
// +kubebuilder:validation:Enum=OAuth;APIKey
type AuthMethod string

const (
	// AuthMethodOAuth means users authorize the application through the provider's OAuth flow.
	AuthMethodOAuth AuthMethod = "OAuth"
	// AuthMethodAPIKey means users paste an API key issued by the provider.
	AuthMethodAPIKey AuthMethod = "APIKey"
)

// OAuthCredentialsMode says whose OAuth client is used for a provider.
// +kubebuilder:validation:Enum=Application;Organization
type OAuthCredentialsMode string

const (
	// OAuthCredentialsApplication uses the application's own OAuth client for everyone.
	OAuthCredentialsApplication OAuthCredentialsMode = "Application"
	// OAuthCredentialsOrganization requires each organization to bring its own OAuth client
	// (OrganizationProvider.spec.credentials) before its users can connect.
	OAuthCredentialsOrganization OAuthCredentialsMode = "Organization"
)

// OAuthClientAuthentication says how the OAuth client authenticates to the token URL.
// +kubebuilder:validation:Enum=Header;Body
type OAuthClientAuthentication string

const (
	// OAuthClientAuthHeader sends client credentials in an HTTP Basic Authorization header (client_secret_basic).
	OAuthClientAuthHeader OAuthClientAuthentication = "Header"
	// OAuthClientAuthBody sends client credentials as form fields in the request body (client_secret_post).
	OAuthClientAuthBody OAuthClientAuthentication = "Body"
)

// ProviderSpec describes one third-party service that users can connect.
//
// +kubebuilder:validation:XValidation:rule="self.method != 'APIKey' || !has(self.oauth)",message="spec.oauth is forbidden when spec.method is APIKey: API key providers take only description, displayName and enabled; each user supplies their own key when they connect"
// +kubebuilder:validation:XValidation:rule="self.method != 'OAuth' || has(self.oauth)",message="spec.oauth is required when spec.method is OAuth: set its authorizationURL, tokenURL and client"
type ProviderSpec struct {
	// method is how users authenticate to this provider: OAuth or APIKey.
	// It is fixed when the Provider is created: to switch, delete the Provider and
	// create it again with the other method.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",messageExpression="'spec.method is immutable (was ' + oldSelf + ', requested ' + self + '): a provider is either OAuth or API key, fixed when it is created; delete this Provider and create it again with the method you want'"
	Method AuthMethod `json:"method"`

	// displayName is the provider's human-readable name, e.g. "GitHub".
	// +optional
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName,omitempty"`

	// description is shown to end users when they connect, to explain how the
	// application uses their data.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Description string `json:"description,omitempty"`

	// enabled makes the provider available to users. Disabling it keeps every stored
	// credential but stops vending them until it is enabled again.
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// oauth configures the OAuth flow. Required when method is OAuth, forbidden when it is APIKey.
	// +optional
	OAuth *OAuthSpec `json:"oauth,omitempty"`
}

// OAuthSpec configures an OAuth 2.0 provider.
//
// +kubebuilder:validation:XValidation:rule="self.credentialsMode != 'Application' || (has(self.clientID) && has(self.clientSecretRef))",message="spec.oauth.clientID and spec.oauth.clientSecretRef are required when credentialsMode is Application; with credentialsMode Organization each organization supplies its own client"
type OAuthSpec struct {
	// authorizationURL is where users are sent to grant access. It must use https
	// (plain http is accepted only for loopback hosts, for tests).
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1', '::1']))",message="must be an absolute https URL (http only for localhost/127.0.0.1/::1)"
	AuthorizationURL string `json:"authorizationURL"`

	// tokenURL is where authorization codes and refresh tokens are exchanged for tokens.
	// It must use https (plain http is accepted only for loopback hosts, for tests).
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1', '::1']))",message="must be an absolute https URL (http only for localhost/127.0.0.1/::1)"
	TokenURL string `json:"tokenURL"`

	// refreshURL, when the provider refreshes tokens elsewhere than tokenURL.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1', '::1']))",message="must be an absolute https URL (http only for localhost/127.0.0.1/::1)"
	RefreshURL string `json:"refreshURL,omitempty"`

	// revocationURL is the provider's token revocation endpoint (RFC 7009). When set,
	// a disconnect revokes the refresh token there too (best effort).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1', '::1']))",message="must be an absolute https URL (http only for localhost/127.0.0.1/::1)"
	RevocationURL string `json:"revocationURL,omitempty"`

	// returnURLs are the only URLs the OAuth flow may send the user back to
	// (return_to of POST /data-integrations/{slug}/authorize), compared exactly: no
	// open redirects. Without any, the flow ends on the operator's own page.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1', '::1']))",message="must be an absolute https URL (http only for localhost/127.0.0.1/::1)"
	ReturnURLs []string `json:"returnURLs,omitempty"`

	// clientID is the application's OAuth client ID (credentialsMode Application).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	ClientID string `json:"clientID,omitempty"`

	// clientSecretRef selects the Secret key holding the application's OAuth client secret.
	// +optional
	ClientSecretRef *SecretKeyReference `json:"clientSecretRef,omitempty"`

	// scopes requested by default. Organizations can narrow them, never widen them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	Scopes []string `json:"scopes,omitempty"`

	// scopeSeparator joins scopes in the authorization request (RFC 6749 uses a space;
	// some providers use a comma).
	// +optional
	// +kubebuilder:default=" "
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4
	ScopeSeparator string `json:"scopeSeparator,omitempty"`

	// pkce enables Proof Key for Code Exchange (RFC 7636).
	// +optional
	// +kubebuilder:default=true
	PKCE *bool `json:"pkce,omitempty"`

	// clientAuthentication is how the client authenticates to the token URL:
	// Header (HTTP Basic, client_secret_basic) or Body (form fields, client_secret_post).
	// +optional
	// +kubebuilder:default=Header
	ClientAuthentication OAuthClientAuthentication `json:"clientAuthentication,omitempty"`

	// authorizationParams are extra query parameters added to the authorization URL,
	// e.g. access_type=offline.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	AuthorizationParams map[string]string `json:"authorizationParams,omitempty"`

	// credentialsMode says whose OAuth client is used: Application (this provider's
	// clientID and clientSecretRef) or Organization (each organization brings its own
	// in its OrganizationProvider before its users can connect).
	// +optional
	// +kubebuilder:default=Application
	CredentialsMode OAuthCredentialsMode `json:"credentialsMode,omitempty"`
}

// ProviderStatus is the observed state of a Provider.
type ProviderStatus struct {
	// observedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// connectedAccounts counts this provider's ConnectedAccounts whose state is connected.
	// +optional
	ConnectedAccounts int32 `json:"connectedAccounts"`

	// conditions: Ready says whether users can connect and credentials can be vended.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=prv,categories=pipes
// +kubebuilder:printcolumn:name="Method",type=string,JSONPath=`.spec.method`
// +kubebuilder:printcolumn:name="Enabled",type=boolean,JSONPath=`.spec.enabled`
// +kubebuilder:printcolumn:name="Accounts",type=integer,JSONPath=`.status.connectedAccounts`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Provider is one third-party service (GitHub, OpenAI, Stripe…) whose credentials users
// can connect. Its name is the slug used by the backend API.
type Provider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ProviderSpec `json:"spec"`
	// +optional
	Status ProviderStatus `json:"status,omitempty"`
}

// IsEnabled reports spec.enabled, which defaults to true.
func (p *Provider) IsEnabled() bool { return p.Spec.Enabled == nil || *p.Spec.Enabled }

// +kubebuilder:object:root=true

// ProviderList is a list of Providers.
type ProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Provider `json:"items"`
}
