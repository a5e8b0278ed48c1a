package credential

import (
	"context"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
)

// KeyUsage, which prune trusts, reads the key id from the ciphertext: an annotation
// edited to name the primary key must not make the key that really wraps it look unused.
func TestKeyUsageReadsTheCiphertextNotTheAnnotation(t *testing.T) {
	old, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := old.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := crypto.NewSealer(old).Seal([]byte("sk-under-the-old-key"), crypto.Binding{Name: "a", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "a-credential",
			Labels: map[string]string{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: ComponentCredential},
			// Claims the new primary: someone who may write the Secret edited it.
			Annotations: map[string]string{pipesv1.AnnotationKeyID: ""}},
		Data: map[string][]byte{pipesv1.CredentialCiphertextKey: sealed.Ciphertext},
	}
	secret.Annotations[pipesv1.AnnotationKeyID] = strconv.FormatUint(uint64(rotated.PrimaryKeyID()), 10)
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(secret).Build()
	usage, err := KeyUsage(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if usage[old.PrimaryKeyID()] != 1 || len(usage) != 1 {
		t.Fatalf("usage %v; want one credential on key %d (the primary is now %d)", usage, old.PrimaryKeyID(), rotated.PrimaryKeyID())
	}
}
