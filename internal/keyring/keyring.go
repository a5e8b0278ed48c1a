// Package keyring owns the operator's keysets at run time: the key-encryption keyset
// (KEK) and the sealing keyset, each kept in a Secret of the operator's namespace —
// loading it (creating it on first start), rotating and pruning it through the API
// server — and the KEK's atomic swap when it is rotated.
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

// SecretKey is the data key of the keyset Secrets.
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

// Material is a keyset kept in a Secret (crypto.Keyset, sealing.Keyset): immutable,
// rotated and pruned into new values.
type Material[K any] interface {
	PrimaryKeyID() uint32
	KeyIDs() []uint32
	Rotate() (K, error)
	Prune(inUse func(keyID uint32) bool) (K, []uint32, error)
	MarshalJSON() ([]byte, error)
}

// Kind is one keyset kept in a Secret: how to read and make it, and what depends on it.
type Kind[K Material[K]] struct {
	// What names it in messages ("keyset", "sealing keyset").
	What string
	// Component is the Secret's LabelComponent value.
	Component string
	// BackupFile is the file BackupCommand saves it to ("" for a keyset that needs no backup).
	BackupFile string
	// Protects says what is lost without it, for the first-start log line.
	Protects string
	// Sealed names what is sealed under it, for messages ("credential").
	Sealed string
	Parse  func([]byte) (K, error)
	New    func() (K, error)
	// Dependent finds one thing sealed under a keyset of this kind ("" for none): a
	// missing keyset Secret is not re-created while it exists, with Discard saying how
	// to start over on purpose.
	Dependent func(ctx context.Context, r client.Reader) (string, error)
	Discard   string
}

// KEK is the key-encryption keyset (Secret pipes-keyset).
var KEK = Kind[*crypto.Keyset]{
	What: "keyset", Component: ComponentKeyset, BackupFile: "pipes-keyset.json",
	Protects: "every stored credential is unreadable without it", Sealed: "credential",
	Parse: crypto.ParseKeyset, New: crypto.NewKeyset,
	Dependent: func(ctx context.Context, r client.Reader) (string, error) {
		var sealed corev1.SecretList
		if err := r.List(ctx, &sealed, credentialSecrets, client.Limit(1)); err != nil || len(sealed.Items) == 0 {
			return "", err
		}
		return fmt.Sprintf("credentials sealed with a keyset do (for example Secret %s/%s)", sealed.Items[0].Namespace, sealed.Items[0].Name), nil
	},
	Discard: fmt.Sprintf("to discard every stored credential on purpose, delete them (kubectl delete secrets -A -l %s=%s)", pipesv1.LabelComponent, pipesv1.ComponentCredential),
}

// FromSecret parses the key-encryption keyset held in s.
func FromSecret(s *corev1.Secret) (*crypto.Keyset, error) { return KEK.FromSecret(s) }

// Secret builds the key-encryption keyset Secret for ks (see Kind.Secret).
func Secret(key types.NamespacedName, ks *crypto.Keyset, existing *corev1.Secret) (*corev1.Secret, error) {
	return KEK.Secret(key, ks, existing)
}

// EnsureSecret loads the key-encryption keyset (see Kind.Ensure).
func EnsureSecret(ctx context.Context, c client.Client, key types.NamespacedName, log logr.Logger) (*crypto.Keyset, error) {
	return KEK.Ensure(ctx, c, key, log)
}

// RotateSecret adds a new primary key to the key-encryption keyset (see Kind.Rotate).
// Running managers see the change and re-encrypt every stored credential under it.
func RotateSecret(ctx context.Context, c client.Client, key types.NamespacedName) (oldID, newID uint32, err error) {
	return KEK.Rotate(ctx, c, key)
}

// PruneSecret removes unused keys from the key-encryption keyset (see Kind.Prune).
func PruneSecret(ctx context.Context, c client.Client, key types.NamespacedName, usage Usage) ([]uint32, error) {
	return KEK.Prune(ctx, c, key, usage)
}

// BackupCommand is the command that saves the key-encryption keyset (see Kind.BackupCommand).
func BackupCommand(key types.NamespacedName) string { return KEK.BackupCommand(key) }

// FromSecret parses the keyset held in s.
func (k Kind[K]) FromSecret(s *corev1.Secret) (K, error) {
	var zero K
	raw, ok := s.Data[SecretKey]
	if !ok {
		return zero, fmt.Errorf("%s Secret %s/%s has no %q key", k.What, s.Namespace, s.Name, SecretKey)
	}
	ks, err := k.Parse(raw)
	if err != nil {
		return zero, fmt.Errorf("%s Secret %s/%s: %w", k.What, s.Namespace, s.Name, err)
	}
	return ks, nil
}

// Secret builds the keyset Secret for ks; existing (may be nil) supplies identity and
// resourceVersion for an update.
func (k Kind[K]) Secret(key types.NamespacedName, ks K, existing *corev1.Secret) (*corev1.Secret, error) {
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
	s.Labels[pipesv1.LabelComponent] = k.Component
	s.Type = corev1.SecretTypeOpaque
	s.Data = map[string][]byte{SecretKey: raw}
	return s, nil
}

