package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OrganizationProviderSpec enables or disables a Provider for one organization and, for
// OAuth providers, narrows its scopes or supplies the organization's own OAuth client.
type OrganizationProviderSpec struct {
	// providerRef names the Provider, in the same namespace. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.providerRef is immutable: create another OrganizationProvider for another provider"
	ProviderRef LocalObjectReference `json:"providerRef"`

	// organizationID is the application's identifier of the organization. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.organizationID is immutable: create another OrganizationProvider for another organization"
	OrganizationID string `json:"organizationID"`

	// enabled makes the provider available to the organization's users. Disabling it
	// keeps their stored credentials but stops vending them until it is enabled again.
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// scopes narrows the Provider's OAuth scopes for this organization (OAuth providers
	// only; each must be one of the Provider's scopes).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	Scopes []string `json:"scopes,omitempty"`

	// credentials is the organization's own OAuth client (OAuth providers whose
	// credentialsMode is Organization only).
	// +optional
	Credentials *OrganizationOAuthCredentials `json:"credentials,omitempty"`
}

// OrganizationOAuthCredentials is an organization's own OAuth client.
type OrganizationOAuthCredentials struct {
	// clientID is the organization's OAuth client ID.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	ClientID string `json:"clientID"`

	// clientSecretRef selects the Secret key holding the organization's OAuth client secret.
	// +required
	ClientSecretRef SecretKeyReference `json:"clientSecretRef"`
}

// OrganizationProviderStatus is the observed state of an OrganizationProvider.
type OrganizationProviderStatus struct {
	// observedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready says whether the organization's users can use the provider.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=orgprv,categories=pipes
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.providerRef.name`
// +kubebuilder:printcolumn:name="Org",type=string,JSONPath=`.spec.organizationID`
// +kubebuilder:printcolumn:name="Enabled",type=boolean,JSONPath=`.spec.enabled`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// OrganizationProvider is an organization admin's setting for one Provider: enabled or
// not and, for OAuth providers, narrower scopes or the organization's own OAuth client.
// At most one exists per (provider, organization) in a namespace.
type OrganizationProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec OrganizationProviderSpec `json:"spec"`
	// +optional
	Status OrganizationProviderStatus `json:"status,omitempty"`
}

// IsEnabled reports spec.enabled, which defaults to true.
func (o *OrganizationProvider) IsEnabled() bool { return o.Spec.Enabled == nil || *o.Spec.Enabled }

// +kubebuilder:object:root=true

// OrganizationProviderList is a list of OrganizationProviders.
type OrganizationProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []OrganizationProvider `json:"items"`
}
