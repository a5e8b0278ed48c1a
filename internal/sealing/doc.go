// Package sealing owns sealing of API keys for Git: the hybrid (HPKE) keyset, sealing
// and opening.
//
// A sealed value is what a ConnectedAccount carries in spec.apiKey.sealed. Anyone may
// produce one offline from the operator's published public keyset ([Seal]); only the
// operator, which holds the private keyset ([Keyset]), can open it ([Opener]). Each
// value is bound to one account — namespace, name, provider, user and organization
// ([Context]) — through HPKE's context info, so a value copied to another account,
// namespace or cluster does not open.
//
// Format: "v1:" followed by standard base64 of an 8-byte binding hint (the first bytes
// of SHA-256 of the context info, so a value sealed for another account can be told
// from a corrupted one; it protects nothing and changing it only changes the error) and
// Tink's hybrid ciphertext, whose TINK output prefix carries the sealing key id.
//
// Like package crypto, it deals in bytes and key ids and has no Kubernetes dependency,
// so the kubectl plugin can seal without the operator's code.
package sealing
