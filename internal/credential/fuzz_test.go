package credential

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
)

// FuzzOpenSecret reads a credential Secret whose annotations (version, key id, rotation
// and expiry times, last four) and ciphertext are arbitrary, as anyone who can edit
// Secrets could leave them: Describe never panics, and Open either opens the genuine
// ciphertext at its genuine version or fails with ErrDecrypt or ErrRolledBack; never a
// panic, never another plaintext.
func FuzzOpenSecret(f *testing.F) {
	kek, err := crypto.NewKeyset()
	if err != nil {
		f.Fatal(err)
	}
	store := NewStore(nil, keyring.New(kek))
	ca := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "openai-u", UID: "uid-1"}}
	ca.Status.CredentialVersion = 2
	const key = "sk-genuine-credential-0001"
	sealed, err := crypto.NewSealer(kek).Seal([]byte(key), Binding(ca, 3))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []struct {
		version, keyID, rotated, expiry, reauth string
		ciphertext                              []byte
	}{
		{"3", "1", "2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05Z", "", sealed.Ciphertext},
		{"2", "1", "", "", "", sealed.Ciphertext},
		{"1", "", "", "", "", sealed.Ciphertext},
		{"-1", "-1", "yesterday", "0000-00-00T00:00:00Z", "9999-12-31T23:59:60Z", sealed.Ciphertext},
		{"99999999999999999999", "4294967296", "2026-13-45T99:99:99Z", "", "", nil},
		{"9223372036854775807", "4294967295", "", "", "", sealed.Ciphertext[:len(sealed.Ciphertext)-1]},
		{"+3", " 1", "\xff", "\x00", "", []byte{0, 0, 0, 1}},
		{"0x3", "1e3", "", "", "", []byte{}},
	} {
		f.Add(seed.version, seed.keyID, seed.rotated, seed.expiry, seed.reauth, seed.ciphertext)
	}
	f.Fuzz(func(t *testing.T, version, keyID, rotated, expiry, reauth string, ciphertext []byte) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: SecretName(ca), Annotations: map[string]string{
			pipesv1.AnnotationCredentialVersion: version, pipesv1.AnnotationKeyID: keyID, pipesv1.AnnotationRotatedAt: rotated,
			pipesv1.AnnotationTokenExpiry: expiry, pipesv1.AnnotationNeedsReauthorization: reauth, pipesv1.AnnotationAPIKeyLast4: version,
		}}, Data: map[string][]byte{pipesv1.CredentialCiphertextKey: ciphertext}}
		d := Describe(s)
		if d.Version < 0 && version != "" && version[0] != '-' {
			t.Fatalf("version %q read as %d", version, d.Version)
		}
		_ = d.RotatedAt.Add(time.Second)
		pt, err := store.Open(ca, s)
		switch {
		case err == nil:
			if string(pt) != key || d.Version != 3 {
				t.Fatalf("opened %d bytes at version %d", len(pt), d.Version)
			}
		case errors.Is(err, ErrRolledBack):
			if d.Version >= ca.Status.CredentialVersion {
				t.Fatalf("version %d refused as rolled back", d.Version)
			}
		case errors.Is(err, crypto.ErrDecrypt):
		default:
			t.Fatalf("Open: %v", err)
		}
	})
}
