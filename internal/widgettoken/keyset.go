// Package widgettoken owns widget session tokens: short-lived JWTs, signed with Tink's
// ES256, that the backend API issues to an application for one end user and that the
// public widget API accepts instead of a Kubernetes identity. It owns the signing keyset
// (kept in a Secret by package keyring and rotated by the leader), what a token's claims
// mean (namespace, user, organization, scopes) and their verification on every replica.
package widgettoken

import (
	"fmt"

	"github.com/tink-crypto/tink-go/v2/jwt"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/pipes-dev/pipes-operator/internal/crypto"
)

// Keyset is the private signing keyset: ES256 keys, the primary one signing new tokens,
// every one verifying tokens it signed. Immutable: Rotate and Prune return new Keysets.
type Keyset struct {
	handle   *keyset.Handle
	signer   jwt.Signer
	verifier jwt.Verifier
	crypto.Keys
}

// NewKeyset returns a keyset with one fresh key as primary.
func NewKeyset() (*Keyset, error) {
	h, err := keyset.NewHandle(jwt.ES256Template())
	if err != nil {
		return nil, fmt.Errorf("widget tokens: generate keyset: %w", err)
	}
	return newKeyset(h)
}

func newKeyset(h *keyset.Handle) (*Keyset, error) {
	// The signer below refuses keys that are not JWT signing keys.
	keys, err := crypto.ReadKeys(h, "widget tokens", func(*keyset.Entry) error { return nil })
	if err != nil {
		return nil, err
	}
	signer, err := jwt.NewSigner(h)
	if err != nil {
		return nil, fmt.Errorf("widget tokens: the keyset is not an ES256 signing keyset: %w", err)
	}
	pub, err := h.Public()
	if err != nil {
		return nil, fmt.Errorf("widget tokens: public keyset: %w", err)
	}
	verifier, err := jwt.NewVerifier(pub)
	if err != nil {
		return nil, fmt.Errorf("widget tokens: verifier: %w", err)
	}
	return &Keyset{handle: h, signer: signer, verifier: verifier, Keys: keys}, nil
}

// ParseKeyset reads the keyset as MarshalJSON writes it (the Secret's data, or a backup).
func ParseKeyset(jsonBytes []byte) (*Keyset, error) {
	h, err := crypto.ReadCleartextHandle(jsonBytes)
	if err != nil {
		return nil, fmt.Errorf("widget tokens: %w", err)
	}
	return newKeyset(h)
}

// MarshalJSON returns the keyset as cleartext Tink JSON: secret key material.
func (k *Keyset) MarshalJSON() ([]byte, error) { return crypto.WriteCleartextHandle(k.handle) }

// Rotate returns a keyset with a fresh key made primary; the old keys still verify.
func (k *Keyset) Rotate() (*Keyset, error) {
	return crypto.Rotated(k.handle, jwt.ES256Template(), newKeyset)
}

// Prune returns a keyset without the non-primary keys inUse rejects, and their ids;
// with nothing removed, k itself.
func (k *Keyset) Prune(inUse func(keyID uint32) bool) (*Keyset, []uint32, error) {
	return crypto.Pruned(k, k.handle, inUse, newKeyset)
}
