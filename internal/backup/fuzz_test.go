package backup_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/backup"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

// FuzzImport reads arbitrary bytes as a credential backup (`manager backup import`, as
// cmd/manager decodes it) and imports it into a fake cluster holding the keyset it was
// made with: no panic; one result per account, failed exactly when it has an error; a
// restored credential is one that opened under this keyset, and nothing rolls a
// credential back.
func FuzzImport(f *testing.F) {
	kek, err := crypto.NewKeyset()
	if err != nil {
		f.Fatal(err)
	}
	scheme := operator.Scheme()
	ctx := context.Background()
	// A genuine export to start from: one account with a key, one without.
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	store := credential.NewStore(c, keyring.New(kek))
	withKey := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "openai-alice", UID: "uid-a"},
		Spec: pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "alice"}}
	without := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "openai-bob", UID: "uid-b"},
		Spec: pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "bob"}}
	for _, ca := range []*pipesv1.ConnectedAccount{withKey, without} {
		if err := c.Create(ctx, ca); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := store.Put(ctx, withKey, nil, []byte("sk-alice-0123456789abcdef"), credential.Stored{Version: 2, Last4: "cdef"}); err != nil {
		f.Fatal(err)
	}
	export, err := backup.Export(ctx, c)
	if err != nil {
		f.Fatal(err)
	}
	good, err := json.Marshal(export)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), `"version":2`, `"version":-9223372036854775808`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"version":2`, `"version":99999999999999999999`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"uid":"uid-a"`, `"uid":"uid-other"`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"ciphertext":"`, `"ciphertext":"AAAA`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"name":"openai-alice"`, `"name":"../\u0000"`, 1)))
	f.Add([]byte(`{"format":"pipes.dev/credential-backup/v1","accounts":[{"namespace":"","name":"","credential":{"version":1,"ciphertext":null}}]}`))
	f.Add([]byte(`{"format":"pipes.dev/credential-backup/v1","accounts":[{"name":"a","namespace":"app","credential":{"rotatedAt":"not a time"}}]}`))
	f.Add([]byte(`{"format":"other","accounts":[]}`))
	f.Add([]byte(strings.Repeat("[", 100_000)))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var file backup.File
		if err := json.NewDecoder(strings.NewReader(string(in))).Decode(&file); err != nil {
			return // refused before anything is read or written
		}
		target := fake.NewClientBuilder().WithScheme(scheme).Build()
		results, err := backup.Import(ctx, target, credential.NewStore(target, keyring.New(kek)), &file)
		if err != nil {
			if file.Format == backup.Format {
				t.Fatalf("a backup of the right format refused whole: %v", err)
			}
			return
		}
		if len(results) != len(file.Accounts) {
			t.Fatalf("%d results for %d accounts", len(results), len(file.Accounts))
		}
		for i, r := range results {
			if (r.Outcome == "failed") != (r.Err != nil) || !slices.Contains([]string{"restored", "created", "kept", "failed"}, r.Outcome) {
				t.Fatalf("account %d: outcome %q, error %v", i, r.Outcome, r.Err)
			}
			a := file.Accounts[i]
			if r.Outcome != "restored" {
				continue
			}
			var ca pipesv1.ConnectedAccount
			if err := target.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: a.Name}, &ca); err != nil {
				t.Fatalf("restored %s/%s, which does not exist: %v", a.Namespace, a.Name, err)
			}
			s, err := credential.NewStore(target, keyring.New(kek)).Get(ctx, &ca)
			if err != nil || s == nil {
				t.Fatalf("restored %s/%s without a credential Secret: %v", a.Namespace, a.Name, err)
			}
			if d := credential.Describe(s); d.Version != a.Credential.Version {
				t.Fatalf("restored at version %d, the backup says %d", d.Version, a.Credential.Version)
			}
		}
	})
}
