package backendapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

func expectAPIError(err error, status int, code string) *apiclient.Error {
	var e *apiclient.Error
	ExpectWithOffset(1, err).To(BeAssignableToTypeOf(e))
	e = err.(*apiclient.Error)
	ExpectWithOffset(1, e.Status).To(Equal(status), e.Message)
	ExpectWithOffset(1, e.Code).To(Equal(code), e.Message)
	return e
}

// raw sends a request as-is to the suite's server and returns status and body.
func raw(method, path, tok, body string) (int, string) {
	return rawAt(env.APIURL(), method, path, tok, body)
}

// rawAt sends a request as-is to the server at base.
func rawAt(base, method, path, tok, body string) (int, string) {
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := apiHTTP.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var _ = Describe("Backend API", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
	})

	It("upserts, vends, rotates, gates by organization and disconnects, never storing plaintext", func(ctx SpecContext) {
		backend := api(serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns), "")
		key1 := "sk-proj-" + strings.Repeat("x", 40) + "AAAA"
		key2 := "sk-proj-" + strings.Repeat("y", 40) + "BBBB"
		user := wire.CredentialsRequest{UserID: "user_a", OrganizationID: "org_9"}

		By("vending before anything is stored: not_installed")
		resp, err := backend.Credentials(ctx, "openai", user)
		Expect(err).NotTo(HaveOccurred())
		Expect(*resp).To(Equal(wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}))

		By("upserting a key")
		acct, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", OrganizationID: "org_9", Secret: key1})
		Expect(err).NotTo(HaveOccurred())
		Expect(acct.Object).To(Equal("connected_account"))
		Expect(acct.UserID).To(Equal("user_a"))
		Expect(acct.OrganizationID).To(Equal(ptr.To("org_9")))
		Expect(acct.State).To(Equal("connected"))
		Expect(acct.AuthMethod).To(Equal(wire.AuthMethodAPIKey))
		Expect(acct.APIKeyLast4).To(Equal("AAAA"))
		Expect(acct.ID).NotTo(BeEmpty())
		Expect(acct.Scopes).To(BeEmpty())

		resp, err = backend.Credentials(ctx, "openai", user)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Active).To(BeTrue())
		Expect(resp.Credential).To(Equal(&wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: key1, Version: 1}))

		By("upserting again: the new key replaces the old")
		acct2, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", OrganizationID: "org_9", Secret: key2})
		Expect(err).NotTo(HaveOccurred())
		Expect(acct2.ID).To(Equal(acct.ID))
		Expect(acct2.APIKeyLast4).To(Equal("BBBB"))
		resp, err = backend.Credentials(ctx, "openai", user)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Credential.Value).To(Equal(key2))
		Expect(resp.Credential.Version).To(BeEquivalentTo(2))

		By("the account shows up as a ConnectedAccount the operator reconciles")
		ca := &pipesv1.ConnectedAccount{}
		Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: credential.AccountName("openai", "user_a", "org_9")}, ca)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(ca), ca)).To(Succeed())
			g.Expect(ca.Status.State).To(Equal(pipesv1.StateConnected))
			g.Expect(ca.Status.APIKeyLast4).To(Equal("BBBB"))
			g.Expect(ca.Status.CredentialVersion).To(BeEquivalentTo(2))
		}).Should(Succeed())

		got, err := backend.ConnectedAccount(ctx, "user_a", "openai", "org_9")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.APIKeyLast4).To(Equal("BBBB"))

		By("disabling the provider for org_9 through the organization API")
		cfg, err := backend.PutOrganizationConfiguration(ctx, "org_9", "openai", wire.PutDataIntegrationConfigurationRequest{Enabled: ptr.To(false)})
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Enabled).To(BeFalse())
		Eventually(func() string {
			r, err := backend.Credentials(ctx, "openai", user)
			Expect(err).NotTo(HaveOccurred())
			return r.Error
		}).Should(Equal(wire.ErrorNotInstalled))
		other, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_a"})
		Expect(err).NotTo(HaveOccurred())
		Expect(other.Error).To(Equal(wire.ErrorNotInstalled), "no account exists without an organization")

		_, err = backend.PutOrganizationConfiguration(ctx, "org_9", "openai", wire.PutDataIntegrationConfigurationRequest{Enabled: ptr.To(true)})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() bool {
			r, err := backend.Credentials(ctx, "openai", user)
			Expect(err).NotTo(HaveOccurred())
			return r.Active
		}).Should(BeTrue())

		By("searching the API server, etcd and the log: the plaintext is nowhere")
		for _, key := range []string{key1, key2} {
			hits, err := testenv.APIObjectsContaining(ctx, env.Config, []byte(key))
			Expect(err).NotTo(HaveOccurred())
			Expect(hits).To(BeEmpty())
			found, err := testenv.EtcdOccurrences(env.EtcdDataDir(), []byte(key))
			Expect(err).NotTo(HaveOccurred())
			Expect(found).To(BeEmpty())
			Expect(env.Log.Bytes()).NotTo(ContainSubstring(key))
		}
		Expect(env.Log.Bytes()).To(ContainSubstring(`"action": "vend"`), "vends are audited")

		By("disconnecting")
		Expect(backend.Disconnect(ctx, "user_a", "openai", "org_9")).To(Succeed())
		Eventually(func() string {
			r, err := backend.Credentials(ctx, "openai", user)
			Expect(err).NotTo(HaveOccurred())
			return r.Error
		}).Should(Equal(wire.ErrorNotInstalled))
		Eventually(func() error {
			var s corev1.Secret
			return env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: credential.SecretName(ca)}, &s)
		}).Should(MatchError(ContainSubstring("not found")))
		_, err = backend.ConnectedAccount(ctx, "user_a", "openai", "org_9")
		_ = expectAPIError(err, http.StatusNotFound, wire.CodeNotFound)

		By("reconnecting at once: the new account stores its own key under the same names")
		again := "sk-reconnect-" + strings.Repeat("r", 20) + "RE42"
		acct, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", OrganizationID: "org_9", Secret: again})
		Expect(err).NotTo(HaveOccurred())
		Expect(acct.APIKeyLast4).To(Equal("RE42"))
		r, err := backend.Credentials(ctx, "openai", user)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Active).To(BeTrue())
		Expect(r.Credential.Value).To(Equal(again))
	})

	It("authorizes every route with Kubernetes RBAC, and accepts only pipes.dev tokens when the audience is required", func(ctx SpecContext) {
		url := strictServer()
		aud := backendapi.Audience
		backendTok := serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns, aud)
		backend := apiAt(url, backendTok, "")
		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u1", Secret: "sk-" + strings.Repeat("1", 30)})
		Expect(err).NotTo(HaveOccurred())
		_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u2", Secret: "sk-" + strings.Repeat("2", 30)})
		Expect(err).NotTo(HaveOccurred())

		nobody := apiAt(url, serviceAccountToken(ctx, ns, "nobody", "", "", aud), "")
		vendor := apiAt(url, serviceAccountToken(ctx, ns, "vendor", "pipes-vendor", ns, aud), "")

		By("a vendor narrowed by resourceNames to u1's account")
		Expect(env.Client.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vend-u1"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"pipes.dev"}, Resources: []string{"connectedaccounts"}, Verbs: []string{"vend"},
				ResourceNames: []string{credential.AccountName("openai", "u1", "")}}},
		})).To(Succeed())
		Expect(env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "narrow"}})).To(Succeed())
		bind(ctx, ns, "narrow", rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "vend-u1"}, ns, "narrow")
		narrow := apiAt(url, token(ctx, ns, "narrow", aud), "")

		By("a backend ServiceAccount of another namespace, aiming at this one")
		otherNS := newNamespace(ctx)
		foreign := apiAt(url, serviceAccountToken(ctx, otherNS, "backend", "pipes-backend", otherNS, aud), ns)

		By("the backend's own ServiceAccount, with a token for the API server's audience (an automounted pod token)")
		apiserverAudience := apiAt(url, token(ctx, ns, "backend"), "")

		watch := func(c *apiclient.Client, users ...string) error {
			req := wire.WatchRequest{TimeoutSeconds: 1}
			for _, u := range users {
				req.Credentials = append(req.Credentials, wire.CredentialRef{Provider: "openai", UserID: u})
			}
			_, err := c.Watch(ctx, req)
			return err
		}
		type route struct {
			name string
			call func(*apiclient.Client) error
		}
		routes := []route{
			{"upsert", func(c *apiclient.Client) error {
				_, err := c.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u1", Secret: "sk-" + strings.Repeat("1", 30)})
				return err
			}},
			{"vend u1", func(c *apiclient.Client) error {
				_, err := c.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u1"})
				return err
			}},
			{"vend u2", func(c *apiclient.Client) error {
				_, err := c.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u2"})
				return err
			}},
			{"watch u1", func(c *apiclient.Client) error { return watch(c, "u1") }},
			{"watch u1 u2", func(c *apiclient.Client) error { return watch(c, "u1", "u2") }},
			{"list providers", func(c *apiclient.Client) error {
				_, err := c.DataProviders(ctx, "u1", "", apiclient.Page{})
				return err
			}},
			{"get account", func(c *apiclient.Client) error {
				_, err := c.ConnectedAccount(ctx, "u1", "openai", "")
				return err
			}},
			{"list org configs", func(c *apiclient.Client) error {
				_, err := c.OrganizationConfigurations(ctx, "org_1", apiclient.Page{})
				return err
			}},
			{"put org config", func(c *apiclient.Client) error {
				_, err := c.PutOrganizationConfiguration(ctx, "org_1", "openai", wire.PutDataIntegrationConfigurationRequest{Enabled: ptr.To(true)})
				return err
			}},
			{"disconnect u2", func(c *apiclient.Client) error { return c.Disconnect(ctx, "u2", "openai", "") }},
		}
		allowed := map[string]map[string]bool{
			"nobody":  {},
			"foreign": {},
			"vendor":  {"vend u1": true, "vend u2": true, "watch u1": true, "watch u1 u2": true},
			"narrow":  {"vend u1": true, "watch u1": true},
			"backend": {"upsert": true, "vend u1": true, "vend u2": true, "watch u1": true, "watch u1 u2": true, "list providers": true,
				"get account": true, "list org configs": true, "put org config": true, "disconnect u2": true},
		}
		callers := []struct {
			name string
			c    *apiclient.Client
		}{{"nobody", nobody}, {"foreign", foreign}, {"vendor", vendor}, {"narrow", narrow}, {"apiserver-audience", apiserverAudience}, {"backend", backend}}
		for _, caller := range callers {
			for _, r := range routes {
				err := r.call(caller.c)
				if caller.name == "apiserver-audience" {
					e := expectAPIError(err, http.StatusUnauthorized, wire.CodeUnauthorized)
					Expect(e.Message).To(ContainSubstring(`audience "pipes.dev"`), r.name)
					Expect(e.Message).To(ContainSubstring("--audience pipes.dev"), r.name)
					continue
				}
				if allowed[caller.name][r.name] {
					Expect(err).NotTo(HaveOccurred(), "%s: %s", caller.name, r.name)
					continue
				}
				e := expectAPIError(err, http.StatusForbidden, wire.CodeForbidden)
				Expect(e.Message).To(ContainSubstring("may not"), "%s: %s", caller.name, r.name)
				Expect(e.Message).To(ContainSubstring(ns))
			}
		}

		By("no token, a bad token")
		for _, base := range []string{url, env.APIURL()} {
			status, body := rawAt(base, http.MethodPost, "/data-integrations/openai/credentials", "", `{"user_id":"u1"}`)
			Expect(status).To(Equal(http.StatusUnauthorized))
			Expect(body).To(ContainSubstring(wire.CodeUnauthorized))
			status, _ = rawAt(base, http.MethodPost, "/data-integrations/openai/credentials", "not-a-token", `{"user_id":"u1"}`)
			Expect(status).To(Equal(http.StatusUnauthorized))
		}

		By("without --api-require-audience, tokens for either audience are accepted")
		for _, tok := range []string{token(ctx, ns, "backend"), token(ctx, ns, "backend", aud)} {
			_, err := api(tok, "").Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u1"})
			Expect(err).NotTo(HaveOccurred())
		}
	})

	It("answers bad requests with a code and a message that says what to fix", func(ctx SpecContext) {
		tok := serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns)
		backend := api(tok, "")
		Expect(env.Client.Create(ctx, oauthProvider(ns, "github"))).To(Succeed())

		_, err := backend.UpsertAPIKey(ctx, "nope", wire.UpsertAPIKeyRequest{UserID: "u", Secret: "sk-" + strings.Repeat("n", 30)})
		Expect(expectAPIError(err, http.StatusNotFound, wire.CodeNotFound).Message).To(ContainSubstring(`no Provider "nope"`))
		_, err = backend.UpsertAPIKey(ctx, "github", wire.UpsertAPIKeyRequest{UserID: "u", Secret: "sk-" + strings.Repeat("n", 30)})
		Expect(expectAPIError(err, http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch).Message).To(ContainSubstring("OAuth"))
		_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u", Secret: ""})
		Expect(expectAPIError(err, http.StatusBadRequest, wire.CodeInvalidRequest).Message).To(ContainSubstring("secret is empty"))
		padded := "sk-" + strings.Repeat("p", 30) + "\n"
		_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u", Secret: padded})
		e := expectAPIError(err, http.StatusBadRequest, wire.CodeInvalidRequest)
		Expect(e.Message).To(ContainSubstring("whitespace"))
		Expect(e.Message).NotTo(ContainSubstring(strings.TrimSpace(padded)))
		_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "", Secret: "sk-" + strings.Repeat("p", 30)})
		Expect(expectAPIError(err, http.StatusBadRequest, wire.CodeInvalidRequest).Message).To(ContainSubstring("user_id is required"))
		_, err = backend.Token(ctx, "openai", wire.CredentialsRequest{UserID: "u"})
		Expect(expectAPIError(err, http.StatusUnprocessableEntity, wire.CodeAuthMethodMismatch).Message).To(ContainSubstring("/data-integrations/openai/credentials"))
		_, err = backend.PutOrganizationConfiguration(ctx, "org_1", "openai", wire.PutDataIntegrationConfigurationRequest{Enabled: ptr.To(true), Scopes: []string{"x"}})
		Expect(expectAPIError(err, http.StatusBadRequest, wire.CodeInvalidRequest).Message).To(ContainSubstring("API key providers have no credentials or scopes to override"))

		status, body := raw(http.MethodPut, "/data-integrations/openai/api-key", tok, `{"user_id":"u","secret":"sk-aaaaaaaaaaaaaaaaaaaa","colour":"red"}`)
		Expect(status).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring(`unknown field \"colour\"`))
		Expect(body).NotTo(ContainSubstring("sk-aaaa"))
		status, body = raw(http.MethodPut, "/data-integrations/openai/api-key", tok, `{"user_id":"u","secret":"sk-bbbbbbbbbbbbbbbb`)
		Expect(status).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring("malformed JSON"))
		Expect(body).NotTo(ContainSubstring("sk-bbbb"))
		status, body = raw(http.MethodPut, "/data-integrations/openai/api-key", tok, `{"user_id":"u","secret":"`+strings.Repeat("z", backendapi.MaxBodyBytes)+`"}`)
		Expect(status).To(Equal(http.StatusRequestEntityTooLarge), body)
		status, _ = raw(http.MethodGet, "/no/such/route", tok, "")
		Expect(status).To(Equal(http.StatusNotFound))

		By("an account declared in Git keeps its key in its Secret")
		Expect(env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "src",
			Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}}, Data: map[string][]byte{"k": []byte("sk-" + strings.Repeat("g", 30))}})).To(Succeed())
		Expect(env.Client.Create(ctx, &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gitops"},
			Spec: pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "git-user",
				APIKey: &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: "src", Key: "k"}}},
		})).To(Succeed())
		Eventually(func() error {
			_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "git-user", Secret: "sk-" + strings.Repeat("h", 30)})
			return err
		}).Should(MatchError(ContainSubstring("spec.apiKey.secretKeyRef")))
		Eventually(func() string {
			r, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "git-user"})
			Expect(err).NotTo(HaveOccurred())
			return r.Credential.GetValue()
		}).Should(Equal("sk-" + strings.Repeat("g", 30)))

		By("an account with a sealed key in Git keeps it too: 409, naming spec.apiKey.sealed")
		var pub []byte
		Eventually(func() (err error) {
			pub, err = keyadmin.PublicKeyset(ctx, env.Client, testenv.OperatorNamespace)
			return err
		}).Should(Succeed())
		sealedAccount := &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gitops-sealed"},
			Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "sealed-user"},
		}
		sealedValue, err := sealing.Seal(pub, []byte("sk-"+strings.Repeat("s", 30)), credential.SealingContext(sealedAccount))
		Expect(err).NotTo(HaveOccurred())
		sealedAccount.Spec.APIKey = &pipesv1.APIKeySource{Sealed: sealedValue}
		Expect(env.Client.Create(ctx, sealedAccount)).To(Succeed())
		Eventually(func() error {
			_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "sealed-user", Secret: "sk-" + strings.Repeat("h", 30)})
			return err
		}).Should(MatchError(ContainSubstring("spec.apiKey.sealed")))
		Eventually(func() string {
			r, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "sealed-user"})
			Expect(err).NotTo(HaveOccurred())
			return r.Credential.GetValue()
		}).Should(Equal("sk-" + strings.Repeat("s", 30)))
	})

	It("lists providers in the hosted API's shape, with cursors", func(ctx SpecContext) {
		backend := api(serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns), "")
		Expect(env.Client.Create(ctx, oauthProvider(ns, "github"))).To(Succeed())
		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u", Secret: "sk-" + strings.Repeat("l", 28) + "LIST"})
		Expect(err).NotTo(HaveOccurred())

		all, err := backend.DataProviders(ctx, "u", "", apiclient.Page{})
		Expect(err).NotTo(HaveOccurred())
		Expect(all.Object).To(Equal("list"))
		Expect(all.Data).To(HaveLen(2))
		Expect(all.Data[0].Slug).To(Equal("github"))
		Expect(all.Data[0].AuthMethods).To(Equal([]string{wire.AuthMethodOAuth}))
		Expect(all.Data[0].ConnectedAccount).To(BeNil())
		Expect(all.Data[1].Object).To(Equal("data_provider"))
		Expect(all.Data[1].Name).To(Equal("OpenAI"))
		Expect(all.Data[1].Description).To(Equal("completions on your behalf"))
		Expect(all.Data[1].ConnectedAccount).NotTo(BeNil())
		Expect(all.Data[1].ConnectedAccount.APIKeyLast4).To(Equal("LIST"))

		first, err := backend.DataProviders(ctx, "u", "", apiclient.Page{Limit: 1})
		Expect(err).NotTo(HaveOccurred())
		Expect(first.Data).To(HaveLen(1))
		Expect(first.ListMetadata.After).To(Equal(ptr.To("github")))
		second, err := backend.DataProviders(ctx, "u", "", apiclient.Page{Limit: 1, After: *first.ListMetadata.After})
		Expect(err).NotTo(HaveOccurred())
		Expect(second.Data).To(HaveLen(1))
		Expect(second.Data[0].Slug).To(Equal("openai"))
		Expect(second.ListMetadata.After).To(BeNil())

		raw, err := json.Marshal(all)
		Expect(err).NotTo(HaveOccurred())
		Expect(bytes.Contains(raw, []byte(`"list_metadata":{"before":null,"after":null}`))).To(BeTrue(), string(raw))
	})

	It("limits each caller's rate with 429 and Retry-After", func(ctx SpecContext) {
		tok := serviceAccountToken(ctx, ns, "busy", "pipes-vendor", ns)
		var limited *apiclient.Error
		for range 200 {
			_, err := api(tok, "").Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"})
			if err != nil {
				limited = expectAPIError(err, http.StatusTooManyRequests, wire.CodeRateLimited)
				break
			}
		}
		Expect(limited).To(HaveOccurred(), "200 back-to-back requests must exceed 20/s with burst 40")
		Expect(limited.RetryAfter).To(BeNumerically(">=", 1))
		other := api(serviceAccountToken(ctx, ns, "calm", "pipes-vendor", ns), "")
		_, err := other.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"})
		Expect(err).NotTo(HaveOccurred(), "another caller is not limited")
	})
})
