package crypto

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tink-crypto/tink-go/v2/tink"
)

func TestSealOpenRoundTrip(t *testing.T) {
	k := mustKeyset(t)
	s := NewSealer(k)
	tests := []struct {
		name      string
		plaintext []byte
	}{
		{"64-byte api key", apiKey64},
		{"empty", []byte{}},
		{"one byte", []byte{0}},
		{"utf-8", []byte("clé-🔑-секрет")},
		{"64 KiB", bytes.Repeat([]byte("0123456789abcdef"), 4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed := mustSeal(t, s, tt.plaintext, testBinding)
			if sealed.KeyID != k.PrimaryKeyID() {
				t.Errorf("Sealed.KeyID = %d, want keyset primary %d", sealed.KeyID, k.PrimaryKeyID())
			}
			if got := wrappingKeyID(t, sealed.Ciphertext); got != sealed.KeyID {
				t.Errorf("data key wrapped by key %d, Sealed.KeyID says %d", got, sealed.KeyID)
			}
			// Shorter plaintexts can occur in random bytes by chance.
			if len(tt.plaintext) >= 8 && bytes.Contains(sealed.Ciphertext, tt.plaintext) {
				t.Error("ciphertext contains the plaintext")
			}
			got, err := s.Open(sealed.Ciphertext, testBinding)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open = %q, want %q", got, tt.plaintext)
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	k := mustKeyset(t)
	s := NewSealer(k)
	a := mustSeal(t, s, apiKey64, testBinding)
	b := mustSeal(t, s, apiKey64, testBinding)
	if bytes.Equal(a.Ciphertext, b.Ciphertext) {
		t.Fatal("two Seals of the same plaintext gave the same ciphertext")
	}
	// Each credential must get its own data key, not just a fresh nonce.
	if bytes.Equal(unwrapDEK(t, k, a.Ciphertext), unwrapDEK(t, k, b.Ciphertext)) {
		t.Error("two Seals used the same data key")
	}
}

func TestOpenBindingMismatch(t *testing.T) {
	s := NewSealer(mustKeyset(t))
	sealed := mustSeal(t, s, apiKey64, testBinding)

	changed := func(f func(*Binding)) Binding {
		b := testBinding
		f(&b)
		return b
	}
	tests := []struct {
		name string
		b    Binding
	}{
		{"namespace", changed(func(b *Binding) { b.Namespace = "team-b" })},
		{"name", changed(func(b *Binding) { b.Name = "anthropic" })},
		{"uid (object re-created)", changed(func(b *Binding) { b.UID = "00000000-0000-0000-0000-000000000000" })},
		{"field", changed(func(b *Binding) { b.Field = "orgID" })},
		{"empty binding", Binding{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := s.Open(sealed.Ciphertext, tt.b)
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("Open with %+v: err = %v, want ErrDecrypt", tt.b, err)
			}
			if pt != nil {
				t.Errorf("Open returned plaintext %q alongside an error", pt)
			}
			assertNoLeak(t, err.Error(), apiKey64, sealed.Ciphertext)
		})
	}
}

func TestOpenTampered(t *testing.T) {
	s := NewSealer(mustKeyset(t))
	sealed := mustSeal(t, s, apiKey64, testBinding)
	ct := sealed.Ciphertext

	check := func(t *testing.T, what string, bad []byte) {
		t.Helper()
		pt, err := s.Open(bad, testBinding)
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("%s: err = %v, want ErrDecrypt", what, err)
		}
		if pt != nil {
			t.Fatalf("%s: got plaintext alongside an error", what)
		}
		assertNoLeak(t, err.Error(), apiKey64, ct)
	}

	t.Run("bit flips", func(t *testing.T) {
		for i := range ct {
			for bit := range 8 {
				bad := bytes.Clone(ct)
				bad[i] ^= 1 << bit
				check(t, "flip byte "+strconv.Itoa(i), bad)
			}
		}
	})
	t.Run("truncations", func(t *testing.T) {
		for n := range len(ct) {
			check(t, "truncate to "+strconv.Itoa(n), bytes.Clone(ct[:n]))
		}
	})
	t.Run("drop leading bytes", func(t *testing.T) {
		for n := 1; n < len(ct); n++ {
			check(t, "drop first "+strconv.Itoa(n), bytes.Clone(ct[n:]))
		}
	})
	t.Run("extensions", func(t *testing.T) {
		check(t, "one byte appended", append(bytes.Clone(ct), 0))
		check(t, "doubled", append(bytes.Clone(ct), ct...))
	})
	t.Run("empty and nil", func(t *testing.T) {
		check(t, "nil", nil)
		check(t, "empty", []byte{})
	})
	t.Run("other keyset", func(t *testing.T) {
		other := NewSealer(mustKeyset(t))
		pt, err := other.Open(ct, testBinding)
		if !errors.Is(err, ErrDecrypt) || pt != nil {
			t.Fatalf("Open under an unrelated keyset: pt=%q err=%v, want ErrDecrypt", pt, err)
		}
	})
	// The original must still open: the loops above must not have mutated it.
	if _, err := s.Open(ct, testBinding); err != nil {
		t.Fatalf("original ciphertext no longer opens: %v", err)
	}
}

// leakyKEK is a KEK whose errors echo secrets, standing in for a careless KMS
// client. Open must not pass such errors on.
type leakyKEK struct{ inner *Keyset }

const leakedSecret = "KMS-ECHOED-SECRET"

func (l leakyKEK) AEAD() tink.AEAD      { return leakyAEAD{l.inner.AEAD()} }
func (l leakyKEK) PrimaryKeyID() uint32 { return l.inner.PrimaryKeyID() }

type leakyAEAD struct{ tink.AEAD }

func (leakyAEAD) Decrypt(ct, _ []byte) ([]byte, error) {
	return nil, errors.New("decrypt failed for " + leakedSecret + string(ct))
}

func TestOpenDoesNotPropagateKEKErrors(t *testing.T) {
	k := mustKeyset(t)
	sealed := mustSeal(t, NewSealer(k), apiKey64, testBinding)
	_, err := NewSealer(leakyKEK{k}).Open(sealed.Ciphertext, testBinding)
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("err = %v, want ErrDecrypt", err)
	}
	if strings.Contains(err.Error(), leakedSecret) {
		t.Errorf("Open passed the KEK's error text through: %q", err)
	}
	assertNoLeak(t, err.Error(), apiKey64, sealed.Ciphertext)
}

