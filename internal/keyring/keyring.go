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
const ComponentKeyset = pipesv1.ComponentKeyset

// credentialSecrets selects every credential Secret.
var credentialSecrets = client.MatchingLabels{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: pipesv1.ComponentCredential}

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
// when it does not exist (first start). It refuses to create one while credential
// Secrets exist: they were sealed under the missing keyset, and a fresh one would
// silently make every one of them unreadable. c must read from the API server, not a cache.
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
		var sealed corev1.SecretList
		if err := c.List(ctx, &sealed, credentialSecrets, client.Limit(1)); err != nil {
			return nil, fmt.Errorf("checking for stored credentials before creating a keyset: %w", err)
		}
		if len(sealed.Items) > 0 {
			return nil, fmt.Errorf("keyset Secret %s does not exist, but credentials sealed with a keyset do (for example Secret %s/%s): a new keyset would make all of them unreadable, so none is created. "+
				"Restore the keyset from your backup (kubectl create secret generic -n %s %s --from-file=%s=pipes-keyset.json), or, to discard every stored credential on purpose, delete them (kubectl delete secrets -A -l %s=%s) and start again",
				key, sealed.Items[0].Namespace, sealed.Items[0].Name, key.Namespace, key.Name, SecretKey, pipesv1.LabelComponent, pipesv1.ComponentCredential)
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
				"secret", key.String(), "backup", BackupCommand(key))
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

// Usage counts stored credentials per key id, read from the API server (not a cache).
type Usage func(ctx context.Context) (map[uint32]int, error)

// PruneSecret removes from the keyset in its Secret every non-primary key that no stored
// credential uses, and returns the removed ids. Usage is counted after reading the
// keyset and again after the conditional update: a credential written under a removed
// key in between (a replica that had not reloaded a rotation yet) puts the previous
// keyset back, so a prune never loses a key that is still needed.
func PruneSecret(ctx context.Context, c client.Client, key types.NamespacedName, usage Usage) ([]uint32, error) {
	var removed []uint32
	next, prev, err := modifySecret(ctx, c, key, func(ks *crypto.Keyset) (*crypto.Keyset, error) {
		used, err := usage(ctx)
		if err != nil {
			return nil, err
		}
		next, ids, err := ks.Prune(func(id uint32) bool { return used[id] > 0 })
		removed = ids
		return next, err
	})
	if err != nil || len(removed) == 0 {
		return removed, err
	}
	used, err := usage(ctx)
	if err != nil {
		return removed, fmt.Errorf("recounting credentials after pruning keys %v (restore the keyset backup if a credential does not decrypt): %w", removed, err)
	}
	for _, id := range removed {
		if used[id] == 0 {
			continue
		}
		if _, _, err := modifySecret(ctx, c, key, func(ks *crypto.Keyset) (*crypto.Keyset, error) {
			if ks.PrimaryKeyID() != next.PrimaryKeyID() {
				return nil, errors.New("the keyset changed again meanwhile")
			}
			return prev, nil
		}); err != nil {
			return nil, fmt.Errorf("a credential was sealed under key %d while it was being pruned, and putting the previous keyset back failed (%w): restore the keyset from your backup now", id, err)
		}
		return nil, fmt.Errorf("a credential was sealed under key %d while it was being pruned; the previous keyset is back in place: prune again once re-encryption is done", id)
	}
	return removed, nil
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

// BackupCommand is the command that saves the keyset held in the Secret key to
// pipes-keyset.json, in the form the restore (kubectl create secret generic
// --from-file=keyset.json=pipes-keyset.json) takes: the key material alone, without the
// Secret's resourceVersion and UID, which would make a create in a new cluster fail.
func BackupCommand(key types.NamespacedName) string {
	return fmt.Sprintf(`kubectl get secret -n %s %s -o jsonpath='{.data.keyset\.json}' | base64 -d > pipes-keyset.json`, key.Namespace, key.Name)
}
