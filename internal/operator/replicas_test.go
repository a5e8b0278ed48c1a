package operator_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/operator"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Every replica serves the backend API with its own keyring: after `keyset rotate`, the
// replica that is not the leader must seal new keys under the new primary and open
// re-encrypted credentials within seconds, and after `keyset prune` nothing it stored may
// be lost. The API calls go to that replica.
func TestKeysetRotationReachesEveryReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	env, follower := leaderAndFollower(t, testenv.Options{Webhooks: true, API: true, APIRateLimit: 1000, LeaderElection: true})
	ctx := context.Background()

	ns := "replicas"
	tok, h := backendOf(ctx, t, env, ns)
	client := func(op interface{ Addr() string }) *apiclient.Client {
		return apiclient.New("https://"+op.Addr(), apiclient.WithHTTPClient(h), apiclient.WithToken(tok), apiclient.WithNamespace(ns))
	}
	leaderAPI, followerAPI := client(env.Operator.API), client(follower.API)
	keys := map[string]string{}
	upsert := func(user string) {
		t.Helper()
		keys[user] = "sk-" + user + "-" + strings.Repeat("k", 24)
		if _, err := followerAPI.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: user, Secret: keys[user]}); err != nil {
			t.Fatalf("upsert %s through the follower: %v", user, err)
		}
	}
	keyOf := func(user string) uint32 {
		t.Helper()
		var s corev1.Secret
		name := credential.AccountName("openai", user, "") + "-credential"
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
			t.Fatal(err)
		}
		id, err := crypto.KeyIDOf(s.Data[pipesv1.CredentialCiphertextKey])
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	upsert("before")

	keysetKey := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "pipes-keyset"}
	oldID, newID, err := keyring.RotateSecret(ctx, env.Client, keysetKey)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the follower's keyring has the new primary", func() error {
		if got := follower.Keyring.Keyset().PrimaryKeyID(); got != newID {
			return fmt.Errorf("follower primary %d, want %d (was %d)", got, newID, oldID)
		}
		return nil
	})
	t.Logf("follower reloaded the rotated keyset in %s", time.Since(start).Round(time.Millisecond))

	upsert("after")
	if got := keyOf("after"); got != newID {
		t.Fatalf("the follower sealed a new key under key %d, want the new primary %d", got, newID)
	}
	waitFor(t, "the leader re-encrypts the older credential", func() error {
		if got := keyOf("before"); got != newID {
			return fmt.Errorf("still under key %d", got)
		}
		return nil
	})

	removed, err := keyring.PruneSecret(ctx, env.Client, keysetKey, func(ctx context.Context) (map[uint32]int, error) {
		return credential.KeyUsage(ctx, env.Client)
	})
	if err != nil || !slices.Contains(removed, oldID) {
		t.Fatalf("prune removed %v (err %v), want %d", removed, err, oldID)
	}
	waitFor(t, "the follower drops the pruned key", func() error {
		if slices.Contains(follower.Keyring.Keyset().KeyIDs(), oldID) {
			return fmt.Errorf("follower still holds key %d", oldID)
		}
		return nil
	})

	for name, api := range map[string]*apiclient.Client{"leader": leaderAPI, "follower": followerAPI} {
		for user, want := range keys {
			resp, err := api.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: user})
			if err != nil {
				t.Fatalf("vend %s through the %s: %v", user, name, err)
			}
			if !resp.Active || resp.Credential == nil || resp.Credential.Value != want {
				t.Fatalf("vend %s through the %s after rotate, re-encrypt and prune: active=%t error=%q", user, name, resp.Active, resp.Error)
			}
		}
	}

	// With credentials stored, a missing keyset is never silently replaced.
	_, err = keyring.EnsureSecret(ctx, env.Client, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "lost-keyset"}, logr.Discard())
	if err == nil || !strings.Contains(err.Error(), "Restore the keyset from your backup") {
		t.Fatalf("a fresh keyset would orphan the stored credentials; err = %v", err)
	}

	// The sealing keyset reaches every replica the same way, and is not silently replaced
	// while sealed values exist either.
	sealingKey := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: pipesv1.SealingKeysetSecret}
	_, newSealingID, err := keyadmin.RotateSealingKeyset(ctx, env.Client, sealingKey)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the follower's opener has the new sealing primary", func() error {
		if got := follower.Opener.Keyset().PrimaryKeyID(); got != newSealingID {
			return fmt.Errorf("follower sealing primary %d, want %d", got, newSealingID)
		}
		return nil
	})
	waitFor(t, "the public keyset seals with the new primary", func() error {
		pub, err := keyadmin.PublicKeyset(ctx, env.Client, testenv.OperatorNamespace)
		if err != nil {
			return err
		}
		v, err := sealing.Seal(pub, []byte("sk-probe-0123456789"), sealing.Context{Namespace: ns, Name: "sealed", Provider: "openai", User: "sealed"})
		if err != nil {
			return err
		}
		if id, _ := sealing.KeyIDOf(v); id != newSealingID {
			return fmt.Errorf("sealed with key %d", id)
		}
		sealed := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sealed"}, Spec: pipesv1.ConnectedAccountSpec{
			ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "sealed", APIKey: &pipesv1.APIKeySource{Sealed: v}}}
		return env.Client.Create(ctx, sealed)
	})
	_, err = keyring.Sealing.Ensure(ctx, env.Client, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "lost-sealing-keyset"}, logr.Discard())
	if err == nil || !strings.Contains(err.Error(), "Restore the sealing keyset from your backup") || !strings.Contains(err.Error(), "ConnectedAccount "+ns+"/sealed") {
		t.Fatalf("a fresh sealing keyset would orphan the sealed values; err = %v", err)
	}
}

// leaderAndFollower starts a manager with o (LeaderElection set), waits for it to lead,
// then starts a second one serving the backend API (and the public listener with
// o.Public) and makes sure it follows: the replica the tests send their requests to.
func leaderAndFollower(t *testing.T, o testenv.Options) (*testenv.Env, *operator.Operator) {
	t.Helper()
	env, err := testenv.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	select {
	case <-env.Operator.Manager.Elected():
	case <-time.After(time.Minute):
		t.Fatal("the first manager never became the leader")
	}
	follower, err := env.StartAPIReplica()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-follower.Manager.Elected():
		t.Fatal("the second manager became the leader; the test needs it to be the follower")
	case <-time.After(2 * time.Second):
	}
	return env, follower
}

// backendOf creates namespace ns with an API-key Provider "openai", and returns a
// pipes-backend token there and an HTTP client trusting the backend API.
func backendOf(ctx context.Context, t *testing.T, env *testenv.Env, ns string) (string, *http.Client) {
	t.Helper()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openai"},
		Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}); err != nil {
		t.Fatal(err)
	}
	tok, err := env.ServiceAccountToken(ctx, ns, "backend", "pipes-backend", ns, "pipes.dev")
	if err != nil {
		t.Fatal(err)
	}
	h, err := apiclient.HTTPClientWithCAData(env.APICA(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return tok, h
}
