package backup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/backup"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Disaster recovery as docs/operations.md describes it: a cluster with keys set through
// the backend API is lost; the administrator has the keyset backup and an export of the
// accounts. A fresh cluster gets the keyset before the operator starts, the Providers
// from Git, then the import; the same keys are vended. Without the keyset the import
// fails for each account and stores nothing; a second import never rolls a newer key back.
func TestRestoreIntoAFreshCluster(t *testing.T) {
	ctx := context.Background()
	const ns = "app"
	keys := map[string]string{"alice": "sk-alice-" + strings.Repeat("a", 24) + "ALC1", "bob": "sk-bob-" + strings.Repeat("b", 24) + "BOB2"}

	old, err := testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = old.Stop() }()
	seed(ctx, t, old, ns)
	oldAPI := backendClient(ctx, t, old, ns)
	for user, key := range keys {
		if _, err := oldAPI.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: user, Secret: "sk-first-" + strings.Repeat("x", 24)}); err != nil {
			t.Fatal(err)
		}
		if _, err := oldAPI.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: user, Secret: key}); err != nil { // version 2
			t.Fatal(err)
		}
	}
	// The keyset backup, taken with the command the manager logs and the docs give.
	keysetBackup := runBackupCommand(t, old)
	exported, err := backup.Export(ctx, old.Client)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(exported)
	if err != nil {
		t.Fatal(err)
	}
	for user, key := range keys {
		if strings.Contains(string(raw), key) {
			t.Fatalf("the export holds %s's key in plaintext", user)
		}
	}
	var file backup.File
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Accounts) != 2 {
		t.Fatalf("exported %d accounts, want 2", len(file.Accounts))
	}

	t.Run("without the keyset nothing is restored", func(t *testing.T) {
		other, err := testenv.Start(testenv.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = other.Stop() }()
		seed(ctx, t, other, ns)
		results, err := backup.Import(ctx, other.Client, credential.NewStore(other.Client, other.Operator.Keyring), &file)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range results {
			if r.Outcome != "failed" || !strings.Contains(fmt.Sprint(r.Err), "restore the keyset Secret the backup was made with first") {
				t.Errorf("%s: %s %v; want failed, asking for the keyset", r.Account, r.Outcome, r.Err)
			}
		}
		var secrets corev1.SecretList
		if err := other.Client.List(ctx, &secrets, client.InNamespace(ns), client.MatchingLabels{pipesv1.LabelComponent: pipesv1.ComponentCredential}); err != nil || len(secrets.Items) != 0 {
			t.Fatalf("credential Secrets stored without the keyset: %d, %v", len(secrets.Items), err)
		}
	})

	fresh, err := testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 1000, Keyset: keysetBackup})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fresh.Stop() }()
	seed(ctx, t, fresh, ns)
	store := credential.NewStore(fresh.Client, fresh.Operator.Keyring)
	results, err := backup.Import(ctx, fresh.Client, store, &file)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Outcome != "restored" {
			t.Fatalf("%s: %s %v", r.Account, r.Outcome, r.Err)
		}
	}
	freshAPI := backendClient(ctx, t, fresh, ns)
	for user, key := range keys {
		waitFor(t, user+"'s key is vended in the fresh cluster", func() error {
			resp, err := freshAPI.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: user})
			if err != nil {
				return err
			}
			if !resp.Active || resp.Credential.Value != key || resp.Credential.Version != 2 {
				return fmt.Errorf("active=%t error=%q", resp.Active, resp.Error)
			}
			return nil
		})
	}

	// The user rotates after the restore; importing the same backup again keeps the new key.
	newer := "sk-alice-" + strings.Repeat("n", 24) + "NEW3"
	if _, err := freshAPI.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "alice", Secret: newer}); err != nil {
		t.Fatal(err)
	}
	results, err = backup.Import(ctx, fresh.Client, store, &file)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Outcome != "kept" {
			t.Errorf("second import: %s %s %v; want kept", r.Account, r.Outcome, r.Err)
		}
	}
	resp, err := freshAPI.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "alice"})
	if err != nil || resp.Credential.GetValue() != newer {
		t.Fatalf("the import rolled alice's key back: %+v %v", resp, err)
	}
}

// seed creates what Git would: the namespace and the Provider.
func seed(ctx context.Context, t *testing.T, e *testenv.Env, ns string) {
	t.Helper()
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openai"},
		Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}); err != nil {
		t.Fatal(err)
	}
}

func backendClient(ctx context.Context, t *testing.T, e *testenv.Env, ns string) *apiclient.Client {
	t.Helper()
	tok, err := e.ServiceAccountToken(ctx, ns, "backend", "pipes-backend", ns, "pipes.dev")
	if err != nil {
		t.Fatal(err)
	}
	h, err := apiclient.HTTPClientWithCAData(e.APICA(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return apiclient.New(e.APIURL(), apiclient.WithHTTPClient(h), apiclient.WithToken(tok), apiclient.WithNamespace(ns))
}

func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runBackupCommand runs keyring.BackupCommand as a person would, with kubectl and a
// kubeconfig for e, and returns the file it wrote.
func runBackupCommand(t *testing.T, e *testenv.Env) []byte {
	t.Helper()
	admin, err := e.Env.AddUser(envtest.User{Name: "backup-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-o", "pipefail", "-c", keyring.BackupCommand(types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "pipes-keyset"}))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(dir, "kubeconfig"), "PATH="+e.Env.BinaryAssetsDirectory+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	data, err := os.ReadFile(filepath.Join(dir, "pipes-keyset.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.ParseKeyset(data); err != nil {
		t.Fatalf("the backup is not a keyset: %v", err)
	}
	return data
}
