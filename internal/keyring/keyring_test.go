package keyring

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
)

var key = types.NamespacedName{Namespace: "pipes-system", Name: "pipes-keyset"}

func TestEnsureSecretCreatesOnceThenReuses(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()
	var logged []string
	log := funcr.New(func(_, args string) { logged = append(logged, args) }, funcr.Options{})

	first, err := EnsureSecret(ctx, c, key, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) != 1 {
		t.Fatalf("want one log line telling the admin to back the keyset up, got %v", logged)
	}
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		t.Fatal(err)
	}
	if s.Labels[pipesv1.LabelManagedBy] != pipesv1.ManagedByValue || s.Labels[pipesv1.LabelComponent] != ComponentKeyset {
		t.Fatalf("keyset Secret lacks the labels the cache selects on: %v", s.Labels)
	}
	second, err := EnsureSecret(ctx, c, key, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if first.PrimaryKeyID() != second.PrimaryKeyID() {
		t.Fatalf("second start made a new keyset (%d != %d): every stored credential would be lost", first.PrimaryKeyID(), second.PrimaryKeyID())
	}
}

func TestRotateAndPruneSecret(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()
	ks, err := EnsureSecret(ctx, c, key, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := crypto.NewSealer(ks).Seal([]byte("secret"), crypto.Binding{Namespace: "n", Name: "a", UID: "u", Field: "apiKey", Version: 1})
	if err != nil {
		t.Fatal(err)
	}

	oldID, newID, err := RotateSecret(ctx, c, key)
	if err != nil {
		t.Fatal(err)
	}
	if oldID != ks.PrimaryKeyID() || newID == oldID {
		t.Fatalf("rotate: old %d new %d, keyset primary was %d", oldID, newID, ks.PrimaryKeyID())
	}
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		t.Fatal(err)
	}
	rotated, err := FromSecret(&s)
	if err != nil {
		t.Fatal(err)
	}
	ring := New(ks)
	if !ring.Update(rotated) {
		t.Fatal("Update must report the primary change")
	}
	if ring.Update(rotated) {
		t.Fatal("Update with the same primary must report no change")
	}
	if _, err := ring.Sealer().Open(sealed.Ciphertext, crypto.Binding{Namespace: "n", Name: "a", UID: "u", Field: "apiKey", Version: 1}); err != nil {
		t.Fatalf("old ciphertext must still open after rotation: %v", err)
	}

	removed, err := PruneSecret(ctx, c, key, usage(map[uint32]int{oldID: 1}))
	if err != nil || len(removed) != 0 {
		t.Fatalf("a key in use must not be pruned: removed %v, err %v", removed, err)
	}
	removed, err = PruneSecret(ctx, c, key, usage(nil))
	if err != nil || len(removed) != 1 || removed[0] != oldID {
		t.Fatalf("prune: removed %v, err %v; want [%d]", removed, err, oldID)
	}
}

func TestFromSecretErrorsNameTheSecret(t *testing.T) {
	_, err := FromSecret(&corev1.Secret{})
	if err == nil {
		t.Fatal("want an error for a Secret without a keyset")
	}
	s := &corev1.Secret{Data: map[string][]byte{SecretKey: []byte("not json")}}
	s.Namespace, s.Name = "ns", "ks"
	if _, err := FromSecret(s); err == nil || !strings.Contains(err.Error(), "ns/ks") {
		t.Fatalf("error must name the Secret: %v", err)
	}
}

// usage counts the same credentials at every call.
func usage(counts map[uint32]int) Usage {
	return func(context.Context) (map[uint32]int, error) { return counts, nil }
}

func TestEnsureSecretRefusesANewKeysetWhileCredentialsExist(t *testing.T) {
	ctx := context.Background()
	sealed := &corev1.Secret{}
	sealed.Namespace, sealed.Name = "team-a", "openai-u-credential"
	sealed.Labels = map[string]string{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: pipesv1.ComponentCredential}
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(sealed).Build()
	_, err := EnsureSecret(ctx, c, key, logr.Discard())
	if err == nil {
		t.Fatal("a fresh keyset was created while credentials sealed with the missing one exist")
	}
	for _, want := range []string{"pipes-system/pipes-keyset does not exist", "team-a/openai-u-credential", "Restore the keyset from your backup", "kubectl delete secrets -A -l pipes.dev/component=credential"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := c.Get(ctx, key, &corev1.Secret{}); err == nil {
		t.Fatal("the keyset Secret was created anyway")
	}
}

func TestPrunePutsTheKeysetBackWhenAKeyIsUsedMeanwhile(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()
	if _, err := EnsureSecret(ctx, c, key, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	oldID, _, err := RotateSecret(ctx, c, key)
	if err != nil {
		t.Fatal(err)
	}
	// Unused when counted first; a lagging replica seals under it before the recount.
	calls := 0
	racing := func(context.Context) (map[uint32]int, error) {
		calls++
		if calls == 1 {
			return nil, nil
		}
		return map[uint32]int{oldID: 1}, nil
	}
	removed, err := PruneSecret(ctx, c, key, racing)
	if err == nil || !strings.Contains(err.Error(), "previous keyset is back in place") {
		t.Fatalf("removed %v, err %v; want the race reported", removed, err)
	}
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		t.Fatal(err)
	}
	ks, err := FromSecret(&s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ks.KeyIDs(), oldID) {
		t.Fatalf("key %d, used by a credential, is gone from the keyset %v", oldID, ks.KeyIDs())
	}
}
