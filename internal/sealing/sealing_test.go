package sealing

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

var alice = Context{Namespace: "team-a", Name: "openai-alice", Provider: "openai", User: "alice"}

func testKeyset(t testing.TB) (*Keyset, []byte) {
	t.Helper()
	ks, err := NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ks.PublicKeysetJSON()
	if err != nil {
		t.Fatal(err)
	}
	return ks, pub
}

func TestSealOpensOnlyForTheSameAccount(t *testing.T) {
	ks, pub := testKeyset(t)
	key := []byte("sk-live-0123456789abcd")
	sealed, err := Seal(pub, key, alice)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sealed, Prefix) || len(sealed) < MinSealedLength || len(sealed) > MaxSealedLength {
		t.Fatalf("sealed value %q: want %s prefix and %d..%d characters", sealed, Prefix, MinSealedLength, MaxSealedLength)
	}
	if strings.Contains(sealed, string(key)) {
		t.Fatal("sealed value contains the key")
	}
	got, err := ks.Open(sealed, alice)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("open: %q, %v", got, err)
	}
	if id, err := KeyIDOf(sealed); err != nil || id != ks.PrimaryKeyID() {
		t.Fatalf("KeyIDOf: %d, %v; want %d", id, err, ks.PrimaryKeyID())
	}
	for name, other := range map[string]Context{
		"name":         {alice.Namespace, "openai-bob", alice.Provider, alice.User, ""},
		"namespace":    {"team-b", alice.Name, alice.Provider, alice.User, ""},
		"provider":     {alice.Namespace, alice.Name, "github", alice.User, ""},
		"user":         {alice.Namespace, alice.Name, alice.Provider, "bob", ""},
		"organization": {alice.Namespace, alice.Name, alice.Provider, alice.User, "acme"},
		// Field boundaries cannot be shifted: the context info is JSON.
		"shifted": {alice.Namespace + `","name":"`, alice.Name, alice.Provider, alice.User, ""},
	} {
		if _, err := ks.Open(sealed, other); !errors.Is(err, ErrOtherAccount) {
			t.Errorf("another %s: err %v, want ErrOtherAccount", name, err)
		}
	}
}

func TestOpenTellsCorruptedFromForeign(t *testing.T) {
	ks, pub := testKeyset(t)
	sealed, err := Seal(pub, []byte("sk-0123456789abcdef"), alice)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, Prefix))
	raw[len(raw)-1] ^= 1
	flipped := Prefix + base64.StdEncoding.EncodeToString(raw)
	if _, err := ks.Open(flipped, alice); !errors.Is(err, ErrDecrypt) {
		t.Errorf("flipped bit: %v, want ErrDecrypt", err)
	}
	for _, bad := range []string{"", "v1:", "v2:" + strings.TrimPrefix(sealed, Prefix), sealed[:40], sealed + "!", "v1:" + strings.Repeat("A", MaxSealedLength)} {
		if _, err := ks.Open(bad, alice); !errors.Is(err, ErrMalformed) {
			t.Errorf("%.20q…: %v, want ErrMalformed", bad, err)
		}
	}
	other, _ := testKeyset(t) // another cluster's operator
	if _, err := other.Open(sealed, alice); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("another cluster: %v, want ErrUnknownKey", err)
	}
}

func TestRotateAndPrune(t *testing.T) {
	ks, pub := testKeyset(t)
	old, err := Seal(pub, []byte("sk-old-0123456789"), alice)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := ks.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	opener := NewOpener(ks)
	if !opener.Update(rotated) {
		t.Fatal("Update must report the primary change")
	}
	pub2, err := rotated.PublicKeysetJSON()
	if err != nil {
		t.Fatal(err)
	}
	again, err := rotated.PublicKeysetJSON()
	if err != nil || !bytes.Equal(pub2, again) {
		t.Fatal("the public keyset must be the same bytes each time")
	}
	fresh, err := Seal(pub2, []byte("sk-new-0123456789"), alice)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := KeyIDOf(fresh); id != rotated.PrimaryKeyID() || id == ks.PrimaryKeyID() {
		t.Fatalf("new seals must use the new primary %d, got %d", rotated.PrimaryKeyID(), id)
	}
	if _, err := opener.Open(old, alice); err != nil {
		t.Fatalf("a value sealed before the rotation must still open: %v", err)
	}
	pruned, removed, err := rotated.Prune(func(uint32) bool { return false })
	if err != nil || len(removed) != 1 || removed[0] != ks.PrimaryKeyID() {
		t.Fatalf("prune: %v, %v", removed, err)
	}
	opener.Update(pruned)
	if _, err := opener.Open(old, alice); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("after prune: %v, want ErrUnknownKey", err)
	}
	if _, err := opener.Open(fresh, alice); err != nil {
		t.Fatal(err)
	}
	// The private keyset round-trips; the public one is refused as a private one and
	// the private one as a public one.
	raw, err := pruned.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if back, err := ParseKeyset(raw); err != nil || back.PrimaryKeyID() != pruned.PrimaryKeyID() {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParsePublicKeyset(raw); err == nil {
		t.Fatal("a private keyset must not be accepted as the public one")
	}
	if _, err := ParseKeyset(pub2); err == nil {
		t.Fatal("a public keyset must not parse as the private one")
	}
}

