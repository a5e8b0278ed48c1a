package sealing

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/hybrid/hpke"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

// Prefix starts every sealed value of the current format.
const Prefix = "v1:"

// contextFormat versions the context info; a new encoding gets a new value.
const contextFormat = "pipes.dev/sealed-api-key/v1"

// Sizes of a sealed value's parts.
const (
	hintSize = 8
	// tinkPrefixSize is Tink's output prefix: a version byte (1) and the 4-byte key id.
	tinkPrefixSize = 5
	// x25519EncSize is HPKE's encapsulated key for DHKEM(X25519); tagSize AES-GCM's tag.
	x25519EncSize = 32
	tagSize       = 16
	// MinPayload is the shortest decoded payload: a one-byte key.
	MinPayload = hintSize + tinkPrefixSize + x25519EncSize + 1 + tagSize
)

// MaxSealedLength bounds spec.apiKey.sealed: a sealed key of maxKeyLength bytes.
const MaxSealedLength = len(Prefix) + (hintSize+tinkPrefixSize+x25519EncSize+maxKeyLength+tagSize+2)/3*4

// MinSealedLength is the length of a sealed one-byte key.
const MinSealedLength = len(Prefix) + (MinPayload+2)/3*4

// maxKeyLength mirrors validation.MaxAPIKeyLength (this package does not import it).
const maxKeyLength = 8192

// Errors of [Parse] and [Opener.Open]. None of them quotes the sealed value or a
// plaintext.
var (
	// ErrMalformed: not "v1:" and base64, or too short to be a sealed value.
	ErrMalformed = errors.New("the sealed value is not one kubectl pipes seal produces (want \"" + Prefix + "\" and base64, at least " + fmt.Sprint(MinSealedLength) + " characters): it was cut or edited; reseal with kubectl pipes seal")
	// ErrOtherAccount: the value was sealed for another account (namespace, name,
	// provider, user or organization).
	ErrOtherAccount = errors.New("the sealed value was sealed for another account")
	// ErrUnknownKey: the value names a sealing key this keyset does not hold (another
	// cluster's, or a pruned one).
	ErrUnknownKey = errors.New("the sealed value was sealed with a key this operator does not hold")
	// ErrDecrypt: the value does not open (corrupted or edited).
	ErrDecrypt = errors.New("the sealed value does not open: it was corrupted or edited")
)

// Context binds a sealed value to one ConnectedAccount.
type Context struct{ Namespace, Name, Provider, User, Organization string }

// String names the binding for messages: every field, organization "" included.
func (c Context) String() string {
	return fmt.Sprintf("namespace %q, name %q, provider %q, user %q, organization %q", c.Namespace, c.Name, c.Provider, c.User, c.Organization)
}

// info is HPKE's context info for c: JSON of a fixed struct, so each field is quoted
// and escaped (unambiguous) and the format is versioned.
func (c Context) info() []byte {
	b, err := json.Marshal(struct {
		Format       string `json:"format"`
		Namespace    string `json:"namespace"`
		Name         string `json:"name"`
		Provider     string `json:"provider"`
		User         string `json:"user"`
		Organization string `json:"organization"`
	}{contextFormat, c.Namespace, c.Name, c.Provider, c.User, c.Organization})
	if err != nil {
		panic(err) // strings always marshal
	}
	return b
}

func (c Context) hint() []byte {
	sum := sha256.Sum256(c.info())
	return sum[:hintSize]
}

// Seal encrypts plaintext for the account described by c with the published public
// keyset (the JSON held in the public-keyset ConfigMap), under its primary key. It
// returns the value for spec.apiKey.sealed.
func Seal(publicKeyset []byte, plaintext []byte, c Context) (string, error) {
	if len(plaintext) == 0 || len(plaintext) > maxKeyLength {
		return "", fmt.Errorf("sealing: the key must be 1 to %d bytes long", maxKeyLength)
	}
	h, err := ParsePublicKeyset(publicKeyset)
	if err != nil {
		return "", err
	}
	enc, err := hybrid.NewHybridEncrypt(h)
	if err != nil {
		return "", fmt.Errorf("sealing: %w", err)
	}
	ct, err := enc.Encrypt(plaintext, c.info())
	if err != nil {
		return "", fmt.Errorf("sealing: encrypt: %w", err)
	}
	return Prefix + base64.StdEncoding.EncodeToString(append(c.hint(), ct...)), nil
}

// ParsePublicKeyset reads a public keyset as published, refusing anything but HPKE
// X25519 / AES-256-GCM keys with Tink's key-id prefix, and any private key material.
func ParsePublicKeyset(publicKeyset []byte) (*keyset.Handle, error) {
	h, err := keyset.ReadWithNoSecrets(keyset.NewJSONReader(bytes.NewReader(bytes.TrimSpace(publicKeyset))))
	if err != nil {
		return nil, fmt.Errorf("sealing: not a public Tink JSON keyset (the %s ConfigMap's data): %w", "pipes-sealing-public-keyset", err)
	}
	for i := range h.Len() {
		e, err := h.Entry(i)
		if err != nil {
			return nil, fmt.Errorf("sealing: public keyset entry %d: %w", i, err)
		}
		k, ok := e.Key().(*hpke.PublicKey)
		if !ok {
			return nil, fmt.Errorf("sealing: public keyset key %d is %T, want an HPKE public key", e.KeyID(), e.Key())
		}
		if err := checkParameters(e.KeyID(), k.Parameters()); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func checkParameters(id uint32, p any) error {
	hp, ok := p.(*hpke.Parameters)
	if !ok || hp.KEMID() != hpke.DHKEM_X25519_HKDF_SHA256 || hp.KDFID() != hpke.HKDFSHA256 || hp.AEADID() != hpke.AES256GCM || hp.Variant() != hpke.VariantTink {
		return fmt.Errorf("sealing: key %d is not HPKE DHKEM-X25519/HKDF-SHA256/AES-256-GCM with a Tink prefix", id)
	}
	return nil
}

// Sealed is a sealed value taken apart; it holds no plaintext.
type Sealed struct {
	hint       []byte
	ciphertext []byte
	// KeyID is the sealing key it was sealed with (from Tink's output prefix).
	KeyID uint32
}

// Parse takes a sealed value apart without opening it ([ErrMalformed] if it is not one).
func Parse(value string) (Sealed, error) {
	rest, ok := strings.CutPrefix(value, Prefix)
	if !ok || len(value) > MaxSealedLength {
		return Sealed{}, ErrMalformed
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) < MinPayload || b[hintSize] != 1 {
		return Sealed{}, ErrMalformed
	}
	return Sealed{hint: b[:hintSize], ciphertext: b[hintSize:], KeyID: binary.BigEndian.Uint32(b[hintSize+1:])}, nil
}

// KeyIDOf is the id of the sealing key value was sealed with.
func KeyIDOf(value string) (uint32, error) {
	s, err := Parse(value)
	return s.KeyID, err
}

// boundTo reports whether s was sealed for c, by its hint (not a security check:
// only the decryption is).
func (s Sealed) boundTo(c Context) bool { return bytes.Equal(s.hint, c.hint()) }
