// Package crypto owns encryption at rest of users' third-party credentials
// (API keys) that the operator stores in Kubernetes Secrets.
//
// It does envelope encryption with Tink AEAD and contains no hand-written
// cryptography:
//
//   - each credential is encrypted with its own fresh AES-256-GCM data key,
//     and that data key is wrapped by a key-encryption key (KEK);
//   - every ciphertext is bound to the object and field it belongs to
//     ([Binding]), so a ciphertext copied into another Secret, another field or
//     a re-created object with the same name does not decrypt;
//   - the KEK sits behind [KeyEncryptionKey] so that today's local Tink keyset
//     ([Keyset]) can later be replaced by a KMS without changing callers;
//   - [Keyset] supports rotation (new primary, old keys still decrypt) and
//     pruning of keys no stored ciphertext uses any more.
//
// The package deliberately has no Kubernetes or Prometheus dependencies: it
// deals in bytes and key ids, and callers map those onto API objects and
// metrics.
package crypto