type failingKEK struct{}

func (failingKEK) AEAD() tink.AEAD      { return failingAEAD{} }
func (failingKEK) PrimaryKeyID() uint32 { return 7 }

type failingAEAD struct{}

func (failingAEAD) Encrypt(_, _ []byte) ([]byte, error) { return nil, errors.New("kms unavailable") }
func (failingAEAD) Decrypt(_, _ []byte) ([]byte, error) { return nil, errors.New("kms unavailable") }

func TestSealKEKFailure(t *testing.T) {
	s := NewSealer(failingKEK{})
	sealed, err := s.Seal(apiKey64, testBinding)
	if err == nil {
		t.Fatal("Seal succeeded with a failing KEK")
	}
	if sealed.Ciphertext != nil {
		t.Error("Seal returned a ciphertext alongside an error")
	}
	if !strings.Contains(err.Error(), "kms unavailable") {
		t.Errorf("Seal error %q lost the KEK's cause", err)
	}
	assertNoLeak(t, err.Error(), apiKey64, nil)
	if s.PrimaryKeyID() != 7 {
		t.Errorf("PrimaryKeyID = %d, want 7", s.PrimaryKeyID())
	}
}

func TestNewSealerNilPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewSealer(nil) did not panic")
		}
	}()
	NewSealer(nil)
}

func TestSealerConcurrent(t *testing.T) {
	s := NewSealer(mustKeyset(t))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			b := testBinding
			b.Field = "f" + strconv.Itoa(g)
			for range 50 {
				sealed, err := s.Seal(apiKey64, b)
				if err != nil {
					errs <- err
					return
				}
				pt, err := s.Open(sealed.Ciphertext, b)
				if err != nil || !bytes.Equal(pt, apiKey64) {
					errs <- errors.New("concurrent round trip failed")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
