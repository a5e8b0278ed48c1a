package operator_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/oauthtest"
	"github.com/pipes-dev/pipes-operator/internal/operator"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Two replicas vend an expiring OAuth token at once, many times: the provider rotates
// refresh tokens (each one spends once), so a refresh done twice would spend a token twice
// and the loser would see invalid_grant. Neither may happen: one replica refreshes, the
// other reads its token; the account never falls into needs_reauthorization.
func TestOAuthRefreshRaceAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	env, follower := leaderAndFollower(t, testenv.Options{Webhooks: true, API: true, APIRateLimit: 1000, LeaderElection: true, Public: true})
	ctx := context.Background()
	const ttl = 3 * time.Second
	// Every token counts as expiring: each vend refreshes, so the replicas race every time.
	for _, op := range []*operator.Operator{env.Operator, follower} {
		op.Refresher.Skew = time.Minute
	}
	ns := "oauth-race"
	tok, h := backendOf(ctx, t, env, ns)
	server := oauthtest.Start(t, oauthtest.Options{ClientID: "c", ClientSecret: "s", RedirectURL: env.PublicURL() + wire.OAuthCallbackPath,
		AccessTokenTTL: ttl, RotateRefreshTokens: true, RequirePKCE: true})
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client",
		Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}}, Data: map[string][]byte{"secret": []byte("s")}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "github"},
		Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, OAuth: &pipesv1.OAuthSpec{AuthorizationURL: server.AuthURL(), TokenURL: server.TokenURL(),
			ClientID: "c", ClientSecretRef: &pipesv1.SecretKeyReference{Name: "client", Key: "secret"}}}}); err != nil {
		t.Fatal(err)
	}
	api := func(op *operator.Operator) *apiclient.Client {
		return apiclient.New("https://"+op.API.Addr(), apiclient.WithHTTPClient(h), apiclient.WithToken(tok), apiclient.WithNamespace(ns))
	}

	// Connect, beginning on the follower.
	req, _ := http.NewRequest(http.MethodPost, "https://"+follower.API.Addr()+"/namespaces/"+ns+"/data-integrations/github/authorize", strings.NewReader(`{"user_id":"u"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := h.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var auth wire.AuthorizeResponse
	if err := json.NewDecoder(resp.Body).Decode(&auth); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("authorize: %d %v", resp.StatusCode, err)
	}
	_ = resp.Body.Close()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(auth.URL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	callback := resp.Header.Get("Location") // on the leader's listener: the URL every replica shares
	if !strings.HasPrefix(callback, env.PublicURL()) {
		t.Fatalf("the provider sends the browser to %q", callback)
	}
	resp, err = noFollow.Get(callback)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	// The same callback again, on the other replica: the state was spent.
	replay := strings.Replace(resp.Request.URL.String(), env.Operator.Public.Addr(), follower.Public.Addr(), 1)
	if resp, err := noFollow.Get(replay); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("the callback replayed on the other replica: %v %v", err, resp)
	}

	for round := range 5 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		for i := range 12 {
			op := env.Operator
			if i%2 == 1 {
				op = follower
			}
			wg.Go(func() {
				got, err := api(op).Token(ctx, "github", wire.CredentialsRequest{UserID: "u"})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case !got.Active:
					failures = append(failures, got.Error)
				case !server.ValidAccessToken(got.Credential.Value):
					failures = append(failures, "an access token the provider does not know")
				}
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("round %d: %v", round, failures)
		}
		if s := server.Stats(); s.DoubleSpends > 0 {
			t.Fatalf("round %d: a refresh token was spent twice (%+v)", round, s)
		}
		time.Sleep(500 * time.Millisecond) // the replicas' refreshes (in the background: the token is valid) finish
	}
	if s := server.Stats(); s.Refreshes < 3 || s.DoubleSpends > 0 {
		t.Fatalf("the replicas did not race to refresh, or spent a token twice: %+v", s)
	}
	t.Logf("provider saw %+v", server.Stats())
}