func FuzzOpen(f *testing.F) {
	ks, pub := testKeyset(f)
	sealed, _ := Seal(pub, []byte("sk-0123456789abcdef"), alice)
	f.Add(sealed)
	f.Add("v1:AAAA")
	f.Add(sealed[:len(sealed)-4] + "AAA=")
	f.Add(strings.Replace(sealed, "A", "B", 1))
	f.Fuzz(func(t *testing.T, value string) {
		pt, err := ks.Open(value, alice)
		if err == nil {
			if value != sealed || string(pt) != "sk-0123456789abcdef" {
				t.Fatalf("a value never sealed opens: %q", pt)
			}
			return
		}
		known := false
		for _, e := range []error{ErrMalformed, ErrOtherAccount, ErrUnknownKey, ErrDecrypt} {
			known = known || errors.Is(err, e)
		}
		if !known || pt != nil {
			t.Fatalf("Open: %v (plaintext %d bytes), want one of the documented errors", err, len(pt))
		}
		if len(value) >= 16 && strings.Contains(err.Error(), value[len(Prefix):]) {
			t.Fatalf("the error quotes the sealed value: %v", err)
		}
	})
}

// FuzzParse takes arbitrary spec.apiKey.sealed values apart: no panic; what is not a
// sealed value is ErrMalformed, whose message quotes nothing; what parses has the key
// id KeyIDOf reports, and one character more or less never turns a rejected value into
// one that opens.
func FuzzParse(f *testing.F) {
	ks, pub := testKeyset(f)
	sealed, err := Seal(pub, []byte("sk-0123456789abcdef"), alice)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{sealed, sealed[:len(sealed)-1], sealed + "=", Prefix, Prefix + "====", "v2:" + sealed[len(Prefix):],
		Prefix + strings.Repeat("A", MaxSealedLength), Prefix + "\xff\xfe", Prefix + strings.Repeat("AAAA", MinPayload/3+1), ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		s, err := Parse(value)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || err.Error() != ErrMalformed.Error() {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if _, err := ks.Open(value, alice); err == nil {
				t.Fatal("a value Parse rejects opens")
			}
			return
		}
		if id, err := KeyIDOf(value); err != nil || id != s.KeyID {
			t.Fatalf("KeyIDOf = %d, %v; Parse said %d", id, err, s.KeyID)
		}
		if pt, err := ks.Open(value, alice); err == nil && value != sealed {
			t.Fatalf("a value never sealed opens: %q", pt)
		}
	})
}

// FuzzParsePublicKeyset reads arbitrary bytes as the published public keyset (what
// kubectl pipes seal reads from the ConfigMap or a file): no panic; a keyset it accepts
// seals values that parse, naming one of its keys.
func FuzzParsePublicKeyset(f *testing.F) {
	ks, pub := testKeyset(f)
	private, err := ks.MarshalJSON()
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{pub, private, pub[:len(pub)/2], []byte(strings.Repeat("[", 100_000)), []byte("\xff{}"), {}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParsePublicKeyset(in)
		if err != nil {
			if _, err := Seal(in, []byte("sk-x"), alice); err == nil {
				t.Fatal("Seal accepts a public keyset ParsePublicKeyset refuses")
			}
			return
		}
		value, err := Seal(in, []byte("sk-0123456789abcdef"), alice)
		if err != nil {
			t.Fatalf("an accepted public keyset does not seal: %v", err)
		}
		s, err := Parse(value)
		if err != nil {
			t.Fatalf("a sealed value does not parse: %v", err)
		}
		if s.KeyID != h.KeysetInfo().GetPrimaryKeyId() {
			t.Fatalf("sealed with key %d, the primary is %d", s.KeyID, h.KeysetInfo().GetPrimaryKeyId())
		}
	})
}
