package keyadmin

import (
	"context"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
)

// KeysetSecret is the default name of the key-encryption keyset Secret (the sealing
// keyset's is pipesv1.SealingKeysetSecret).
const KeysetSecret = "pipes-keyset"

// Usage is the usage text of the keyset verbs, shared by `manager keyset` and
// `kubectl pipes keyset`.
const Usage = `  status   show the keys, how many credentials (with --sealing: sealed values) each one
           wraps, and the last backup
  rotate   add a new key and make it primary. Key-encryption keyset: running managers
           re-encrypt every stored credential under it in the background (watch
           pipes_credentials_on_old_keys or 'keyset status' reach 0). Sealing keyset:
           the published public keyset seals with it from then on; values sealed with
           old keys keep opening until pruned. Back up again after either
  prune    remove old keys that nothing uses any more: no stored credential, or with
           --sealing no ConnectedAccount's spec.apiKey.sealed (reseal those first)
  backup   save the keyset (key material: keep it offline) to --file, and record on the
           Secret when and which keys were saved (doctor warns when a newer key is not)`

// Keyset is one of the operator's keysets as the keyset commands name it: the
// key-encryption keyset or, with Sealing, the sealing keyset, in Secret. Its methods are
// the verbs of `manager keyset` and `kubectl pipes keyset`, printing what they did.
type Keyset struct {
	Secret  types.NamespacedName
	Sealing bool
}

// Select names a keyset in the operator's namespace: the Secret secret, or "" for the
// default (pipes-keyset, or pipes-sealing-keyset when sealing).
func Select(namespace, secret string, sealing bool) Keyset {
	if secret == "" {
		secret = DefaultSecret(sealing)
	}
	return Keyset{Secret: types.NamespacedName{Namespace: namespace, Name: secret}, Sealing: sealing}
}

// DefaultSecret is the default name of the keyset Secret.
func DefaultSecret(sealing bool) string {
	if sealing {
		return pipesv1.SealingKeysetSecret
	}
	return KeysetSecret
}

// What names the keyset in messages ("keyset", "sealing keyset").
func (k Keyset) What() string {
	if k.Sealing {
		return keyring.Sealing.What
	}
	return keyring.KEK.What
}

// BackupFile is the file a backup goes to by default.
func (k Keyset) BackupFile() string {
	if k.Sealing {
		return keyring.Sealing.BackupFile
	}
	return keyring.KEK.BackupFile
}

// backupCommand is the command that backs a keyset up, for advice.
func backupCommand(sealing bool) string {
	if sealing {
		return "kubectl pipes keyset backup --sealing --file " + keyring.Sealing.BackupFile
	}
	return "kubectl pipes keyset backup --file " + keyring.KEK.BackupFile
}

// Status reports the keyset's keys, their use and its last backup.
func (k Keyset) Status(ctx context.Context, c client.Reader) (Status, error) {
	if k.Sealing {
		return SealingKeysetStatus(ctx, c, k.Secret)
	}
	return KeysetStatus(ctx, c, k.Secret)
}

// WriteStatus prints Status on w.
func (k Keyset) WriteStatus(ctx context.Context, c client.Reader, w io.Writer) error {
	s, err := k.Status(ctx, c)
	if err != nil {
		return err
	}
	return s.Write(w)
}

// Rotate adds a new primary key and says what follows on w.
func (k Keyset) Rotate(ctx context.Context, c client.Client, w io.Writer) error {
	p := &printer{w: w}
	if k.Sealing {
		oldID, newID, err := RotateSealingKeyset(ctx, c, k.Secret)
		if err != nil {
			return err
		}
		p.printf("new primary sealing key %d (was %d); the manager publishes the new public keyset: reseal values with it, apply them, then prune; back the sealing keyset up again now\n", newID, oldID)
		return p.err
	}
	oldID, newID, err := RotateKeyset(ctx, c, k.Secret)
	if err != nil {
		return err
	}
	p.printf("new primary key %d (was %d); the manager re-encrypts stored credentials in the background; back the keyset up again now\n", newID, oldID)
	return p.err
}

// Prune removes the old keys nothing uses and says which on w.
func (k Keyset) Prune(ctx context.Context, c client.Client, w io.Writer) error {
	prune, nothing := PruneKeyset, "nothing to prune: every old key still wraps credentials; wait for re-encryption to finish ('keyset status')"
	if k.Sealing {
		prune, nothing = PruneSealingKeyset, "nothing to prune: every old sealing key still seals a value in some ConnectedAccount's spec.apiKey.sealed; reseal those ('keyset status --sealing')"
	}
	removed, err := prune(ctx, c, k.Secret)
	if err != nil {
		return err
	}
	p := &printer{w: w}
	if len(removed) == 0 {
		p.printf("%s\n", nothing)
	} else {
		p.printf("removed key(s) %v\n", removed)
	}
	return p.err
}

// Backup writes the keyset's key material to out (in the form the restore takes:
// kubectl create secret generic NAME --from-file=keyset.json=FILE), then, once save
// reports it saved, records on the Secret when and which keys were saved (annotations
// pipes.dev/keyset-backed-up-at and -key-ids, which status and doctor read). save closes
// or syncs out; a failed save records nothing.
func (k Keyset) Backup(ctx context.Context, c client.Client, out io.Writer, save func() error) (Backup, error) {
	if k.Sealing {
		return BackupSealingKeyset(ctx, c, k.Secret, out, save)
	}
	return BackupKeyset(ctx, c, k.Secret, out, save)
}

// BackupToFile is Backup to file (mode 0600, synced; "" for BackupFile, "-" for stdout),
// saying on stderr what was saved where.
func (k Keyset) BackupToFile(ctx context.Context, c client.Client, file string, stdout, stderr io.Writer) error {
	if file == "" {
		file = k.BackupFile()
	}
	out, save, where := stdout, func() error { return nil }, "standard output"
	if file != "-" {
		f, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		out, where = f, file
		save = func() error {
			if err := f.Sync(); err != nil {
				return err
			}
			return f.Close()
		}
	}
	b, err := k.Backup(ctx, c, out, save)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stderr, "%s %s (keys %s) saved to %s: keep it offline, apart from cluster backups\n", k.What(), k.Secret, joinIDs(b.KeyIDs), where)
	return nil
}
