package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func TestAssociatedDataUnambiguous(t *testing.T) {
	tests := []struct {
		name string
		a, b Binding
	}{
		{"namespace/name boundary", Binding{Namespace: "a", Name: "bc"}, Binding{Namespace: "ab", Name: "c"}},
		{"name/uid boundary", Binding{Name: "a", UID: "bc"}, Binding{Name: "ab", UID: "c"}},
		{"uid/field boundary", Binding{UID: "a", Field: "bc"}, Binding{UID: "ab", Field: "c"}},
		{"value moved between fields", Binding{Namespace: "x"}, Binding{Field: "x"}},
		{"namespace vs name", Binding{Namespace: "x"}, Binding{Name: "x"}},
		{"empty vs set", Binding{}, Binding{Field: "apiKey"}},
		{"separator-like content", Binding{Namespace: "a/b", Name: "c"}, Binding{Namespace: "a", Name: "b/c"}},
		{"length byte smuggled into value", Binding{Namespace: "a\x01b"}, Binding{Namespace: "a", Name: "b"}},
		{"older version", Binding{Name: "a", Version: 1}, Binding{Name: "a", Version: 2}},
		{"differs in one field only", testBinding, Binding{Namespace: testBinding.Namespace, Name: testBinding.Name, UID: testBinding.UID, Field: "apiKeyX"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if bytes.Equal(tt.a.AssociatedData(), tt.b.AssociatedData()) {
				t.Errorf("%+v and %+v have the same associated data %q", tt.a, tt.b, tt.a.AssociatedData())
			}
		})
	}
}

func TestAssociatedDataStable(t *testing.T) {
	// The encoding is persisted implicitly in every ciphertext: changing it
	// makes all stored credentials undecryptable, so pin it.
	b := Binding{Namespace: "ns", Name: "n", UID: "u", Field: "f", Version: 12}
	want := []byte("\x0cpipes.dev/v2\x02ns\x01n\x01u\x01f\x0212")
	if got := b.AssociatedData(); !bytes.Equal(got, want) {
		t.Errorf("AssociatedData() = %q, want %q", got, want)
	}
	if !bytes.Equal(b.AssociatedData(), b.AssociatedData()) {
		t.Error("AssociatedData is not deterministic")
	}
}

func TestKeyIDOfRejectsWhatSealDoesNotMake(t *testing.T) {
	sealed := mustSeal(t, NewSealer(mustKeyset(t)), apiKey64, testBinding)
	for name, ct := range map[string][]byte{
		"empty":               nil,
		"too short":           sealed.Ciphertext[:8],
		"length beyond end":   append([]byte{0xff, 0xff, 0xff, 0xff}, sealed.Ciphertext[4:]...),
		"no Tink prefix":      append(append([]byte{}, sealed.Ciphertext[:4]...), append([]byte{0}, sealed.Ciphertext[5:]...)...),
		"length under prefix": append([]byte{0, 0, 0, 2}, sealed.Ciphertext[4:]...),
	} {
		if id, err := KeyIDOf(ct); err == nil {
			t.Errorf("%s: KeyIDOf = %d, want an error", name, id)
		}
	}
}

func TestOpenRefusesAnotherVersion(t *testing.T) {
	s := NewSealer(mustKeyset(t))
	v1 := testBinding
	v1.Version = 1
	sealed := mustSeal(t, s, apiKey64, v1)
	v2 := v1
	v2.Version = 2
	if _, err := s.Open(sealed.Ciphertext, v2); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("a version-1 ciphertext opened as version 2: err = %v", err)
	}
}
