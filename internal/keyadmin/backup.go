package keyadmin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
)

// Backup is what a keyset Secret's annotations say about its last backup.
type Backup struct {
	At     time.Time
	KeyIDs []uint32
}

// Covers reports whether the backup holds key id.
func (b Backup) Covers(id uint32) bool { return slices.Contains(b.KeyIDs, id) }

// LastBackup reads the backup annotations of a keyset Secret, key-encryption or sealing
// (zero if never backed up).
func LastBackup(s *corev1.Secret) Backup {
	var b Backup
	at, err := time.Parse(time.RFC3339, s.Annotations[pipesv1.AnnotationKeysetBackedUpAt])
	if err != nil {
		return b
	}
	b.At = at
	for f := range strings.SplitSeq(s.Annotations[pipesv1.AnnotationKeysetBackedUpKeyIDs], ",") {
		if id, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32); err == nil {
			b.KeyIDs = append(b.KeyIDs, uint32(id))
		}
	}
	return b
}

// BackupKeyset writes the key-encryption keyset in Secret key to out and records the
// backup on the Secret (see [Keyset.Backup]).
func BackupKeyset(ctx context.Context, c client.Client, key types.NamespacedName, out io.Writer, save func() error) (Backup, error) {
	return backup(ctx, c, keyring.KEK, key, out, save)
}

// BackupSealingKeyset writes the sealing keyset in Secret key to out and records the
// backup on the Secret (see [Keyset.Backup]).
func BackupSealingKeyset(ctx context.Context, c client.Client, key types.NamespacedName, out io.Writer, save func() error) (Backup, error) {
	return backup(ctx, c, keyring.Sealing, key, out, save)
}

// backup writes the keyset's key material to out (in the form the restore takes:
// kubectl create secret generic NAME --from-file=keyset.json=FILE), then, once save
// reports it saved, records on the Secret when and which keys were saved. save closes or
// syncs out; a failed save records nothing.
func backup[K keyring.Material[K]](ctx context.Context, c client.Client, kind keyring.Kind[K], key types.NamespacedName, out io.Writer, save func() error) (Backup, error) {
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		return Backup{}, fmt.Errorf("reading %s Secret %s: %w", kind.What, key, err)
	}
	ks, err := kind.FromSecret(&s)
	if err != nil {
		return Backup{}, err
	}
	if _, err := out.Write(s.Data[keyring.SecretKey]); err != nil {
		return Backup{}, fmt.Errorf("writing the %s backup: %w", kind.What, err)
	}
	if err := save(); err != nil {
		return Backup{}, fmt.Errorf("writing the %s backup: %w", kind.What, err)
	}
	b := Backup{At: time.Now().UTC().Truncate(time.Second), KeyIDs: ks.KeyIDs()}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{
			pipesv1.AnnotationKeysetBackedUpAt:     b.At.Format(time.RFC3339),
			pipesv1.AnnotationKeysetBackedUpKeyIDs: joinIDs(b.KeyIDs),
		},
		// Only if the keys are still those saved: a rotation in between is not recorded as backed up.
		"resourceVersion": s.ResourceVersion,
	}})
	if err != nil {
		return Backup{}, err
	}
	if err := c.Patch(ctx, &s, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return Backup{}, fmt.Errorf("the backup was written, but recording it on %s Secret %s failed (doctor will still say it was never backed up): %w", kind.What, key, err)
	}
	return b, nil
}

func joinIDs(ids []uint32) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(s, ",")
}
