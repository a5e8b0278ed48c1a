// Package keysetcmd is what `kubectl pipes keyset` and `manager keyset` do to the
// key-encryption keyset Secret through the API server: status, rotate, prune and backup.
// Both commands call it, so they print and behave the same.
package keysetcmd

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
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
)

// Usage is the usage text of the keyset verbs, shared by both commands.
const Usage = `  status   show the keys, how many credentials each one wraps, and the last backup
  rotate   add a new AES-256-GCM key and make it primary; running managers re-encrypt
           every stored credential under it in the background (watch
           pipes_credentials_on_old_keys or 'keyset status' reach 0); back up again after
  prune    remove old keys that no stored credential uses any more
  backup   save the keyset (key material: keep it offline) to --file, and record on the
           Secret when and which keys were saved (doctor warns when a newer key is not)`

// Read returns the keyset Secret and its keyset.
func Read(ctx context.Context, c client.Reader, key types.NamespacedName) (*corev1.Secret, *crypto.Keyset, error) {
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		return nil, nil, fmt.Errorf("reading keyset Secret %s: %w", key, err)
	}
	ks, err := keyring.FromSecret(&s)
	if err != nil {
		return nil, nil, err
	}
	return &s, ks, nil
}

// Status writes the keys of the keyset, the credentials each wraps, and the last backup.
func Status(ctx context.Context, c client.Reader, key types.NamespacedName, w io.Writer) error {
	s, ks, err := Read(ctx, c, key)
	if err != nil {
		return err
	}
	inUse, err := credential.KeyUsage(ctx, c)
	if err != nil {
		return fmt.Errorf("counting stored credentials: %w", err)
	}
	p := &printer{w: w}
	p.printf("keyset %s: primary key %d\n", key, ks.PrimaryKeyID())
	for _, id := range ks.KeyIDs() {
		role := "old"
		if id == ks.PrimaryKeyID() {
			role = "primary"
		}
		p.printf("  key %-12d %-8s wraps %d credential(s)\n", id, role, inUse[id])
	}
	stored, stale := inUse.Stale(ks.PrimaryKeyID())
	p.printf("%d credential(s) stored, %d still on old keys\n", stored, stale)
	b := LastBackup(s)
	switch {
	case b.At.IsZero():
		p.printf("never backed up: run kubectl pipes keyset backup --file pipes-keyset.json\n")
	case !b.Covers(ks.PrimaryKeyID()):
		p.printf("last backup %s does not hold primary key %d: back up again\n", b.At.Format(time.RFC3339), ks.PrimaryKeyID())
	default:
		p.printf("last backup %s (keys %s)\n", b.At.Format(time.RFC3339), joinIDs(b.KeyIDs))
	}
	return nil
}

// Rotate adds a new primary key and says so on w.
func Rotate(ctx context.Context, c client.Client, key types.NamespacedName, w io.Writer) error {
	oldID, newID, err := keyring.RotateSecret(ctx, c, key)
	if err != nil {
		return err
	}
	p := &printer{w: w}
	p.printf("new primary key %d (was %d); the manager re-encrypts stored credentials in the background; back the keyset up again now\n", newID, oldID)
	return p.err
}

// Prune removes the old keys no stored credential uses and says which on w.
func Prune(ctx context.Context, c client.Client, key types.NamespacedName, w io.Writer) error {
	removed, err := keyring.PruneSecret(ctx, c, key, func(ctx context.Context) (map[uint32]int, error) {
		return credential.KeyUsage(ctx, c)
	})
	if err != nil {
		return err
	}
	p := &printer{w: w}
	if len(removed) == 0 {
		p.printf("nothing to prune: every old key still wraps credentials; wait for re-encryption to finish ('keyset status')\n")
	} else {
		p.printf("removed key(s) %v\n", removed)
	}
	return p.err
}

// Backup is what the keyset Secret's annotations say about its last backup.
type Backup struct {
	At     time.Time
	KeyIDs []uint32
}

// Covers reports whether the backup holds key id.
func (b Backup) Covers(id uint32) bool { return slices.Contains(b.KeyIDs, id) }

// LastBackup reads the backup annotations of the keyset Secret (zero if never backed up).
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

// WriteBackup writes the keyset's key material to out (in the form the restore takes:
// kubectl create secret generic NAME --from-file=keyset.json=FILE), then, once save
// reports it saved, records on the Secret when and which keys were saved. save closes or
// syncs out; a failed save records nothing.
func WriteBackup(ctx context.Context, c client.Client, key types.NamespacedName, out io.Writer, save func() error) (Backup, error) {
	s, ks, err := Read(ctx, c, key)
	if err != nil {
		return Backup{}, err
	}
	if _, err := out.Write(s.Data[keyring.SecretKey]); err != nil {
		return Backup{}, fmt.Errorf("writing the keyset backup: %w", err)
	}
	if err := save(); err != nil {
		return Backup{}, fmt.Errorf("writing the keyset backup: %w", err)
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
	if err := c.Patch(ctx, s, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return Backup{}, fmt.Errorf("the backup was written, but recording it on keyset Secret %s failed (doctor will still say it was never backed up): %w", key, err)
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
