package keyadmin_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

const ns = "pipes-system"

// A backup writes the Secret's key material as the restore takes it, and records which
// keys it held: after a rotation the new primary is not covered, and status says so.
// Both keysets, through the verbs both commands call.
func TestBackupRecordsTheKeysItSaved(t *testing.T) {
	for _, sealingKeyset := range []bool{false, true} {
		k := keyadmin.Select(ns, "", sealingKeyset)
		t.Run(k.What(), func(t *testing.T) {
			ctx := context.Background()
			c := testenv.FakeClient().Build()
			var primary uint32
			if sealingKeyset {
				if k.Secret.Name != pipesv1.SealingKeysetSecret {
					t.Fatalf("default sealing keyset Secret %s", k.Secret)
				}
				ks, err := keyring.Sealing.Ensure(ctx, c, k.Secret, logr.Discard())
				if err != nil {
					t.Fatal(err)
				}
				primary = ks.PrimaryKeyID()
			} else {
				if k.Secret.Name != "pipes-keyset" {
					t.Fatalf("default keyset Secret %s", k.Secret)
				}
				ks, err := keyring.EnsureSecret(ctx, c, k.Secret, logr.Discard())
				if err != nil {
					t.Fatal(err)
				}
				primary = ks.PrimaryKeyID()
			}
			var status bytes.Buffer
			if err := k.WriteStatus(ctx, c, &status); err != nil || !strings.Contains(status.String(), "never backed up") {
				t.Fatalf("status before any backup: %v\n%s", err, status.String())
			}
			if _, err := k.Backup(ctx, c, &bytes.Buffer{}, func() error { return errors.New("disk full") }); err == nil {
				t.Fatal("a failed save was reported as a backup")
			}
			var out bytes.Buffer
			b, err := k.Backup(ctx, c, &out, func() error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			s := secret(t, c, k.Secret)
			if !bytes.Equal(out.Bytes(), s.Data[keyring.SecretKey]) {
				t.Fatal("the backup is not the Secret's keyset.json")
			}
			if got := keyadmin.LastBackup(s); !got.Covers(primary) || got.At.IsZero() || !got.At.Equal(b.At) {
				t.Fatalf("recorded backup %+v does not cover primary key %d", got, primary)
			}
			status.Reset()
			if err := k.WriteStatus(ctx, c, &status); err != nil || !strings.Contains(status.String(), "last backup") {
				t.Fatalf("status after the backup: %v\n%s", err, status.String())
			}
			var rotated bytes.Buffer
			if err := k.Rotate(ctx, c, &rotated); err != nil || !strings.Contains(rotated.String(), "up again now") {
				t.Fatalf("rotate: %v %s", err, rotated.String())
			}
			st, err := k.Status(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if st.Primary == primary || len(st.Keys) != 2 {
				t.Fatalf("status after a rotation: %+v", st)
			}
			if keyadmin.LastBackup(secret(t, c, k.Secret)).Covers(st.Primary) || st.LastBackup.Covers(st.Primary) {
				t.Fatal("the backup claims to hold a key added after it")
			}
			status.Reset()
			if err := st.Write(&status); err != nil || !strings.Contains(status.String(), "does not hold primary key") {
				t.Fatalf("status after a rotation: %v\n%s", err, status.String())
			}
			var pruned bytes.Buffer
			if err := k.Prune(ctx, c, &pruned); err != nil || !strings.Contains(pruned.String(), "removed key(s)") {
				t.Fatalf("prune with nothing using the old key: %v %s", err, pruned.String())
			}
		})
	}
}

func secret(t *testing.T, c client.Reader, key types.NamespacedName) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(context.Background(), key, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}
