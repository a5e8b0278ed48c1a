package operator_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/operator"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Widget sessions work whichever replica a request reaches: a token issued by one replica
// is accepted by the other's public listener, and when the leader rotates the signing key,
// the follower verifies tokens signed with the new key. The requests go to the follower.
func TestWidgetSessionsOnEveryReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	const ttl, rotation = 3 * time.Second, 6 * time.Second
	env, follower := leaderAndFollower(t, testenv.Options{Webhooks: true, API: true, APIRateLimit: 1000, LeaderElection: true,
		Public: true, WidgetTokenTTL: ttl, WidgetKeyRotation: rotation})
	ctx := context.Background()

	ns := "widget-replicas"
	tok, h := backendOf(ctx, t, env, ns)
	backend := func(op *operator.Operator) *apiclient.Client {
		return apiclient.New("https://"+op.API.Addr(), apiclient.WithHTTPClient(h), apiclient.WithToken(tok), apiclient.WithNamespace(ns))
	}
	issue := func(op *operator.Operator, user string) string {
		t.Helper()
		w, err := backend(op).WidgetToken(ctx, wire.WidgetTokenRequest{UserID: user})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	setKey := func(op *operator.Operator, widgetToken, key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, "http://"+op.Public.Addr()+"/widget/api/v1/providers/openai/api-key", strings.NewReader(`{"secret":"`+key+`"}`))
		req.Header.Set("Authorization", "Bearer "+widgetToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Issued by the follower, used on the follower; issued by the leader, used on the follower.
	for i, issuer := range []*operator.Operator{follower, env.Operator} {
		key := "sk-replica-key-0000000" + string(rune('1'+i))
		if status, body := setKey(follower, issue(issuer, "user_1"), key); status != http.StatusOK {
			t.Fatalf("a token issued by replica %d on the follower: %d %s", i, status, body)
		}
		// The leader vends from its cache, which follows the follower's write through its
		// watch: at once or within moments, not before the write (docs/api.md).
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got, err := backend(env.Operator).Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_1"})
			if err == nil && got.Credential.GetValue() == key {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("vend on the leader 10 s after the follower stored the key: %v %+v", err, got)
			}
		}
	}

	// The leader rotates the signing key; the follower follows.
	key := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: pipesv1.WidgetKeysetSecret}
	primary := func() uint32 {
		var s corev1.Secret
		if err := env.Client.Get(ctx, key, &s); err != nil {
			t.Fatal(err)
		}
		ks, err := keyring.WidgetSigning.FromSecret(&s)
		if err != nil {
			t.Fatal(err)
		}
		return ks.PrimaryKeyID()
	}
	before := primary()
	deadline := time.Now().Add(4 * rotation)
	for primary() == before {
		if time.Now().After(deadline) {
			t.Fatalf("the leader did not rotate the widget signing key within %s (period %s)", 4*rotation, rotation)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rotatedAt, after := time.Now(), primary()
	for follower.Widgets.Keyset().PrimaryKeyID() != after {
		if time.Since(rotatedAt) > 10*time.Second {
			t.Fatal("the follower never loaded the rotated widget signing keyset")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the follower held the rotated signing key %s after the test saw the Secret change", time.Since(rotatedAt).Round(time.Millisecond))
	if status, body := setKey(follower, issue(env.Operator, "user_1"), "sk-replica-key-after-rotation"); status != http.StatusOK {
		t.Fatalf("a token signed with the rotated key, on the follower: %d %s", status, body)
	}
	// One more period: the key retired by this rotation goes at the next, the one before is gone.
	for time.Since(rotatedAt) < rotation+2*time.Second {
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(follower.Widgets.Keyset().KeyIDs()); n > 2 {
		t.Fatalf("the signing keyset holds %d keys after two rotations; retired keys are not dropped", n)
	}
}
