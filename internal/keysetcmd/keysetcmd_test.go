package keysetcmd_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/keysetcmd"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var key = types.NamespacedName{Namespace: "pipes-system", Name: "pipes-keyset"}

// A backup writes the Secret's key material as the restore takes it, and records which
// keys it held: after a rotation the new primary is not covered, and status says so.
func TestBackupRecordsTheKeysItSaved(t *testing.T) {
	ctx := context.Background()
	c := testenv.FakeClient().Build()
	ks, err := keyring.EnsureSecret(ctx, c, key, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	var status bytes.Buffer
	if err := keysetcmd.Status(ctx, c, key, &status); err != nil || !strings.Contains(status.String(), "never backed up") {
		t.Fatalf("status before any backup: %v\n%s", err, status.String())
	}
	if _, err := keysetcmd.WriteBackup(ctx, c, key, &bytes.Buffer{}, func() error { return errors.New("disk full") }); err == nil {
		t.Fatal("a failed save was reported as a backup")
	}
	var out bytes.Buffer
	b, err := keysetcmd.WriteBackup(ctx, c, key, &out, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), s.Data[keyring.SecretKey]) {
		t.Fatal("the backup is not the Secret's keyset.json")
	}
	if got := keysetcmd.LastBackup(&s); !got.Covers(ks.PrimaryKeyID()) || got.At.IsZero() || !got.At.Equal(b.At) {
		t.Fatalf("recorded backup %+v does not cover primary key %d", got, ks.PrimaryKeyID())
	}
	if err := keysetcmd.Rotate(ctx, c, key, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	_, rotated, err := keysetcmd.Read(ctx, c, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, key, &s); err != nil {
		t.Fatal(err)
	}
	if keysetcmd.LastBackup(&s).Covers(rotated.PrimaryKeyID()) {
		t.Fatal("the backup claims to hold a key added after it")
	}
	status.Reset()
	if err := keysetcmd.Status(ctx, c, key, &status); err != nil || !strings.Contains(status.String(), "does not hold primary key") {
		t.Fatalf("status after a rotation: %v\n%s", err, status.String())
	}
}
