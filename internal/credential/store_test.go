package credential

import (
	"context"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
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

// A reconcile that does not find an account in its cache removes its credential Secret
// as an orphan only once the API server confirms the account is gone: a new account can
// reach a cache after its Secret does (seen in CI: a live account's key was deleted).
func TestDeleteOrphanConfirmsTheAccountIsGone(t *testing.T) {
	ctx := context.Background()
	ks, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	ca := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "openai-u", UID: "uid-1"}}
	sch := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(sch)
	_ = pipesv1.AddToScheme(sch)
	apiServer := fake.NewClientBuilder().WithScheme(sch).WithObjects(ca.DeepCopy()).Build()
	store := NewStore(apiServer, keysFor(ks))
	if _, err := store.Put(ctx, ca, nil, []byte("sk-live-account-key-0001"), Stored{Version: 1}); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ca.Namespace, Name: ca.Name}
	if gone, err := store.DeleteOrphan(ctx, apiServer, key); err != nil || gone != nil {
		t.Fatalf("a live account's Secret was taken for an orphan: %v %v", gone, err)
	}
	if s, err := store.Get(ctx, ca); err != nil || s == nil {
		t.Fatalf("the live account's credential is gone: %v", err)
	}
	// Deleted: now the Secret is an orphan.
	current := &pipesv1.ConnectedAccount{}
	if err := apiServer.Get(ctx, key, current); err != nil {
		t.Fatal(err)
	}
	if err := apiServer.Delete(ctx, current); err != nil {
		t.Fatal(err)
	}
	if gone, err := store.DeleteOrphan(ctx, apiServer, key); err != nil || gone == nil || gone.UID != ca.UID {
		t.Fatalf("the deleted account's Secret stayed: %v %v", gone, err)
	}
}

type fixedKeys struct{ s *crypto.Sealer }

func (k fixedKeys) Sealer() *crypto.Sealer { return k.s }

func keysFor(ks *crypto.Keyset) Sealers { return fixedKeys{crypto.NewSealer(ks)} }
