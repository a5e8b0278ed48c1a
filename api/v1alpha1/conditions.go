package v1alpha1

// ConditionType is the type of a status condition.
type ConditionType = string

// ConditionReady is the one condition every kind reports: whether the object does its job
// (a Provider can be used, a ConnectedAccount's credential can be vended).
const ConditionReady ConditionType = "Ready"

// ConditionSynced (ConnectedAccount) says whether the stored credential matches
// spec.apiKey's source. It is separate from Ready because a bad new key in the source
// leaves the last good one in place: the account stays vendable (Ready) while Synced says
// the rotation failed.
const ConditionSynced ConditionType = "Synced"

// ConditionStalled and ConditionReconciling (ConnectedAccount) are kstatus's
// abnormal-true conditions, which Flux's and Argo CD's health checks read: Stalled=True
// (kstatus Failed) while the account needs someone to fix something, Reconciling=True
// (kstatus InProgress) while it waits for a key; neither is present once the account
// is connected and in sync with its source (kstatus Current).
const (
	ConditionStalled     ConditionType = "Stalled"
	ConditionReconciling ConditionType = "Reconciling"
)

// Reason is the machine-readable reason of a condition or an Event.
type Reason = string

// Condition reasons. Each names the cause, so `kubectl get -o yaml` tells what to fix.
const (
	// ReasonReady: everything the object needs is in place.
	ReasonReady Reason = "Ready"
	// ReasonDisabled: the Provider or OrganizationProvider itself has enabled=false.
	ReasonDisabled Reason = "Disabled"
	// ReasonClientSecretNotFound: the OAuth client secret reference does not resolve.
	ReasonClientSecretNotFound Reason = "ClientSecretNotFound"

	// ReasonConnected: the credential is stored encrypted and can be vended.
	ReasonConnected Reason = "Connected"
	// ReasonAwaitingCredential: no key has been supplied yet (backend-API accounts).
	ReasonAwaitingCredential Reason = "AwaitingCredential"
	// ReasonSourceNotFound: spec.apiKey.secretKeyRef names a Secret or key that does not exist.
	ReasonSourceNotFound Reason = "SourceNotFound"
	// ReasonSourceNotOptedIn: the Secret named by spec.apiKey.secretKeyRef lacks the
	// LabelCredentialSource label, so the operator does not read it.
	ReasonSourceNotOptedIn Reason = "SourceNotOptedIn"
	// ReasonSealedValueInvalid: spec.apiKey.sealed does not open: not a sealed value,
	// corrupted, or sealed with a key this operator does not hold (another cluster's, or
	// pruned). Reseal with kubectl pipes seal.
	ReasonSealedValueInvalid Reason = "SealedValueInvalid"
	// ReasonSealedForAnotherAccount: spec.apiKey.sealed was sealed for another account
	// (namespace, name, provider, user or organization). Reseal it for this one.
	ReasonSealedForAnotherAccount Reason = "SealedForAnotherAccount"
	// ReasonInvalidKey: the supplied key is empty, padded with whitespace or too long.
	ReasonInvalidKey Reason = "InvalidKey"
	// ReasonProviderNotFound: spec.providerRef names no Provider (it was deleted). A stored
	// credential is kept, encrypted and not vended, until the Provider is recreated or the
	// account is deleted: deleting a Provider (a GitOps prune, a replace --force) must not
	// destroy every user's key.
	ReasonProviderNotFound Reason = "ProviderNotFound"
	// ReasonProviderDisabled: the Provider has enabled=false.
	ReasonProviderDisabled Reason = "ProviderDisabled"
	// ReasonOrganizationDisabled: an OrganizationProvider disables the provider for the account's organization.
	ReasonOrganizationDisabled Reason = "OrganizationDisabled"
	// ReasonAuthMethodMismatch: the account's credential source does not fit the Provider's method.
	ReasonAuthMethodMismatch Reason = "AuthMethodMismatch"
	// ReasonCredentialRolledBack: the credential Secret holds an older credential version
	// than the account has already recorded (a restored backup or a replayed write); it is
	// not vended.
	ReasonCredentialRolledBack Reason = "CredentialRolledBack"
	// ReasonDecryptionFailed: the stored ciphertext does not decrypt (tampered, copied from another account, or its key was removed).
	ReasonDecryptionFailed Reason = "DecryptionFailed"
	// ReasonEncryptionFailed: the credential could not be encrypted or stored.
	ReasonEncryptionFailed Reason = "EncryptionFailed"
	// ReasonInvalidSettings: an OrganizationProvider's settings no longer fit its Provider (e.g. its scopes were narrowed).
	ReasonInvalidSettings Reason = "InvalidSettings"
	// ReasonDuplicateAccount: an older ConnectedAccount connects the same user (and
	// organization) to the same Provider; only that one holds a credential.
	ReasonDuplicateAccount Reason = "DuplicateAccount"
	// ReasonCredentialSecretNameTaken: a Secret the account does not control has the name
	// of its credential Secret; the operator neither uses nor deletes it.
	ReasonCredentialSecretNameTaken Reason = "CredentialSecretNameTaken"
	// ReasonAwaitingAuthorization: no OAuth token yet: the user has not completed the
	// authorization flow (POST /data-integrations/{slug}/authorize).
	ReasonAwaitingAuthorization Reason = "AwaitingAuthorization"
	// ReasonReauthorizationNeeded: the provider refused the stored refresh token
	// (revoked or expired); the user must connect again.
	ReasonReauthorizationNeeded Reason = "ReauthorizationNeeded"
)

// Event reasons, mirroring the hosted product's connection events.
const (
	// EventConnected: a credential was stored for the first time.
	EventConnected Reason = "Connected"
	// EventRotated: the stored credential was replaced by a new one.
	EventRotated Reason = "Rotated"
	// EventDisconnected: the stored credential was removed.
	EventDisconnected Reason = "Disconnected"
	// EventConnectionFailed: a supplied credential could not be stored.
	EventConnectionFailed Reason = "ConnectionFailed"
	// EventReencrypted: the credential was re-encrypted under the current primary key.
	EventReencrypted Reason = "Reencrypted"
	// EventCredentialRetained: the account's Provider is gone; its credential is kept,
	// encrypted and not vended, until the Provider returns or the account is deleted.
	EventCredentialRetained Reason = "CredentialRetained"
	// EventReauthorizationNeeded: the stored credential stopped working.
	EventReauthorizationNeeded Reason = "ReauthorizationNeeded"
	// EventRefreshFailed: the provider's token endpoint failed to refresh an OAuth token
	// (no answer, 5xx, 429); the token is vended while it is valid, and the refresh is
	// retried with backoff.
	EventRefreshFailed Reason = "RefreshFailed"
)

// EventAction is the action of an Event (events.k8s.io `action`): what the operator did
// or tried to do when the Event's reason happened.
type EventAction = string

// Event actions.
const (
	// ActionConnect: storing a credential for the first time (or failing to).
	ActionConnect EventAction = "Connect"
	// ActionRotate: replacing the stored credential with a new one.
	ActionRotate EventAction = "Rotate"
	// ActionDisconnect: removing the stored credential.
	ActionDisconnect EventAction = "Disconnect"
	// ActionReencrypt: re-encrypting the credential under the current primary key.
	ActionReencrypt EventAction = "Reencrypt"
	// ActionRetain: keeping the credential of an account whose Provider is gone.
	ActionRetain EventAction = "Retain"
	// ActionVend: handing out the credential (it stopped working).
	ActionVend EventAction = "Vend"
	// ActionRefresh: refreshing an OAuth access token ahead of its expiry.
	ActionRefresh EventAction = "Refresh"
)
