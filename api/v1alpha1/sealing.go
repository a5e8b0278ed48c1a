package v1alpha1

// Sealing (spec.apiKey.sealed): where the operator keeps its sealing keyset and
// publishes the public half. Both live in the operator's namespace (pipes-system by
// default).
const (
	// SealingPublicKeysetConfigMap is the ConfigMap holding the public sealing keyset;
	// every authenticated user may get it (Role pipes-sealing-public-keyset-reader).
	SealingPublicKeysetConfigMap = "pipes-sealing-public-keyset"
	// SealingPublicKeysetKey is its data key: a public Tink JSON keyset.
	SealingPublicKeysetKey = "public-keyset.json"
	// SealingKeysetSecret is the Secret holding the private sealing keyset (data key
	// keyset.json), created on first start; back it up like the key-encryption keyset.
	SealingKeysetSecret = "pipes-sealing-keyset"

	// ComponentSealingKeyset is LabelComponent's value on the private sealing keyset Secret.
	ComponentSealingKeyset = "sealing-keyset"
	// ComponentSealingPublicKeyset is LabelComponent's value on the public-keyset ConfigMap.
	ComponentSealingPublicKeyset = "sealing-public-keyset"
)
