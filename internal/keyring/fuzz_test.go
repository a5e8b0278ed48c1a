package keyring

import (
	"bytes"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// FuzzFromSecret reads arbitrary data of a keyset Secret as each kind of keyset kept in
// one (key-encryption, sealing, widget signing): no panic, and an error naming the
// Secret rather than quoting its data (secret key material); a keyset that parses is
// written back into a Secret that parses to the same keys.
func FuzzFromSecret(f *testing.F) {
	kek, err := KEK.New()
	if err != nil {
		f.Fatal(err)
	}
	sealingKeys, err := Sealing.New()
	if err != nil {
		f.Fatal(err)
	}
	widgetKeys, err := WidgetSigning.New()
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []interface{ MarshalJSON() ([]byte, error) }{kek, sealingKeys, widgetKeys} {
		raw, err := m.MarshalJSON()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(SecretKey, raw)
		f.Add(SecretKey, raw[:len(raw)-2])
		f.Add("other.json", raw)
	}
	f.Add(SecretKey, bytes.Repeat([]byte("{\"a\":"), 20_000))
	f.Add(SecretKey, []byte("\xff\xfe\xfd"))
	f.Add(SecretKey, []byte(`{"primaryKeyId":-1,"key":null}`))
	f.Add(SecretKey, []byte{})
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "pipes-system", Name: "pipes-keyset"}, Data: map[string][]byte{key: data}}
		fromSecret(t, KEK, s, data)
		fromSecret(t, Sealing, s, data)
		fromSecret(t, WidgetSigning, s, data)
	})
}

func fromSecret[K Material[K]](t *testing.T, kind Kind[K], s *corev1.Secret, data []byte) {
	t.Helper()
	ks, err := kind.FromSecret(s)
	if err != nil {
		if len(data) >= 16 && bytes.Contains([]byte(err.Error()), data) {
			t.Fatalf("%s: the error quotes the Secret's data: %v", kind.What, err)
		}
		if !bytes.Contains([]byte(err.Error()), []byte("pipes-system/pipes-keyset")) {
			t.Fatalf("%s: the error does not name the Secret: %v", kind.What, err)
		}
		return
	}
	out, err := kind.Secret(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, ks, s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := kind.FromSecret(out)
	if err != nil {
		t.Fatalf("%s: the Secret written from a parsed keyset does not parse: %v", kind.What, err)
	}
	if again.PrimaryKeyID() != ks.PrimaryKeyID() || !slices.Equal(again.KeyIDs(), ks.KeyIDs()) {
		t.Fatalf("%s: keys changed in a round trip", kind.What)
	}
}
