package crypto

import (
	"bytes"
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
	b := Binding{Namespace: "ns", Name: "n", UID: "u", Field: "f"}
	want := []byte("\x0cpipes.dev/v1\x02ns\x01n\x01u\x01f")
	if got := b.AssociatedData(); !bytes.Equal(got, want) {
		t.Errorf("AssociatedData() = %q, want %q", got, want)
	}
	if !bytes.Equal(b.AssociatedData(), b.AssociatedData()) {
		t.Error("AssociatedData is not deterministic")
	}
}
