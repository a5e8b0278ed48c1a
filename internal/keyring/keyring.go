// Package keyring owns the operator's key-encryption keyset at run time: loading it from
// its Secret (creating it on first start) and swapping it atomically when it is rotated.
package keyring

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
)

// SecretKey is the data key of the keyset Secret.
const SecretKey = "keyset.json"

// ComponentKeyset is the LabelComponent value of the keyset Secret.
const ComponentKeyset = "keyset"

// Keyring holds the current keyset and its Sealer. It is safe for concurrent use.
type Keyring struct {
	current atomic.Pointer[state]
}

type state struct {
	keyset *crypto.Keyset
	sealer *crypto.Sealer
}

// New returns a Keyring holding ks.
func New(ks *crypto.Keyset) *Keyring {
	k := &Keyring{}
	k.current.Store(&state{keyset: ks, sealer: crypto.NewSealer(ks)})
	return k
}

// Sealer encrypts under the current primary key and decrypts under any key of the keyset.
func (k *Keyring) Sealer() *crypto.Sealer { return k.current.Load().sealer }

// Keyset is the current keyset.
func (k *Keyring) Keyset() *crypto.Keyset { return k.current.Load().keyset }

// Update replaces the keyset and reports whether the primary key changed, in which case
// stored credentials need re-encrypting.
func (k *Keyring) Update(ks *crypto.Keyset) bool {
	old := k.current.Swap(&state{keyset: ks, sealer: crypto.NewSealer(ks)})
	return old.keyset.PrimaryKeyID() != ks.PrimaryKeyID()
}

// FromSecret parses the keyset held in s.
func FromSecret(s *corev1.Secret) (*crypto.Keyset, error) {
	raw, ok := s.Data[SecretKey]
	if !ok {
		return nil, fmt.Errorf("keyset Secret %s/%s has no %q key", s.Namespace, s.Name, SecretKey)
	}
	ks, err := crypto.ParseKeyset(raw)
	if err != nil {
		return nil, fmt.Errorf("keyset Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return ks, nil
}

// Secret builds the keyset Secret for ks; existing (may be nil) supplies identity and
// resourceVersion for an update.
func Secret(key types.NamespacedName, ks *crypto.Keyset, existing *corev1.Secret) (*corev1.Secret, error) {
	raw, err := ks.MarshalJSON()
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{}
	if existing != nil {
		s = existing.DeepCopy()
	}
	s.Namespace, s.Name = key.Namespace, key.Name
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[pipesv1.LabelManagedBy] = pipesv1.ManagedByValue
	s.Labels[pipesv1.LabelComponent] = ComponentKeyset
	s.Type = corev1.SecretTypeOpaque
	s.Data = map[string][]byte{SecretKey: raw}
	return s, nil
}

// EnsureSecret loads the keyset from its Secret, creating the Secret with a fresh keyset
// when it does not exist (first start). c must read from the API server, not a cache.
func EnsureSecret(ctx context.Context, c client.Client, key types.NamespacedName, log logr.Logger) (*crypto.Keyset, error) {
	for range 3 {
		var s corev1.Secret
		err := c.Get(ctx, key, &s)
		if err == nil {
			return FromSecret(&s)
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading keyset Secret %s: %w", key, err)
		}
		ks, err := crypto.NewKeyset()
		if err != nil {
			return nil, err
		}
		created, err := Secret(key, ks, nil)
		if err != nil {
			return nil, err
		}
		switch err := c.Create(ctx, created); {
		case err == nil:
			log.Info("created a new key-encryption keyset; back it up now, because every stored credential is unreadable without it",
				"secret", key.String(), "backup", fmt.Sprintf("kubectl get secret -n %s %s -o yaml > pipes-keyset-backup.yaml", key.Namespace, key.Name))
			return ks, nil
		case apierrors.IsAlreadyExists(err):
			continue // another replica created it first; read theirs
		default:
			return nil, fmt.Errorf("creating keyset Secret %s: %w", key, err)
		}
	}
	return nil, errors.New("keyset Secret keeps appearing and disappearing; check who deletes " + key.String())
}

// RotateSecret adds a new primary key to the keyset in its Secret. Running managers see
// the change and re-encrypt every stored credential under the new key. It returns the
// old and new primary key ids.
func RotateSecret(ctx context.Context, c client.Client, key types.NamespacedName) (oldID, newID uint32, err error) {
	next, prev, err := modifySecret(ctx, c, key, func(ks *crypto.Keyset) (*crypto.Keyset, error) { return ks.Rotate() })
	if err != nil {
		return 0, 0, err
	}
	return prev.PrimaryKeyID(), next.PrimaryKeyID(), nil
}

// PruneSecret removes from the keyset in its Secret every non-primary key for which
// inUse is false, and returns the removed ids.
func PruneSecret(ctx context.Context, c client.Client, key types.NamespacedName, inUse func(keyID uint32) bool) ([]uint32, error) {
	var removed []uint32
	_, _, err := modifySecret(ctx, c, key, func(ks *crypto.Keyset) (*crypto.Keyset, error) {
		next, ids, err := ks.Prune(inUse)
		removed = ids
		return next, err
	})
	return removed, err
}

// modifySecret applies change to the keyset in its Secret. The update is conditional on
// the resourceVersion read, so a concurrent change fails instead of being lost.
func modifySecret(ctx context.Context, c client.Client, key types.NamespacedName, change func(*crypto.Keyset) (*crypto.Keyset, error)) (next, prev *crypto.Keyset, err error) {
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		return nil, nil, fmt.Errorf("reading keyset Secret %s: %w", key, err)
	}
	if prev, err = FromSecret(&s); err != nil {
		return nil, nil, err
	}
	if next, err = change(prev); err != nil {
		return nil, nil, err
	}
	updated, err := Secret(key, next, &s)
	if err != nil {
		return nil, nil, err
	}
	if err := c.Update(ctx, updated); err != nil {
		return nil, nil, fmt.Errorf("updating keyset Secret %s: %w", key, err)
	}
	return next, prev, nil
}
