package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConnectedAccountSpec is one user's connection to a Provider.
//
// +kubebuilder:validation:XValidation:rule=`(has(oldSelf.organizationID) ? oldSelf.organizationID : "") == (has(self.organizationID) ? self.organizationID : "")`,message="spec.organizationID is immutable: create another ConnectedAccount for another organization"
type ConnectedAccountSpec struct {
	// providerRef names the Provider, in the same namespace. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.providerRef is immutable: create another ConnectedAccount for another provider"
	ProviderRef LocalObjectReference `json:"providerRef"`

	// userID is the application's identifier of the user. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.userID is immutable: create another ConnectedAccount for another user"
	UserID string `json:"userID"`

	// organizationID scopes the connection to one of the user's organizations. Immutable.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	OrganizationID string `json:"organizationID,omitempty"`

	// apiKey says where the user's API key comes from (API key providers only).
	// When unset, the key is set through the backend API
	// (PUT /data-integrations/{provider}/api-key), which encrypts it before anything is stored.
	// +optional
	APIKey *APIKeySource `json:"apiKey,omitempty"`
}

// APIKeySource is where a user's API key comes from. Exactly one source is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.secretKeyRef) != has(self.sealed)",message="spec.apiKey needs exactly one source: set either spec.apiKey.secretKeyRef or spec.apiKey.sealed (made with kubectl pipes seal), not both; or remove spec.apiKey to set the key through the backend API"
type APIKeySource struct {
	// secretKeyRef selects a key of a Secret, in the same namespace, that holds the
	// API key (a GitOps tool can produce it from a sealed or external secret). The
	// operator copies the key, encrypted, into a Secret it owns, and rotates that copy
	// whenever this Secret changes.
	// +optional
	SecretKeyRef *SecretKeyReference `json:"secretKeyRef,omitempty"`

	// sealed is the API key sealed for this account with the operator's public sealing
	// keyset (`kubectl pipes seal`; see docs/gitops.md): safe to commit to Git, since
	// only the operator can open it, and only for this account's namespace, name,
	// provider, user and organization. The operator stores the key encrypted in a
	// Secret it owns; changing this value rotates it.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=16384
	Sealed string `json:"sealed,omitempty"`
}

// ConnectedAccountState is the lifecycle state of a connection, as the hosted product names it.
// +kubebuilder:validation:Enum=connected;needs_reauthorization;disconnected
type ConnectedAccountState string

const (
	// StateConnected means a credential is stored.
	StateConnected ConnectedAccountState = "connected"
	// StateNeedsReauthorization means the stored credential stopped working; the user must connect again.
	StateNeedsReauthorization ConnectedAccountState = "needs_reauthorization"
	// StateDisconnected means no credential is stored.
	StateDisconnected ConnectedAccountState = "disconnected"
)

// ConnectedAccountStatus is the observed state of a ConnectedAccount. It never holds a credential.
type ConnectedAccountStatus struct {
	// observedGeneration is the spec generation the status reflects; -1 until the
	// operator first reconciles the account.
	// +optional
	// +kubebuilder:default=-1
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// state is connected, needs_reauthorization or disconnected.
	// +optional
	State ConnectedAccountState `json:"state,omitempty"`

	// apiKeyLast4 is the last four characters of the stored API key (empty for keys
	// shorter than 12 characters, which would reveal too much of them).
	// +optional
	APIKeyLast4 string `json:"apiKeyLast4,omitempty"`

	// credentialSecretRef names the operator-owned Secret holding the encrypted credential.
	// +optional
	CredentialSecretRef *LocalObjectReference `json:"credentialSecretRef,omitempty"`

	// credentialVersion increases by one each time the stored credential is replaced.
	// +optional
	CredentialVersion int64 `json:"credentialVersion,omitempty"`

	// lastRotatedTime is when the stored credential was last set or replaced.
	// +optional
	LastRotatedTime *metav1.Time `json:"lastRotatedTime,omitempty"`

	// encryptionKeyID is the id of the key-encryption key that wraps the stored
	// credential; after a keyset rotation it changes once the credential is re-encrypted.
	// +optional
	EncryptionKeyID int64 `json:"encryptionKeyID,omitempty"`

	// conditions: Ready says whether the credential can be vended, and why not.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cacct,categories=pipes
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.providerRef.name`
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.userID`
// +kubebuilder:printcolumn:name="Org",type=string,JSONPath=`.spec.organizationID`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Key",type=string,JSONPath=`.status.apiKeyLast4`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ConnectedAccount is one user's (optionally organization-scoped) connection to a
// Provider. The credential itself lives only encrypted, in a Secret the operator owns.
type ConnectedAccount struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ConnectedAccountSpec `json:"spec"`
	// status is defaulted to observedGeneration -1 until the operator first reconciles
	// the account, so that kstatus (Flux, Argo CD) reports it in progress, not current.
	// +optional
	// +kubebuilder:default={}
	Status ConnectedAccountStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ConnectedAccountList is a list of ConnectedAccounts.
type ConnectedAccountList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ConnectedAccount `json:"items"`
}
