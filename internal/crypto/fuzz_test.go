package crypto

import (
	"bytes"
	"errors"
	"slices"
	"strings"
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

// FuzzParseKeyset feeds ParseKeyset, which reads the --keyset-file and the pipes-keyset
// Secret, arbitrary bytes: no panic; an error never quotes the input (secret key
// material); a keyset that parses marshals back to one with the same keys, that opens
// what it seals.
func FuzzParseKeyset(f *testing.F) {
	k, err := NewKeyset()
	if err != nil {
		f.Fatal(err)
	}
	good, err := k.MarshalJSON()
	if err != nil {
		f.Fatal(err)
	}
	rotated, err := k.Rotate()
	if err != nil {
		f.Fatal(err)
	}
	two, err := rotated.MarshalJSON()
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{
		good, two, good[:len(good)/2], bytes.Repeat([]byte("["), 100_000), []byte(`{"encryptedKeyset":"AAAA"}`),
		[]byte(`{"primaryKeyId":1,"primaryKeyId":2,"key":[]}`), []byte(`{"primaryKeyId":99999999999999999999,"key":[]}`),
		[]byte(`{"primaryKeyId":1,"key":[{"keyData":{"typeUrl":"type.googleapis.com/google.crypto.tink.AesGcmKey","value":"GhAAAAAAAAAAAAAAAAAAAAAA","keyMaterialType":"SYMMETRIC"},"status":"ENABLED","keyId":1,"outputPrefixType":"TINK"}]}`),
		[]byte("\xff\xfe\x00{"), {}, []byte("   \n"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ks, err := ParseKeyset(in)
		if err != nil {
			if len(in) >= 16 && strings.Contains(err.Error(), string(in)) {
				t.Fatalf("the error quotes the input: %v", err)
			}
			return
		}
		out, err := ks.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseKeyset(out)
		if err != nil {
			t.Fatalf("a parsed keyset does not parse once marshalled: %v", err)
		}
		if again.PrimaryKeyID() != ks.PrimaryKeyID() || !slices.Equal(again.KeyIDs(), ks.KeyIDs()) {
			t.Fatalf("keys changed in a round trip: %v/%d, then %v/%d", ks.KeyIDs(), ks.PrimaryKeyID(), again.KeyIDs(), again.PrimaryKeyID())
		}
		s := NewSealer(ks)
		sealed, err := s.Seal(apiKey64, testBinding)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := NewSealer(again).Open(sealed.Ciphertext, testBinding); err != nil || !bytes.Equal(pt, apiKey64) {
			t.Fatalf("the round-tripped keyset does not open what the original sealed: %v", err)
		}
	})
}