// Ensure loads the keyset from its Secret, creating the Secret with a fresh keyset when
// it does not exist (first start). It refuses to create one while something sealed
// under the missing keyset exists (Dependent): a fresh one would silently make every
// one of them unreadable. c must read from the API server, not a cache.
func (k Kind[K]) Ensure(ctx context.Context, c client.Client, key types.NamespacedName, log logr.Logger) (K, error) {
	var zero K
	for range 3 {
		var s corev1.Secret
		err := c.Get(ctx, key, &s)
		if err == nil {
			return k.FromSecret(&s)
		}
		if !apierrors.IsNotFound(err) {
			return zero, fmt.Errorf("reading %s Secret %s: %w", k.What, key, err)
		}
		dependent, err := k.Dependent(ctx, c)
		if err != nil {
			return zero, fmt.Errorf("checking for what a %s sealed before creating one: %w", k.What, err)
		}
		if dependent != "" {
			return zero, fmt.Errorf("%s Secret %s does not exist, but %s: a new %s would make all of them unreadable, so none is created. "+
				"Restore the %s from your backup (kubectl create secret generic -n %s %s --from-file=%s=%s), or, %s, and start again",
				k.What, key, dependent, k.What, k.What, key.Namespace, key.Name, SecretKey, k.BackupFile, k.Discard)
		}
		ks, err := k.New()
		if err != nil {
			return zero, err
		}
		created, err := k.Secret(key, ks, nil)
		if err != nil {
			return zero, err
		}
		switch err := c.Create(ctx, created); {
		case err == nil:
			if k.BackupFile == "" {
				log.Info(fmt.Sprintf("created a new %s; %s", k.What, k.Protects), "secret", key.String())
			} else {
				log.Info(fmt.Sprintf("created a new %s; back it up now, because %s", k.What, k.Protects),
					"secret", key.String(), "backup", k.BackupCommand(key))
			}
			return ks, nil
		case apierrors.IsAlreadyExists(err):
			continue // another replica created it first; read theirs
		default:
			return zero, fmt.Errorf("creating %s Secret %s: %w", k.What, key, err)
		}
	}
	return zero, errors.New(k.What + " Secret keeps appearing and disappearing; check who deletes " + key.String())
}

// Rotate adds a new primary key to the keyset in its Secret; every running manager
// reloads it. It returns the old and new primary key ids.
func (k Kind[K]) Rotate(ctx context.Context, c client.Client, key types.NamespacedName) (oldID, newID uint32, err error) {
	next, prev, err := k.modify(ctx, c, key, func(ks K) (K, error) { return ks.Rotate() })
	if err != nil {
		return 0, 0, err
	}
	return prev.PrimaryKeyID(), next.PrimaryKeyID(), nil
}

// Usage counts what is sealed per key id, read from the API server (not a cache).
type Usage func(ctx context.Context) (map[uint32]int, error)

// Prune removes from the keyset in its Secret every non-primary key that nothing sealed
// uses, and returns the removed ids. Usage is counted after reading the keyset and again
// after the conditional update: something sealed under a removed key in between (a
// replica that had not reloaded a rotation yet) puts the previous keyset back, so a
// prune never loses a key that is still needed.
func (k Kind[K]) Prune(ctx context.Context, c client.Client, key types.NamespacedName, usage Usage) ([]uint32, error) {
	var removed []uint32
	next, prev, err := k.modify(ctx, c, key, func(ks K) (K, error) {
		used, err := usage(ctx)
		if err != nil {
			var zero K
			return zero, err
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
		return removed, fmt.Errorf("recounting %ss after pruning keys %v (restore the %s backup if one does not open): %w", k.Sealed, removed, k.What, err)
	}
	for _, id := range removed {
		if used[id] == 0 {
			continue
		}
		if _, _, err := k.modify(ctx, c, key, func(ks K) (K, error) {
			if ks.PrimaryKeyID() != next.PrimaryKeyID() {
				var zero K
				return zero, errors.New("the keyset changed again meanwhile")
			}
			return prev, nil
		}); err != nil {
			return nil, fmt.Errorf("a %s was sealed under key %d while it was being pruned, and putting the previous %s back failed (%w): restore the %s from your backup now", k.Sealed, id, k.What, err, k.What)
		}
		return nil, fmt.Errorf("a %s was sealed under key %d while it was being pruned; the previous keyset is back in place: prune again once nothing uses it", k.Sealed, id)
	}
	return removed, nil
}

// modify applies change to the keyset in its Secret. The update is conditional on the
// resourceVersion read, so a concurrent change fails instead of being lost.
func (k Kind[K]) modify(ctx context.Context, c client.Client, key types.NamespacedName, change func(K) (K, error)) (next, prev K, err error) {
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		return next, prev, fmt.Errorf("reading %s Secret %s: %w", k.What, key, err)
	}
	if prev, err = k.FromSecret(&s); err != nil {
		return next, prev, err
	}
	if next, err = change(prev); err != nil {
		return next, prev, err
	}
	updated, err := k.Secret(key, next, &s)
	if err != nil {
		return next, prev, err
	}
	if err := c.Update(ctx, updated); err != nil {
		return next, prev, fmt.Errorf("updating %s Secret %s: %w", k.What, key, err)
	}
	return next, prev, nil
}

// BackupCommand is the command that saves the keyset held in the Secret key to
// BackupFile, in the form the restore (kubectl create secret generic
// --from-file=keyset.json=BackupFile) takes: the key material alone, without the
// Secret's resourceVersion and UID, which would make a create in a new cluster fail.
func (k Kind[K]) BackupCommand(key types.NamespacedName) string {
	return fmt.Sprintf(`kubectl get secret -n %s %s -o jsonpath='{.data.keyset\.json}' | base64 -d > %s`, key.Namespace, key.Name, k.BackupFile)
}
