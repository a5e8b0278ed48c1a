package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzOpen(f *testing.F) {
	k, err := NewKeyset()
	if err != nil {
		f.Fatal(err)
	}
	s := NewSealer(k)
	sealed, err := s.Seal(apiKey64, testBinding)
	if err != nil {
		f.Fatal(err)
	}
	ct := sealed.Ciphertext

	f.Add(ct, testBinding.Field)
	f.Add(ct, "other")
	f.Add(ct[:len(ct)-1], testBinding.Field)
	f.Add(ct[:9], testBinding.Field)
	f.Add([]byte{}, "")
	f.Add([]byte{0, 0, 0, 0}, "")
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, "")
	f.Add([]byte{0, 0, 0, 1, 1}, testBinding.Field)

	f.Fuzz(func(t *testing.T, in []byte, field string) {
		b := testBinding
		b.Field = field
		pt, err := s.Open(in, b)
		if err == nil {
			// Only the genuine ciphertext under its own binding may open;
			// anything else would be a forgery.
			if !bytes.Equal(in, ct) || field != testBinding.Field || !bytes.Equal(pt, apiKey64) {
				t.Fatalf("Open accepted a ciphertext it never produced (field %q)", field)
			}
			return
		}
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("err = %v, want ErrDecrypt", err)
		}
		if pt != nil {
			t.Fatal("Open returned plaintext alongside an error")
		}
		if err.Error() != ErrDecrypt.Error() {
			t.Fatalf("error message %q carries more than ErrDecrypt", err)
		}
	})
}
