package backendapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/oauth"
	"github.com/pipes-dev/pipes-operator/internal/oauthtest"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const returnTo = "https://app.example.com/settings/connections"

// browser follows no redirect: each hop is checked by the spec.
var browser = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// hop GETs u and returns the status and the Location it redirects to.
func hop(u string) (int, string, string) {
	resp, err := browser.Get(u)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

var _ = Describe("OAuth providers", func() {
	var (
		ns, backendTok string
		server         *oauthtest.Server
	)
	const ttl = 3 * time.Second

	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		server = oauthtest.Start(GinkgoT(), oauthtest.Options{
			ClientID: "pipes-client", ClientSecret: "client-secret-value", RedirectURL: env.PublicURL() + wire.OAuthCallbackPath,
			AccessTokenTTL: ttl, RotateRefreshTokens: true, RequirePKCE: true, AllowedScopes: []string{"repo", "read:user", "gist"},
		})
		Expect(env.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gh-client", Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}},
			Data:       map[string][]byte{"secret": []byte("client-secret-value")},
		})).To(Succeed())
		Expect(env.Client.Create(ctx, &pipesv1.Provider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "github"},
			Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, DisplayName: "GitHub", OAuth: &pipesv1.OAuthSpec{
				AuthorizationURL: server.AuthURL(), TokenURL: server.TokenURL(), RevocationURL: server.RevokeURL(),
				ClientID: "pipes-client", ClientSecretRef: &pipesv1.SecretKeyReference{Name: "gh-client", Key: "secret"},
				Scopes: []string{"repo", "read:user"}, ReturnURLs: []string{returnTo},
				AuthorizationParams: map[string]string{"access_type": "offline"},
			}},
		})).To(Succeed())
		backendTok = serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns)
		// Tokens that live seconds: refresh only in the last second.
		env.Operator.Refresher.Skew = time.Second
		env.Operator.Refresher.BackoffBase, env.Operator.Refresher.BackoffMax = 500*time.Millisecond, 2*time.Second
	})

	authorize := func(_ context.Context, user, org, ret string) string {
		var out wire.AuthorizeResponse
		status, body := raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/github/authorize", backendTok,
			`{"user_id":"`+user+`","organization_id":"`+org+`","return_to":"`+ret+`"}`)
		ExpectWithOffset(1, status).To(Equal(http.StatusOK), body)
		ExpectWithOffset(1, decodeJSON(body, &out)).To(Succeed())
		return out.URL
	}
	// connect runs the browser's part: consent at the provider, back to the callback.
	connect := func(authURL string) string {
		status, callback, body := hop(authURL)
		ExpectWithOffset(1, status).To(Equal(http.StatusFound), body)
		ExpectWithOffset(1, callback).To(HavePrefix(env.PublicURL() + wire.OAuthCallbackPath))
		status, back, body := hop(callback)
		ExpectWithOffset(1, status).To(Equal(http.StatusSeeOther), body)
		return back
	}
	vend := func(ctx context.Context, user, org string) *wire.CredentialsResponse {
		got, err := api(backendTok, ns).Token(ctx, "github", wire.CredentialsRequest{UserID: user, OrganizationID: org})
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		return got
	}
	account := func(ctx context.Context, user, org string) *pipesv1.ConnectedAccount {
		ca := &pipesv1.ConnectedAccount{}
		ExpectWithOffset(1, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: credential.AccountName("github", user, org)}, ca)).To(Succeed())
		return ca
	}

	It("connects through authorize, consent and callback, stores the token encrypted, and vends it", func(ctx SpecContext) {
		authURL := authorize(ctx, "user_1", "", returnTo)
		q := mustQuery(authURL)
		Expect(q.Get("code_challenge_method")).To(Equal("S256"))
		Expect(q.Get("code_challenge")).NotTo(BeEmpty())
		Expect(q.Get("scope")).To(Equal("repo read:user"))
		Expect(q.Get("access_type")).To(Equal("offline"))
		Expect(q.Get("redirect_uri")).To(Equal(env.PublicURL() + wire.OAuthCallbackPath))
		Expect(q.Get("state")).To(MatchRegexp(`^[0-9a-f]{32}$`))

		back := connect(authURL)
		Expect(back).To(HavePrefix(returnTo + "?"))
		Expect(mustQuery(back).Get("status")).To(Equal(wire.OAuthStatusConnected))
		Expect(mustQuery(back).Get("provider")).To(Equal("github"))
		Expect(server.Stats().CodeExchanges).To(Equal(1))

		got := vend(ctx, "user_1", "")
		Expect(got.Active).To(BeTrue(), got.Error)
		Expect(got.Credential.AuthMethod).To(Equal(wire.AuthMethodOAuth))
		Expect(server.ValidAccessToken(got.Credential.Value)).To(BeTrue())
		Expect(got.Credential.ExpiresAt).NotTo(BeNil())
		Expect(*got.Credential.ExpiresAt).To(BeTemporally("~", time.Now().Add(ttl), 2*time.Second))
		Expect(got.Credential.Scopes).To(ConsistOf("repo", "read:user"))
		Expect(got.Credential.MissingScopes).To(BeEmpty())
		// The credentials route answers the same token.
		creds, err := api(backendTok, ns).Credentials(ctx, "github", wire.CredentialsRequest{UserID: "user_1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(creds.Credential.GetValue()).To(Equal(got.Credential.Value))

		Eventually(func(g Gomega) {
			ca := account(ctx, "user_1", "")
			g.Expect(ca.Status.State).To(Equal(pipesv1.StateConnected))
			g.Expect(ca.Status.Conditions).To(ContainElement(HaveField("Reason", pipesv1.ReasonConnected)))
		}).Should(Succeed())
		// Encrypted: the Secret holds no token, the status and events none either.
		var secret corev1.Secret
		Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: credential.SecretName(account(ctx, "user_1", ""))}, &secret)).To(Succeed())
		for _, v := range secret.Data {
			Expect(string(v)).NotTo(ContainSubstring(got.Credential.Value))
		}
		Expect(secret.Annotations).To(HaveKey(pipesv1.AnnotationTokenExpiry))
		var events corev1.EventList
		Expect(env.Client.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
		Expect(events.Items).To(ContainElement(HaveField("Reason", pipesv1.EventConnected)))
		for _, e := range events.Items {
			Expect(e.Message).NotTo(ContainSubstring(got.Credential.Value))
		}
		Expect(string(env.Log.Bytes())).NotTo(ContainSubstring(got.Credential.Value))
		Expect(string(env.Log.Bytes())).NotTo(ContainSubstring("client-secret-value"))
	})

	It("spends a state once, refuses made-up and expired ones, and ends a denied consent on return_to", func(ctx SpecContext) {
		authURL := authorize(ctx, "user_2", "", returnTo)
		_, callback, _ := hop(authURL)
		status, back, _ := hop(callback)
		Expect(status).To(Equal(http.StatusSeeOther))
		Expect(mustQuery(back).Get("status")).To(Equal(wire.OAuthStatusConnected))
		// Replayed: the state is spent (on whichever replica).
		status, _, body := hop(callback)
		Expect(status).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring("already"))
		// Made up.
		status, _, _ = hop(env.PublicURL() + wire.OAuthCallbackPath + "?code=x&state=" + strings.Repeat("ab", 16))
		Expect(status).To(Equal(http.StatusBadRequest))
		status, _, _ = hop(env.PublicURL() + wire.OAuthCallbackPath + "?code=x&state=../../etc")
		Expect(status).To(Equal(http.StatusBadRequest))

		// Expired: begun eleven minutes ago.
		past := *env.Operator.API.OAuth.States
		past.Now = func() time.Time { return time.Now().Add(-11 * time.Minute) }
		state, err := past.Begin(ctx, oauth.Pending{Namespace: ns, Provider: "github", UserID: "user_2", ReturnTo: returnTo, Verifier: oauth.NewVerifier()})
		Expect(err).NotTo(HaveOccurred())
		status, back, _ = hop(env.PublicURL() + wire.OAuthCallbackPath + "?code=x&state=" + state)
		Expect(status).To(Equal(http.StatusSeeOther))
		Expect(mustQuery(back).Get("error")).To(Equal(wire.OAuthStateExpired))

		server.Deny(true)
		DeferCleanup(func() { server.Deny(false) })
		_, callback, _ = hop(authorize(ctx, "user_3", "", returnTo))
		status, back, _ = hop(callback)
		Expect(status).To(Equal(http.StatusSeeOther))
		Expect(mustQuery(back).Get("status")).To(Equal("error"))
		Expect(mustQuery(back).Get("error")).To(Equal(wire.OAuthDenied))
		Expect(vend(ctx, "user_3", "").Error).To(Equal(wire.ErrorNotInstalled))
	})

	It("tells a callback URL the provider refuses (redirect_uri_mismatch) from other provider errors, without echoing what the provider sent", func(ctx SpecContext) {
		begin := func(user, ret string) string {
			return mustQuery(authorize(ctx, user, "", ret)).Get("state")
		}
		// GitHub's answer to an unregistered callback URL: back to the registered one with an error.
		status, back, _ := hop(env.PublicURL() + wire.OAuthCallbackPath + "?error=redirect_uri_mismatch&state=" + begin("user_11", returnTo))
		Expect(status).To(Equal(http.StatusSeeOther))
		Expect(mustQuery(back).Get("error")).To(Equal(wire.OAuthRedirectMismatch))
		status, _, body := hop(env.PublicURL() + wire.OAuthCallbackPath + "?error=redirect_uri_mismatch&state=" + begin("user_11", ""))
		Expect(status).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring(env.PublicURL() + wire.OAuthCallbackPath))
		Expect(body).To(ContainSubstring("register"))

		status, back, _ = hop(env.PublicURL() + wire.OAuthCallbackPath + "?error=invalid_scope&state=" + begin("user_11", returnTo))
		Expect(status).To(Equal(http.StatusSeeOther))
		Expect(mustQuery(back).Get("error")).To(Equal(wire.OAuthProviderError))
		Expect(mustQuery(back).Get("provider_error")).To(Equal("invalid_scope"))
		// What is not an RFC 6749 error code is not passed on.
		status, back, _ = hop(env.PublicURL() + wire.OAuthCallbackPath + "?error=%3Cscript%3E%22x&state=" + begin("user_11", returnTo))
		Expect(status).To(Equal(http.StatusSeeOther))
		Expect(mustQuery(back).Get("provider_error")).To(Equal("invalid"))
		status, _, body = hop(env.PublicURL() + wire.OAuthCallbackPath + "?error=%3Cscript%3E%22x&state=" + begin("user_11", ""))
		Expect(status).To(Equal(http.StatusBadRequest))
		Expect(body).NotTo(ContainSubstring("script"))
		Expect(vend(ctx, "user_11", "").Error).To(Equal(wire.ErrorNotInstalled))
	})

	It("refreshes an expiring token once for many concurrent callers, spending each refresh token once", func(ctx SpecContext) {
		connect(authorize(ctx, "user_4", "", returnTo))
		first := vend(ctx, "user_4", "").Credential.Value
		time.Sleep(ttl) // expired
		var wg sync.WaitGroup
		values := make([]string, 8)
		for i := range values {
			wg.Go(func() {
				defer GinkgoRecover()
				got := vend(ctx, "user_4", "")
				Expect(got.Active).To(BeTrue(), got.Error)
				values[i] = got.Credential.Value
			})
		}
		wg.Wait()
		for _, v := range values {
			Expect(v).NotTo(Equal(first))
			Expect(server.ValidAccessToken(v)).To(BeTrue())
		}
		Expect(server.Stats().DoubleSpends).To(BeZero())
		Expect(server.Stats().Refreshes).To(BeNumerically(">=", 1))
	})

	It("serves a still-valid token without waiting while the token endpoint is slow or fails, and needs reauthorization once the refresh token is revoked", func(ctx SpecContext) {
		connect(authorize(ctx, "user_5", "", returnTo))
		time.Sleep(ttl - 900*time.Millisecond) // within the skew, not yet expired
		// A slow provider: the vend does not wait for the refresh of a token still valid.
		server.SlowTokenEndpoint(2 * time.Second)
		start := time.Now()
		got := vend(ctx, "user_5", "")
		Expect(time.Since(start)).To(BeNumerically("<", time.Second))
		Expect(got.Active).To(BeTrue())
		server.SlowTokenEndpoint(0)
		// A failing one: still valid, still served.
		server.FailTokenEndpoint(http.StatusServiceUnavailable, 3)
		got = vend(ctx, "user_5", "")
		Expect(got.Active).To(BeTrue())
		Expect(server.ValidAccessToken(got.Credential.Value)).To(BeTrue())

		server.RevokeRefreshTokens()
		// Until the failures' backoff ends, a vend of the expired token answers 503.
		Eventually(func(g Gomega) string {
			got, err := api(backendTok, ns).Token(ctx, "github", wire.CredentialsRequest{UserID: "user_5"})
			g.Expect(err).NotTo(HaveOccurred())
			return got.Error
		}, 15*time.Second).Should(Equal(wire.ErrorNeedsReauthorization))
		Eventually(func(g Gomega) {
			ca := account(ctx, "user_5", "")
			g.Expect(ca.Status.State).To(Equal(pipesv1.StateNeedsReauthorization))
			var events corev1.EventList
			g.Expect(env.Client.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(HaveField("Reason", pipesv1.EventReauthorizationNeeded)))
		}).Should(Succeed())
		// Connecting again repairs it.
		connect(authorize(ctx, "user_5", "", returnTo))
		Eventually(func() bool { return vend(ctx, "user_5", "").Active }).Should(BeTrue())
		Eventually(func() pipesv1.ConnectedAccountState { return account(ctx, "user_5", "").Status.State }).Should(Equal(pipesv1.StateConnected))
	})

	It("narrows scopes by organization, needs an organization's own client when configured so, and refuses foreign return URLs", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, &pipesv1.OrganizationProvider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "github-org-1"},
			Spec:       pipesv1.OrganizationProviderSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "github"}, OrganizationID: "org_1", Enabled: ptr.To(true), Scopes: []string{"repo"}},
		})).To(Succeed())
		Eventually(func() string { return mustQuery(authorize(ctx, "user_6", "org_1", "")).Get("scope") }).Should(Equal("repo"))
		back := connect(authorize(ctx, "user_6", "org_1", returnTo))
		Expect(mustQuery(back).Get("status")).To(Equal(wire.OAuthStatusConnected))
		got := vend(ctx, "user_6", "org_1")
		Expect(got.Credential.Scopes).To(ConsistOf("repo"))

		status, body := raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/github/authorize", backendTok, `{"user_id":"u","return_to":"https://evil.example.com/"}`)
		Expect(status).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring("returnURLs"))
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		// The API reads Providers from the manager's cache: a moment behind the create.
		Eventually(func() int {
			status, _ := raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/openai/authorize", backendTok, `{"user_id":"u"}`)
			return status
		}).Should(Equal(http.StatusUnprocessableEntity))

		Expect(env.Client.Create(ctx, &pipesv1.Provider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "slack"},
			Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, OAuth: &pipesv1.OAuthSpec{
				AuthorizationURL: server.AuthURL(), TokenURL: server.TokenURL(), CredentialsMode: pipesv1.OAuthCredentialsOrganization,
			}},
		})).To(Succeed())
		Eventually(func() int {
			status, _ := raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/slack/authorize", backendTok, `{"user_id":"u","organization_id":"org_2"}`)
			return status
		}).Should(Equal(http.StatusConflict))
		_, body = raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/slack/authorize", backendTok, `{"user_id":"u","organization_id":"org_2"}`)
		Expect(body).To(ContainSubstring(wire.CodeNotConfigured))
		Expect(body).To(ContainSubstring("spec.credentials"))

		// Only callers who may connect the account may start its flow.
		vendor := serviceAccountToken(ctx, ns, "vendor", "pipes-vendor", ns)
		status, _ = raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/github/authorize", vendor, `{"user_id":"u"}`)
		Expect(status).To(Equal(http.StatusForbidden))
	})

	It("imports existing tokens with the hosted product's rules, and revokes the refresh token on disconnect", func(ctx SpecContext) {
		path := "/namespaces/" + ns + "/user_management/users/%s/connected_accounts/github"
		post := func(user, body string) (int, string) {
			return raw(http.MethodPost, fmt.Sprintf(path, user), backendTok, body)
		}
		expires := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		status, body := post("imp_1", `{"access_token":"at-imported-0001","refresh_token":"rt-imported-0001","expires_at":"`+expires+`","scopes":["repo"]}`)
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(body).To(ContainSubstring(`"state":"connected"`))
		Expect(body).NotTo(ContainSubstring("at-imported"))
		got := vend(ctx, "imp_1", "")
		Expect(got.Credential.GetValue()).To(Equal("at-imported-0001"))
		Expect(got.Credential.MissingScopes).To(ConsistOf("read:user"))

		status, body = post("imp_2", `{"access_token":"at-imported-0002"}`)
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(vend(ctx, "imp_2", "").Credential.GetValue()).To(Equal("at-imported-0002"))

		status, body = post("imp_3", `{}`)
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(body).To(ContainSubstring(`"state":"needs_reauthorization"`))
		Expect(vend(ctx, "imp_3", "").Error).To(Equal(wire.ErrorNeedsReauthorization))
		Eventually(func() pipesv1.ConnectedAccountState { return account(ctx, "imp_3", "").Status.State }).Should(Equal(pipesv1.StateNeedsReauthorization))

		status, body = post("imp_4", `{"access_token":"at-x","expires_at":"`+expires+`"}`)
		Expect(status).To(Equal(http.StatusUnprocessableEntity), body)
		Expect(body).To(ContainSubstring("refresh_token"))
		status, _ = post("imp_4", `{"refresh_token":"rt-x","expires_at":"`+expires+`"}`)
		Expect(status).To(Equal(http.StatusUnprocessableEntity))
		status, body = post("imp_1", `{"access_token":"at-again"}`)
		Expect(status).To(Equal(http.StatusConflict), body)

		// A token from the real flow is revoked at the provider when the user disconnects.
		connect(authorize(ctx, "user_7", "", returnTo))
		access := vend(ctx, "user_7", "").Credential.Value
		Expect(server.ValidAccessToken(access)).To(BeTrue())
		Expect(api(backendTok, ns).Disconnect(ctx, "user_7", "github", "")).To(Succeed())
		Expect(server.ValidAccessToken(access)).To(BeFalse())
		Eventually(func() string { return vend(ctx, "user_7", "").Error }).Should(Equal(wire.ErrorNotInstalled))
	})

	It("ends on return_to with token_exchange_failed when the provider's token endpoint fails, and refreshes ahead of expiry without any vend", func(ctx SpecContext) {
		_, callback, _ := hop(authorize(ctx, "user_8", "", returnTo))
		server.FailTokenEndpoint(http.StatusInternalServerError, 1)
		status, back, _ := hop(callback)
		Expect(status).To(Equal(http.StatusSeeOther))
		Expect(mustQuery(back).Get("error")).To(Equal(wire.OAuthExchangeFailed))
		Expect(vend(ctx, "user_8", "").Error).To(Equal(wire.ErrorNotInstalled))

		connect(authorize(ctx, "user_9", "", returnTo))
		var secret corev1.Secret
		key := client.ObjectKey{Namespace: ns, Name: credential.SecretName(account(ctx, "user_9", ""))}
		Expect(env.Client.Get(ctx, key, &secret)).To(Succeed())
		first := credential.Describe(&secret)
		// The leader refreshes a quarter of the lifetime before expiry, with nobody vending.
		Eventually(func() int64 {
			Expect(env.Client.Get(ctx, key, &secret)).To(Succeed())
			return credential.Describe(&secret).Version
		}, 3*ttl).Should(BeNumerically(">", first.Version))
		Expect(credential.Describe(&secret).TokenExpiry).To(BeTemporally(">", first.TokenExpiry))
		Expect(server.Stats().DoubleSpends).To(BeZero())
	})

	It("retries a failing token endpoint with backoff, not at once, says why, and recovers when it answers again", func(ctx SpecContext) {
		connect(authorize(ctx, "user_10", "", returnTo))
		ca := account(ctx, "user_10", "")
		key := client.ObjectKey{Namespace: ns, Name: credential.SecretName(ca)}
		server.FailTokenEndpoint(http.StatusServiceUnavailable, 1<<20)
		before := server.Stats().FailuresInjected
		// Two token lifetimes: the leader's refresh ahead of expiry fails, and so does every
		// retry. Without backoff each failure's own write of the Secret reconciles the account
		// again at once: hundreds of requests. With it (0.5 s doubling to 2 s): a handful.
		time.Sleep(2 * ttl)
		attempts := server.Stats().FailuresInjected - before
		Expect(attempts).To(BeNumerically(">=", 2), "the refresh is retried")
		Expect(attempts).To(BeNumerically("<=", 8), "the refresh is retried with backoff")
		var secret corev1.Secret
		Expect(env.Client.Get(ctx, key, &secret)).To(Succeed())
		stored := credential.Describe(&secret)
		Expect(stored.RefreshFailures).To(BeNumerically(">=", 2))
		Expect(stored.RefreshRetryAt).NotTo(BeZero())
		Expect(secret.Annotations).NotTo(HaveKey(pipesv1.AnnotationRefreshing), "the lock is released")
		Eventually(func(g Gomega) {
			var events corev1.EventList
			g.Expect(env.Client.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(And(
				HaveField("Reason", pipesv1.EventRefreshFailed), HaveField("Type", corev1.EventTypeWarning),
				HaveField("InvolvedObject.Name", ca.Name), HaveField("Message", ContainSubstring("503")))))
		}).Should(Succeed())
		// The token has expired: a vend answers 503 (retry later), never a stale token.
		status, body := raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/github/token", backendTok, `{"user_id":"user_10"}`)
		Expect(status).To(Equal(http.StatusServiceUnavailable), body)
		Expect(body).To(ContainSubstring("next attempt"))

		server.FailTokenEndpoint(0, 0)
		Eventually(func(g Gomega) {
			got, err := api(backendTok, ns).Token(ctx, "github", wire.CredentialsRequest{UserID: "user_10"})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.Active).To(BeTrue())
			g.Expect(server.ValidAccessToken(got.Credential.Value)).To(BeTrue())
		}, 10*time.Second).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(env.Client.Get(ctx, key, &secret)).To(Succeed())
			g.Expect(secret.Annotations).NotTo(HaveKey(pipesv1.AnnotationRefreshRetry), "a success clears the failures")
		}).Should(Succeed())
		Expect(server.Stats().DoubleSpends).To(BeZero())
	})

	It("uses an organization's own client when the Provider says so", func(ctx SpecContext) {
		org := oauthtest.Start(GinkgoT(), oauthtest.Options{ClientID: "org-client", ClientSecret: "org-secret",
			RedirectURL: env.PublicURL() + wire.OAuthCallbackPath, RequirePKCE: true})
		Expect(env.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "org-client", Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}},
			Data:       map[string][]byte{"secret": []byte("org-secret")},
		})).To(Succeed())
		Expect(env.Client.Create(ctx, &pipesv1.Provider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "slack"},
			Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, OAuth: &pipesv1.OAuthSpec{
				AuthorizationURL: org.AuthURL(), TokenURL: org.TokenURL(), CredentialsMode: pipesv1.OAuthCredentialsOrganization, ReturnURLs: []string{returnTo},
			}},
		})).To(Succeed())
		Expect(env.Client.Create(ctx, &pipesv1.OrganizationProvider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "slack-org-5"},
			Spec: pipesv1.OrganizationProviderSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "slack"}, OrganizationID: "org_5",
				Credentials: &pipesv1.OrganizationOAuthCredentials{ClientID: "org-client", ClientSecretRef: pipesv1.SecretKeyReference{Name: "org-client", Key: "secret"}}},
		})).To(Succeed())
		var authURL string
		Eventually(func() int {
			var status int
			var body string
			status, body = raw(http.MethodPost, "/namespaces/"+ns+"/data-integrations/slack/authorize", backendTok, `{"user_id":"u","organization_id":"org_5","return_to":"`+returnTo+`"}`)
			var out wire.AuthorizeResponse
			_ = decodeJSON(body, &out)
			authURL = out.URL
			return status
		}).Should(Equal(http.StatusOK))
		Expect(mustQuery(authURL).Get("client_id")).To(Equal("org-client"))
		back := connect(authURL)
		Expect(mustQuery(back).Get("status")).To(Equal(wire.OAuthStatusConnected))
		Expect(org.Stats().CodeExchanges).To(Equal(1))
	})
})

func mustQuery(u string) url.Values {
	parsed, err := url.Parse(u)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return parsed.Query()
}

func decodeJSON(body string, v any) error { return json.Unmarshal([]byte(body), v) }
