package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// aes256KeySize is the only AES-GCM key size a Keyset accepts.
const aes256KeySize = 32

var _ KeyEncryptionKey = (*Keyset)(nil)

// Keyset is a local Tink keyset of AES-256-GCM keys used as the KEK.
//
// A Keyset is an immutable value: Rotate and Prune return new Keysets, so a
// Sealer built from one never sees its keys change underneath it.
type Keyset struct {
	handle *keyset.Handle
	// aead is built once because Seal and Open are on hot paths.
	aead tink.AEAD
	Keys
}

// NewKeyset returns a keyset with one fresh AES-256-GCM key as primary.
func NewKeyset() (*Keyset, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("crypto: generate keyset: %w", err)
	}
	return newKeyset(h)
}

// newKeyset checks that h holds only AES-256-GCM keys and caches the AEAD
// primitive and key ids.
func newKeyset(h *keyset.Handle) (*Keyset, error) {
	// Refuse anything weaker or different than the documented key type, rather than
	// silently wrapping credentials with it.
	keys, err := ReadKeys(h, "crypto", func(e *keyset.Entry) error {
		k, ok := e.Key().(*aesgcm.Key)
		if !ok {
			return fmt.Errorf("crypto: keyset key %d is %T, want AES-256-GCM", e.KeyID(), e.Key())
		}
		if p, ok := k.Parameters().(*aesgcm.Parameters); !ok || p.KeySizeInBytes() != aes256KeySize {
			return fmt.Errorf("crypto: keyset key %d is not a 256-bit AES-GCM key, want AES-256-GCM", e.KeyID())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("crypto: build AEAD from keyset: %w", err)
	}
	return &Keyset{handle: h, aead: a, Keys: keys}, nil
}

// ParseKeyset reads a cleartext Tink JSON keyset, as written by MarshalJSON or
// `tinkey create-keyset --key-template AES256_GCM --out-format json`.
func ParseKeyset(jsonBytes []byte) (*Keyset, error) {
	h, err := ReadCleartextHandle(jsonBytes)
	if err != nil {
		return nil, err
	}
	return newKeyset(h)
}

// ReadCleartextHandle reads a cleartext Tink JSON keyset of any key type. Its errors
// never quote the input, which is secret key material.
func ReadCleartextHandle(jsonBytes []byte) (*keyset.Handle, error) {
	trimmed := bytes.TrimSpace(jsonBytes)
	if len(trimmed) == 0 {
		return nil, errors.New("crypto: parse keyset: input is empty, want a Tink JSON keyset")
	}
	// An encrypted keyset would otherwise only get Tink's generic "invalid
	// keyset" error; say what is actually wrong.
	if bytes.Contains(trimmed, []byte(`"encryptedKeyset"`)) {
		return nil, errors.New("crypto: parse keyset: input is an encrypted Tink keyset, want a cleartext one")
	}
	// Tink's reader errors are fixed strings and never quote the input, which
	// matters because the input is secret key material.
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(trimmed)))
	if err != nil {
		return nil, fmt.Errorf("crypto: parse keyset: not a valid Tink JSON keyset: %w", err)
	}
	return h, nil
}

// WriteCleartextHandle writes h, secret key material included, as Tink JSON.
func WriteCleartextHandle(h *keyset.Handle) ([]byte, error) {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("crypto: marshal keyset: %w", err)
	}
	return buf.Bytes(), nil
}

// LoadKeysetFile reads a cleartext Tink JSON keyset from path, typically a
// Secret mounted into the operator pod.
func LoadKeysetFile(path string) (*Keyset, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// *fs.PathError already names the path.
		return nil, fmt.Errorf("crypto: load keyset: %w", err)
	}
	k, err := ParseKeyset(b)
	if err != nil {
		return nil, fmt.Errorf("crypto: load keyset %s: %w", path, err)
	}
	return k, nil
}

// MarshalJSON returns the keyset as cleartext Tink JSON, readable by
// ParseKeyset.
//
// The output is secret key material. Because Keyset implements json.Marshaler,
// do not embed a Keyset in structs that get logged or serialised.
func (k *Keyset) MarshalJSON() ([]byte, error) { return WriteCleartextHandle(k.handle) }

// AEAD returns the keyset's AEAD primitive: it encrypts with the primary key
// and decrypts with any enabled key.
func (k *Keyset) AEAD() tink.AEAD { return k.aead }

// Rotate returns a new keyset with a fresh AES-256-GCM key made primary. The
// old keys stay enabled so existing ciphertexts still decrypt; k is unchanged.
func (k *Keyset) Rotate() (*Keyset, error) {
	return Rotated(k.handle, aead.AES256GCMKeyTemplate(), newKeyset)
}

// AddPrimary returns a copy of h with a fresh key of template t made primary; the
// old keys stay enabled. h is unchanged.
func AddPrimary(h *keyset.Handle, t *tinkpb.KeyTemplate) (*keyset.Handle, error) {
	m := keyset.NewManagerFromHandle(h)
	id, err := m.Add(t)
	if err != nil {
		return nil, fmt.Errorf("crypto: rotate keyset: add key: %w", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, fmt.Errorf("crypto: rotate keyset: set primary: %w", err)
	}
	next, err := m.Handle()
	if err != nil {
		return nil, fmt.Errorf("crypto: rotate keyset: %w", err)
	}
	return next, nil
}

// Prune returns a new keyset without the non-primary keys (enabled or
// disabled) for which inUse returns false, and the removed ids, sorted. The
// primary key is never removed, and inUse is not asked about it. If nothing is
// removed, k itself is returned; k is never modified.
//
// Ciphertexts whose data key was wrapped by a removed key can no longer be
// opened, so inUse must cover every stored ciphertext (Sealed.KeyID).
func (k *Keyset) Prune(inUse func(keyID uint32) bool) (*Keyset, []uint32, error) {
	return Pruned(k, k.handle, inUse, newKeyset)
}

// PruneHandle returns a copy of h without the non-primary keys for which inUse returns
// false, and the removed ids, sorted; with nothing removed, h itself. h is unchanged.
func PruneHandle(h *keyset.Handle, inUse func(keyID uint32) bool) (*keyset.Handle, []uint32, error) {
	if inUse == nil {
		return nil, nil, errors.New("crypto: prune keyset: inUse is nil")
	}
	m := keyset.NewManagerFromHandle(h)
	var removed []uint32
	for i := range h.Len() {
		e, err := h.Entry(i)
		if err != nil {
			return nil, nil, fmt.Errorf("crypto: prune keyset: read entry %d: %w", i, err)
		}
		if e.IsPrimary() || inUse(e.KeyID()) {
			continue
		}
		if err := m.Delete(e.KeyID()); err != nil {
			return nil, nil, fmt.Errorf("crypto: prune keyset: delete key %d: %w", e.KeyID(), err)
		}
		removed = append(removed, e.KeyID())
	}
	if len(removed) == 0 {
		return h, nil, nil
	}
	next, err := m.Handle()
	if err != nil {
		return nil, nil, fmt.Errorf("crypto: prune keyset: %w", err)
	}
	slices.Sort(removed)
	return next, removed, nil
}
