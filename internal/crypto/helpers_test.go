package crypto

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// apiKey64 is a 64-byte stand-in for a third-party API key.
var apiKey64 = []byte("sk-live-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU")

var testBinding = Binding{Namespace: "team-a", Name: "openai", UID: "8d0c6f2e-1b7a-4a8e-9a55-3f0b3c1d2e4f", Field: "apiKey"}

func mustKeyset(t testing.TB) *Keyset {
	t.Helper()
	k, err := NewKeyset()
	if err != nil {
		t.Fatalf("NewKeyset: %v", err)
	}
	return k
}

func mustRotate(t testing.TB, k *Keyset) *Keyset {
	t.Helper()
	r, err := k.Rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return r
}

func mustSeal(t testing.TB, s *Sealer, pt []byte, b Binding) Sealed {
	t.Helper()
	sealed, err := s.Seal(pt, b)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return sealed
}

// wrappingKeyID reads the KEK key id out of a KMS-envelope ciphertext whose
// KEK is a Tink-prefixed keyset: 4-byte wrapped-DEK length, then the wrapped
// DEK, which starts with the Tink prefix 0x01 || key id. It lets tests check
// Sealed.KeyID against what actually wrapped the data key.
func wrappingKeyID(t *testing.T, ct []byte) uint32 {
	t.Helper()
	if len(ct) < 9 || ct[4] != 0x01 {
		t.Fatalf("ciphertext does not look like an envelope with a Tink-prefixed wrapped DEK")
	}
	id := binary.BigEndian.Uint32(ct[5:9])
	if got, err := KeyIDOf(ct); err != nil || got != id {
		t.Fatalf("KeyIDOf = %d, %v; want %d", got, err, id)
	}
	return id
}

// assertNoLeak fails if msg contains the plaintext or the ciphertext in any
// obvious encoding.
func assertNoLeak(t *testing.T, msg string, plaintext, ciphertext []byte) {
	t.Helper()
	if len(plaintext) > 0 && strings.Contains(msg, string(plaintext)) {
		t.Errorf("error message contains the plaintext: %q", msg)
	}
	if len(ciphertext) >= 8 {
		for _, enc := range []string{
			string(ciphertext),
			hex.EncodeToString(ciphertext[:8]),
			base64.StdEncoding.EncodeToString(ciphertext[:6]),
		} {
			if strings.Contains(msg, enc) {
				t.Errorf("error message contains ciphertext bytes: %q", msg)
			}
		}
	}
}

// unwrapDEK returns the (serialized) data key of an envelope ciphertext by
// unwrapping it with the KEK, the way Tink's envelope AEAD does.
func unwrapDEK(t *testing.T, kek *Keyset, ct []byte) []byte {
	t.Helper()
	if len(ct) < 4 {
		t.Fatal("ciphertext too short")
	}
	n := int(binary.BigEndian.Uint32(ct[:4]))
	if n > len(ct)-4 {
		t.Fatal("wrapped data key length out of range")
	}
	dek, err := kek.AEAD().Decrypt(ct[4:4+n], []byte{})
	if err != nil {
		t.Fatalf("unwrap data key: %v", err)
	}
	return dek
}
