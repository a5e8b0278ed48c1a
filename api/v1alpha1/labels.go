package v1alpha1

// Labels, annotations and types of the objects the operator owns.
const (
	// LabelManagedBy marks every object the operator creates; the manager's cache
	// selects Secrets by it, so it never holds the cluster's other Secrets in memory.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is LabelManagedBy's value.
	ManagedByValue = "pipes-operator"
	// LabelProvider names the Provider of a managed credential Secret.
	LabelProvider = "pipes.dev/provider"
	// LabelConnectedAccount names the ConnectedAccount of a managed credential Secret.
	LabelConnectedAccount = "pipes.dev/connected-account"
	// LabelComponent tells managed objects apart (credential, keyset).
	LabelComponent = "pipes.dev/component"
	// ComponentCredential is LabelComponent's value on Secrets holding encrypted credentials.
	ComponentCredential = "credential"
	// ComponentOAuthState is LabelComponent's value on the short-lived Secrets holding an
	// OAuth authorization in progress (its state and PKCE verifier, encrypted).
	ComponentOAuthState = "oauth-state"
	// ComponentKeyset is LabelComponent's value on the key-encryption keyset Secret.
	ComponentKeyset = "keyset"
	// LabelCredentialSource opts a user's Secret in as a source of API keys: the operator
	// copies a key out of a Secret named by spec.apiKey.secretKeyRef only when the Secret
	// carries this label with the value "true". The Secret's owner decides, not whoever can
	// write a ConnectedAccount; ServiceAccount tokens and other Secrets are never read.
	LabelCredentialSource = "pipes.dev/credential-source"
	// CredentialSourceValue is LabelCredentialSource's value.
	CredentialSourceValue = "true"

	// AnnotationCredentialVersion is the version of the credential in a managed Secret.
	AnnotationCredentialVersion = "pipes.dev/credential-version"
	// AnnotationKeyID is the id of the key-encryption key that wraps the ciphertext.
	AnnotationKeyID = "pipes.dev/key-id"
	// AnnotationSourceVersion is "<uid>/<resourceVersion>" of the source Secret last copied.
	AnnotationSourceVersion = "pipes.dev/source-version"
	// AnnotationAPIKeyLast4 is the displayable last four characters of the API key.
	AnnotationAPIKeyLast4 = "pipes.dev/api-key-last-4"
	// AnnotationRotatedAt is when the credential was last set: RFC 3339 with sub-second
	// precision (time.RFC3339Nano; Secrets written by earlier versions have whole seconds),
	// so the vend sidecar can measure how long a rotation takes to reach a workload.
	AnnotationRotatedAt = "pipes.dev/rotated-at"
	// AnnotationTokenExpiry is when an OAuth credential's access token expires (RFC 3339):
	// what refreshes are scheduled by, never the token.
	AnnotationTokenExpiry = "pipes.dev/token-expiry"
	// AnnotationNeedsReauthorization on a credential Secret says the provider refused its
	// refresh token (invalid_grant): the user must connect again. Its value says when.
	AnnotationNeedsReauthorization = "pipes.dev/needs-reauthorization"
	// AnnotationRefreshing on a credential Secret is the lock of the replica refreshing
	// its OAuth token ("<replica> <RFC 3339 deadline>"): a refresh token is spent once.
	AnnotationRefreshing = "pipes.dev/refreshing"
	// AnnotationRefreshRetry on a credential Secret records its OAuth token's failed
	// refreshes ("<failures in a row> <RFC 3339 time of the next attempt>"): no replica
	// tries again before then, so a failing token endpoint is retried with backoff. A
	// successful refresh removes it.
	AnnotationRefreshRetry = "pipes.dev/refresh-retry"
	// AnnotationExpiresAt on a short-lived object (an OAuth authorization in progress)
	// says when it may be removed (RFC 3339).
	AnnotationExpiresAt = "pipes.dev/expires-at"

	// AnnotationKeysetBackedUpAt, on a keyset Secret (key-encryption, or sealing with
	// --sealing), is when its key material was last saved by `kubectl pipes keyset backup`
	// (or `manager keyset backup`), RFC 3339.
	AnnotationKeysetBackedUpAt = "pipes.dev/keyset-backed-up-at"
	// AnnotationKeysetBackedUpKeyIDs, on a keyset Secret, lists the key ids that backup
	// held (comma-separated): a primary key not among them was added after the backup.
	AnnotationKeysetBackedUpKeyIDs = "pipes.dev/keyset-backed-up-key-ids"

	// CredentialSecretType is the type of the Secrets holding encrypted credentials.
	CredentialSecretType = "pipes.dev/credential"
	// CredentialCiphertextKey is the data key of a credential Secret holding the ciphertext.
	CredentialCiphertextKey = "ciphertext"

	// FinalizerCredentialCleanup was added to every ConnectedAccount by earlier versions;
	// the operator now only removes it (with the credential) from accounts being deleted,
	// and cleans up after deleted accounts without a finalizer.
	FinalizerCredentialCleanup = "pipes.dev/credential-cleanup"
)
