// Package keyadmin is keyset administration through the API server, for both of the
// operator's keysets — the key-encryption keyset (Secret pipes-keyset), which wraps every
// stored credential, and the sealing keyset (Secret pipes-sealing-keyset), whose public
// half seals spec.apiKey.sealed values: status, rotate, prune and backup (with the backup
// recorded on the Secret), and what sealing needs: the published public keyset.
//
// `manager keyset status|rotate|prune|backup [--sealing]` and `kubectl pipes keyset …`
// (and its `rotate-keyset` and `prune`) all call [Keyset]'s methods, so they behave and
// print the same. Everything goes through the client it is given (the caller's
// kubeconfig, never a cache).
package keyadmin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
)

// KeyStatus is one key of a keyset and how many things are sealed under it.
type KeyStatus struct {
	ID      uint32
	Primary bool
	Uses    int
}

// Status is a keyset's keys, their use and its last backup.
type Status struct {
	// What names the keyset ("keyset", "sealing keyset"); Sealed what its keys seal.
	What, Sealed string
	Secret       types.NamespacedName
	Primary      uint32
	Keys         []KeyStatus
	// Total things sealed; OnOldKeys of them under a key other than the primary; Unknown
	// under no key of the keyset (for sealed values: another cluster's key, or pruned).
	Total, OnOldKeys, Unknown int
	// LastBackup is what the Secret's backup annotations record (zero: never backed up).
	LastBackup Backup
	// BackupCommand is the command that backs this keyset up, for the advice printed.
	BackupCommand string
}

// Write prints s for a person.
func (s Status) Write(w io.Writer) error {
	p := &printer{w: w}
	p.printf("%s %s: primary key %d\n", s.What, s.Secret, s.Primary)
	for _, k := range s.Keys {
		role := "old"
		if k.Primary {
			role = "primary"
		}
		p.printf("  key %-12d %-8s %d %s(s)\n", k.ID, role, k.Uses, s.Sealed)
	}
	p.printf("%d %s(s) stored, %d still on old keys, %d under no key of this keyset\n", s.Total, s.Sealed, s.OnOldKeys, s.Unknown)
	b := s.LastBackup
	switch {
	case b.At.IsZero():
		p.printf("never backed up: run %s, and keep the file offline\n", s.BackupCommand)
	case !b.Covers(s.Primary):
		p.printf("last backup %s does not hold primary key %d: back up again (%s)\n", b.At.Format(time.RFC3339), s.Primary, s.BackupCommand)
	default:
		p.printf("last backup %s (keys %s)\n", b.At.Format(time.RFC3339), joinIDs(b.KeyIDs))
	}
	return p.err
}

func status[K keyring.Material[K]](ctx context.Context, c client.Reader, kind keyring.Kind[K], key types.NamespacedName, usage keyring.Usage, sealingKeyset bool) (Status, error) {
	var secret corev1.Secret
	if err := c.Get(ctx, key, &secret); err != nil {
		return Status{}, fmt.Errorf("reading %s Secret %s: %w", kind.What, key, err)
	}
	ks, err := kind.FromSecret(&secret)
	if err != nil {
		return Status{}, err
	}
	used, err := usage(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("counting %ss: %w", kind.Sealed, err)
	}
	s := Status{What: kind.What, Sealed: kind.Sealed, Secret: key, Primary: ks.PrimaryKeyID(),
		LastBackup: LastBackup(&secret), BackupCommand: backupCommand(sealingKeyset)}
	ids := ks.KeyIDs()
	for _, id := range ids {
		s.Keys = append(s.Keys, KeyStatus{ID: id, Primary: id == s.Primary, Uses: used[id]})
	}
	for id, n := range used {
		s.Total += n
		switch {
		case !slices.Contains(ids, id):
			s.Unknown += n
		case id != s.Primary:
			s.OnOldKeys += n
		}
	}
	return s, nil
}

// CredentialUsage counts stored credentials per key-encryption key id, from their
// ciphertexts.
func CredentialUsage(c client.Reader) keyring.Usage {
	return func(ctx context.Context) (map[uint32]int, error) { return credential.KeyUsage(ctx, c) }
}

// SealedUsage counts spec.apiKey.sealed values per sealing key id, from the values.
func SealedUsage(c client.Reader) keyring.Usage {
	return func(ctx context.Context) (map[uint32]int, error) { return keyring.SealedUsage(ctx, c) }
}

// KeysetStatus reports the key-encryption keyset in Secret key, the credentials per key
// and its last backup.
func KeysetStatus(ctx context.Context, c client.Reader, key types.NamespacedName) (Status, error) {
	return status(ctx, c, keyring.KEK, key, CredentialUsage(c), false)
}

// RotateKeyset makes a new key primary in the key-encryption keyset; running managers
// re-encrypt every stored credential under it.
func RotateKeyset(ctx context.Context, c client.Client, key types.NamespacedName) (oldID, newID uint32, err error) {
	return keyring.KEK.Rotate(ctx, c, key)
}

// PruneKeyset removes the key-encryption keys no stored credential uses.
func PruneKeyset(ctx context.Context, c client.Client, key types.NamespacedName) ([]uint32, error) {
	return keyring.KEK.Prune(ctx, c, key, CredentialUsage(c))
}

// SealingKeysetStatus reports the sealing keyset in Secret key, the sealed values
// (spec.apiKey.sealed of every ConnectedAccount) per key and its last backup.
func SealingKeysetStatus(ctx context.Context, c client.Reader, key types.NamespacedName) (Status, error) {
	return status(ctx, c, keyring.Sealing, key, SealedUsage(c), true)
}

// RotateSealingKeyset makes a new key primary in the sealing keyset. Every replica
// reloads it and publishes the new public keyset, which seals with the new key from then
// on; values sealed with old keys keep opening until those keys are pruned.
func RotateSealingKeyset(ctx context.Context, c client.Client, key types.NamespacedName) (oldID, newID uint32, err error) {
	return keyring.Sealing.Rotate(ctx, c, key)
}

// PruneSealingKeyset removes the sealing keys no ConnectedAccount's spec.apiKey.sealed
// uses (reseal those values with the new key, and apply them, first).
func PruneSealingKeyset(ctx context.Context, c client.Client, key types.NamespacedName) ([]uint32, error) {
	return keyring.Sealing.Prune(ctx, c, key, SealedUsage(c))
}

// PublicKeyset fetches the public sealing keyset the operator in namespace publishes (any
// authenticated user may), checked to be one Seal accepts. A missing ConfigMap is an
// error apierrors.IsNotFound recognizes.
func PublicKeyset(ctx context.Context, c client.Reader, namespace string) ([]byte, error) {
	var cm corev1.ConfigMap
	key := types.NamespacedName{Namespace: namespace, Name: pipesv1.SealingPublicKeysetConfigMap}
	if err := c.Get(ctx, key, &cm); err != nil {
		return nil, fmt.Errorf("reading the public sealing keyset (ConfigMap %s): %w", key, err)
	}
	pub := []byte(cm.Data[pipesv1.SealingPublicKeysetKey])
	if _, err := sealing.ParsePublicKeyset(pub); err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %w", key, err)
	}
	return pub, nil
}

// Seal seals key for ca with the public keyset published in namespace (the operator's).
func Seal(ctx context.Context, c client.Reader, namespace string, key []byte, ca *pipesv1.ConnectedAccount) (string, error) {
	pub, err := PublicKeyset(ctx, c, namespace)
	if err != nil {
		return "", err
	}
	return sealing.Seal(pub, key, credential.SealingContext(ca))
}

// printer writes until the first error, which it keeps.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}
