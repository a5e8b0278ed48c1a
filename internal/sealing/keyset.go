package sealing

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/hybrid/hpke"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/pipes-dev/pipes-operator/internal/crypto"
)

// Keyset is the operator's private sealing keyset: HPKE X25519 keys, the primary one
// used for new seals, every one opening values sealed with it. Immutable: Rotate and
// Prune return new Keysets.
type Keyset struct {
	handle  *keyset.Handle
	decrypt tink.HybridDecrypt
	crypto.Keys
}

// NewKeyset returns a keyset with one fresh key as primary.
func NewKeyset() (*Keyset, error) {
	h, err := keyset.NewHandle(hybrid.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_Key_Template())
	if err != nil {
		return nil, fmt.Errorf("sealing: generate keyset: %w", err)
	}
	return newKeyset(h)
}

func newKeyset(h *keyset.Handle) (*Keyset, error) {
	keys, err := crypto.ReadKeys(h, "sealing", func(e *keyset.Entry) error {
		k, ok := e.Key().(*hpke.PrivateKey)
		if !ok {
			return fmt.Errorf("sealing: keyset key %d is %T, want an HPKE private key", e.KeyID(), e.Key())
		}
		return checkParameters(e.KeyID(), k.Parameters())
	})
	if err != nil {
		return nil, err
	}
	d, err := hybrid.NewHybridDecrypt(h)
	if err != nil {
		return nil, fmt.Errorf("sealing: build decrypter: %w", err)
	}
	return &Keyset{handle: h, decrypt: d, Keys: keys}, nil
}

// ParseKeyset reads the private keyset as MarshalJSON writes it (the sealing keyset
// Secret's data, or its backup).
func ParseKeyset(jsonBytes []byte) (*Keyset, error) {
	h, err := crypto.ReadCleartextHandle(jsonBytes)
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	return newKeyset(h)
}

// MarshalJSON returns the private keyset as cleartext Tink JSON: secret key material.
func (k *Keyset) MarshalJSON() ([]byte, error) { return crypto.WriteCleartextHandle(k.handle) }

// PublicKeysetJSON returns the public half, as published for [Seal]: compact Tink JSON,
// the same bytes for the same keys.
func (k *Keyset) PublicKeysetJSON() ([]byte, error) {
	pub, err := k.handle.Public()
	if err != nil {
		return nil, fmt.Errorf("sealing: public keyset: %w", err)
	}
	var buf bytes.Buffer
	if err := pub.WriteWithNoSecrets(keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("sealing: write public keyset: %w", err)
	}
	// protojson varies its whitespace between builds; compact output does not.
	var out bytes.Buffer
	if err := json.Compact(&out, buf.Bytes()); err != nil {
		return nil, fmt.Errorf("sealing: write public keyset: %w", err)
	}
	return out.Bytes(), nil
}

// Rotate returns a keyset with a fresh key made primary; the old keys still open
// values sealed with them.
func (k *Keyset) Rotate() (*Keyset, error) {
	return crypto.Rotated(k.handle, hybrid.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_Key_Template(), newKeyset)
}

// Prune returns a keyset without the non-primary keys inUse says no sealed value uses,
// and their ids; with nothing removed, k itself.
func (k *Keyset) Prune(inUse func(keyID uint32) bool) (*Keyset, []uint32, error) {
	return crypto.Pruned(k, k.handle, inUse, newKeyset)
}

// Open opens value sealed for c. Errors are [ErrMalformed], [ErrUnknownKey],
// [ErrOtherAccount] or [ErrDecrypt] (wrapped with the key id where it helps), never
// quoting the value.
func (k *Keyset) Open(value string, c Context) ([]byte, error) {
	s, err := Parse(value)
	if err != nil {
		return nil, err
	}
	if !k.Has(s.KeyID) {
		return nil, fmt.Errorf("%w (key %d; this operator's sealing keys are %v)", ErrUnknownKey, s.KeyID, k.KeyIDs())
	}
	pt, err := k.decrypt.Decrypt(s.ciphertext, c.info())
	if err != nil {
		if !s.boundTo(c) {
			return nil, ErrOtherAccount
		}
		return nil, ErrDecrypt
	}
	return pt, nil
}
