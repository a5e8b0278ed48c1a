package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// ErrDecrypt is wrapped by every error returned from [Sealer.Open].
//
// An AEAD cannot tell tampering from a wrong key or wrong associated data, so
// all of these are one error.
var ErrDecrypt = errors.New("ciphertext cannot be decrypted: it was tampered with, copied from another object, or encrypted under a key that is no longer in the keyset")

// KeyEncryptionKey is the seam for where the KEK lives: a local Tink keyset
// today ([Keyset]), a KMS (Vault transit, or a cloud KMS through Tink's KMS
// extensions) later.
//
// Implementations must be safe for concurrent use. Note for remote
// implementations: [Sealer.Open] reports every failure of AEAD().Decrypt as
// [ErrDecrypt], so a KMS whose calls can fail transiently will need a way to
// tell those failures apart before it is plugged in here.
type KeyEncryptionKey interface {
	// AEAD wraps and unwraps data keys.
	AEAD() tink.AEAD
	// PrimaryKeyID is the id of the key that new data keys are wrapped with.
	PrimaryKeyID() uint32
}

// Sealed is the result of [Sealer.Seal].
type Sealed struct {
	// Ciphertext is the Tink KMS-envelope ciphertext: the wrapped data key
	// followed by the credential encrypted under that data key.
	Ciphertext []byte
	// KeyID is the KEK primary key id that wrapped the data key. Callers
	// record it next to the ciphertext so [Keyset.Prune] can tell which KEKs
	// are still needed.
	KeyID uint32
}

// Sealer encrypts credentials with a fresh AES-256-GCM data key per
// credential, the data key wrapped by the KEK (Tink KMS envelope AEAD).
//
// A Sealer is a snapshot of its KEK taken by [NewSealer]: after rotating the
// keyset, build a new Sealer. It is immutable and safe for concurrent use.
type Sealer struct {
	envelope tink.AEAD
	keyID    uint32
}

// NewSealer returns a Sealer whose data keys are wrapped by kek.
// It panics if kek is nil, which is a programming error.
func NewSealer(kek KeyEncryptionKey) *Sealer {
	if kek == nil {
		panic("crypto: NewSealer called with a nil KeyEncryptionKey")
	}
	// Capture the AEAD and the primary id together, so the KeyID reported by
	// Seal is always the key that actually wrapped the data key.
	return &Sealer{
		envelope: aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), kek.AEAD()),
		keyID:    kek.PrimaryKeyID(),
	}
}

// Seal encrypts plaintext for the location b. Two calls with the same input
// return different ciphertexts (fresh data key and nonce each time).
func (s *Sealer) Seal(plaintext []byte, b Binding) (Sealed, error) {
	ct, err := s.envelope.Encrypt(plaintext, b.AssociatedData())
	if err != nil {
		// Tink encryption errors describe the failing step, never the input.
		return Sealed{}, fmt.Errorf("crypto: seal: %w", err)
	}
	return Sealed{Ciphertext: ct, KeyID: s.keyID}, nil
}

// Open decrypts a ciphertext produced by Seal for the same Binding.
//
// Any failure returns [ErrDecrypt] and nothing else: the underlying error is
// dropped on purpose, so neither plaintext nor ciphertext bytes (nor whatever a
// future KMS client might echo back) can reach logs or status conditions.
func (s *Sealer) Open(ciphertext []byte, b Binding) ([]byte, error) {
	if len(ciphertext) == 0 {
		return nil, ErrDecrypt
	}
	pt, err := s.envelope.Decrypt(ciphertext, b.AssociatedData())
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// PrimaryKeyID is the KEK key id that wraps data keys of new ciphertexts.
func (s *Sealer) PrimaryKeyID() uint32 { return s.keyID }

// KeyIDOf reads which KEK key wrapped the data key of a ciphertext made by Seal,
// from the ciphertext itself: Tink's envelope format is a 4-byte length of the
// wrapped data key followed by the wrapped key, whose Tink output prefix is a
// version byte (1) and the 4-byte key id. Deciding from the ciphertext rather than
// from an annotation beside it means nobody can make a key look unused by editing
// metadata.
func KeyIDOf(ciphertext []byte) (uint32, error) {
	const lenSize, prefixSize = 4, 5
	if len(ciphertext) < lenSize+prefixSize {
		return 0, ErrDecrypt
	}
	if n := binary.BigEndian.Uint32(ciphertext); n < prefixSize || int64(n) > int64(len(ciphertext)-lenSize) {
		return 0, ErrDecrypt
	}
	if ciphertext[lenSize] != 1 { // Tink's TINK output prefix
		return 0, ErrDecrypt
	}
	return binary.BigEndian.Uint32(ciphertext[lenSize+1:]), nil
}
