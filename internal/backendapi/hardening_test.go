package backendapi_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// holdFinalizer keeps a deleted object terminating until the spec removes it.
const holdFinalizer = "test.pipes.dev/hold"

func release(ctx SpecContext, obj client.Object) {
	// The reconcilers may write the object meanwhile (status): retry on a conflict.
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		obj.SetFinalizers(nil)
		return env.Client.Update(ctx, obj)
	})).To(Succeed())
}

// credentialSecrets lists the credential Secrets in ns.
func credentialSecrets(ctx SpecContext, ns string) []corev1.Secret {
	var list corev1.SecretList
	Expect(env.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{pipesv1.LabelComponent: credential.ComponentCredential})).To(Succeed())
	return list.Items
}

var _ = Describe("Backend API hardening", func() {
	var ns string
	var backend *apiclient.Client
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		backend = api(serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns), "")
	})

	It("never stores a user's key in an object of another identity that has the account's name", func(ctx SpecContext) {
		name := credential.AccountName("openai", "bob", "")
		alice := &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "alice"},
		}
		Expect(env.Client.Create(ctx, alice)).To(Succeed())
		bobKey := "sk-bob-" + strings.Repeat("b", 30) + "BOBK"

		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "bob", Secret: bobKey})
		e := expectAPIError(err, http.StatusConflict, wire.CodeConflict)
		Expect(e.Message).To(ContainSubstring(name))
		Expect(e.Message).To(ContainSubstring(`user "alice"`))
		Expect(e.Message).To(ContainSubstring(`user "bob"`))
		Expect(e.Message).NotTo(ContainSubstring(bobKey))

		By("nothing is stored, for either user, and alice's account is untouched")
		Expect(credentialSecrets(ctx, ns)).To(BeEmpty())
		var got pipesv1.ConnectedAccount
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(alice), &got)).To(Succeed())
		Expect(got.Spec).To(Equal(alice.Spec))
		Expect(got.Generation).To(Equal(alice.Generation))
		for _, user := range []string{"alice", "bob"} {
			r, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: user})
			Expect(err).NotTo(HaveOccurred())
			Expect(*r).To(Equal(wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}), user)
		}
		Expect(env.Log.Bytes()).NotTo(ContainSubstring(bobKey))

		By("an object of the same user without the organization, under the name of the organization's account")
		orgName := credential.AccountName("openai", "dave", "org_x")
		Expect(env.Client.Create(ctx, &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: orgName},
			Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "dave"},
		})).To(Succeed())
		_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "dave", OrganizationID: "org_x", Secret: bobKey})
		Expect(expectAPIError(err, http.StatusConflict, wire.CodeConflict).Message).To(ContainSubstring(orgName))
		Expect(credentialSecrets(ctx, ns)).To(BeEmpty())
	})

	It("numbers a key stored after its Secret was lost above every earlier version, so it is not taken for a rollback", func(ctx SpecContext) {
		key := func(n string) string { return "sk-" + strings.Repeat(n, 30) + "VER" + n }
		for _, n := range []string{"1", "2"} {
			_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "erin", Secret: key(n)})
			Expect(err).NotTo(HaveOccurred())
		}
		ca := &pipesv1.ConnectedAccount{}
		Eventually(func(g Gomega) {
			g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: credential.AccountName("openai", "erin", "")}, ca)).To(Succeed())
			g.Expect(ca.Status.CredentialVersion).To(BeEquivalentTo(2))
		}).Should(Succeed())
		By("an administrator deletes the credential Secret, then the user sets a key again")
		Expect(env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: credential.SecretName(ca)}})).To(Succeed())
		Eventually(func() string {
			r, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "erin"})
			Expect(err).NotTo(HaveOccurred())
			return r.Error
		}).WithPolling(250 * time.Millisecond).Should(Equal(wire.ErrorNotInstalled))
		acct, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "erin", Secret: key("3")})
		Expect(err).NotTo(HaveOccurred())
		Expect(acct.State).To(Equal(string(pipesv1.StateConnected)))
		Consistently(func(g Gomega) {
			r, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "erin"})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(r.Active).To(BeTrue(), "vend answered %q", r.Error)
			g.Expect(r.Credential.Value).To(Equal(key("3")))
			g.Expect(r.Credential.Version).To(BeEquivalentTo(3))
		}, "2s", "250ms").Should(Succeed()) // paced under the suite's per-caller rate limit
	})

	It("answers 409, storing nothing, when a Secret that is not the account's has its credential Secret's name", func(ctx SpecContext) {
		foreign := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: credential.AccountName("openai", "frank", "") + "-credential"},
			Data:       map[string][]byte{"password": []byte("someone-elses")},
		}
		Expect(env.Client.Create(ctx, foreign)).To(Succeed())
		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "frank", Secret: "sk-" + strings.Repeat("f", 30)})
		e := expectAPIError(err, http.StatusConflict, wire.CodeConflict)
		Expect(e.Message).To(ContainSubstring(foreign.Name))
		Expect(e.Message).To(ContainSubstring("delete or rename that Secret"))
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(foreign), foreign)).To(Succeed())
		Expect(foreign.Data).To(HaveKeyWithValue("password", []byte("someone-elses")))
	})

	It("refuses to store a key in an account that is being deleted", func(ctx SpecContext) {
		ca := &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: credential.AccountName("openai", "carol", ""), Finalizers: []string{holdFinalizer}},
			Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "carol"},
		}
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		DeferCleanup(release, ca)
		Expect(env.Client.Delete(ctx, ca)).To(Succeed())

		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "carol", Secret: "sk-" + strings.Repeat("c", 30)})
		e := expectAPIError(err, http.StatusConflict, wire.CodeConflict)
		Expect(e.Message).To(ContainSubstring(ca.Name))
		Expect(e.Message).To(ContainSubstring("being deleted"))
		Expect(credentialSecrets(ctx, ns)).To(BeEmpty())
	})

	It("never changes another organization's settings, or settings being deleted, through the deterministic name", func(ctx SpecContext) {
		name := credential.AccountName("openai", "", "org_b")
		orgA := &pipesv1.OrganizationProvider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       pipesv1.OrganizationProviderSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, OrganizationID: "org_a", Enabled: ptr.To(false)},
		}
		Expect(env.Client.Create(ctx, orgA)).To(Succeed())
		_, err := backend.PutOrganizationConfiguration(ctx, "org_b", "openai", wire.PutDataIntegrationConfigurationRequest{Enabled: ptr.To(true)})
		e := expectAPIError(err, http.StatusConflict, wire.CodeConflict)
		Expect(e.Message).To(ContainSubstring(name))
		Expect(e.Message).To(ContainSubstring(`organization "org_a"`))
		var got pipesv1.OrganizationProvider
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(orgA), &got)).To(Succeed())
		Expect(got.Spec).To(Equal(orgA.Spec))

		By("an organization's settings being deleted")
		orgC := &pipesv1.OrganizationProvider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: credential.AccountName("openai", "", "org_c"), Finalizers: []string{holdFinalizer}},
			Spec:       pipesv1.OrganizationProviderSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, OrganizationID: "org_c", Enabled: ptr.To(false)},
		}
		Expect(env.Client.Create(ctx, orgC)).To(Succeed())
		DeferCleanup(release, orgC)
		Expect(env.Client.Delete(ctx, orgC)).To(Succeed())
		_, err = backend.PutOrganizationConfiguration(ctx, "org_c", "openai", wire.PutDataIntegrationConfigurationRequest{Enabled: ptr.To(true)})
		e = expectAPIError(err, http.StatusConflict, wire.CodeConflict)
		Expect(e.Message).To(ContainSubstring(orgC.Name))
		Expect(e.Message).To(ContainSubstring("being deleted"))
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(orgC), &got)).To(Succeed())
		Expect(got.Spec.Enabled).To(Equal(ptr.To(false)))
	})

	It("answers a caller without permission the same 403 whether the Provider exists or not", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, oauthProvider(ns, "github"))).To(Succeed())
		nobody := api(serviceAccountToken(ctx, ns, "nobody", "", ""), "")
		// answers collects every route's error for slug, with the slug-derived names masked.
		answers := func(slug string) []string {
			creds := wire.CredentialsRequest{UserID: "u"}
			calls := map[string]func() error{
				"upsert": func() error {
					_, err := nobody.UpsertAPIKey(ctx, slug, wire.UpsertAPIKeyRequest{UserID: "u", Secret: "sk-" + strings.Repeat("n", 30)})
					return err
				},
				"credentials": func() error { _, err := nobody.Credentials(ctx, slug, creds); return err },
				"token":       func() error { _, err := nobody.Token(ctx, slug, creds); return err },
				"watch": func() error {
					_, err := nobody.Watch(ctx, wire.WatchRequest{Credentials: []wire.CredentialRef{{Provider: slug, UserID: "u"}}, TimeoutSeconds: 1})
					return err
				},
				"get account": func() error { _, err := nobody.ConnectedAccount(ctx, "u", slug, ""); return err },
				"disconnect":  func() error { return nobody.Disconnect(ctx, "u", slug, "") },
				"put org config": func() error {
					_, err := nobody.PutOrganizationConfiguration(ctx, "org_1", slug, wire.PutDataIntegrationConfigurationRequest{Enabled: ptr.To(false)})
					return err
				},
				"list providers":   func() error { _, err := nobody.DataProviders(ctx, "u", "", apiclient.Page{}); return err },
				"list org configs": func() error { _, err := nobody.OrganizationConfigurations(ctx, "org_1", apiclient.Page{}); return err },
			}
			var out []string
			for _, route := range []string{"upsert", "credentials", "token", "watch", "get account", "disconnect", "put org config", "list providers", "list org configs"} {
				e := expectAPIError(calls[route](), http.StatusForbidden, wire.CodeForbidden)
				msg := strings.ReplaceAll(e.Message, credential.AccountName(slug, "u", ""), "<account>")
				msg = strings.ReplaceAll(msg, credential.AccountName(slug, "", "org_1"), "<org settings>")
				out = append(out, route+": "+msg)
			}
			return out
		}
		existing := answers("openai")
		Expect(answers("nope")).To(Equal(existing), "a missing Provider must not be told apart")
		Expect(answers("github")).To(Equal(existing), "an OAuth Provider must not be told apart")
	})

	It("authorizes a missing account by its deterministic name, and every watched credential", func(ctx SpecContext) {
		name := credential.AccountName("openai", "u3", "")
		Expect(env.Client.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vend-u3"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"pipes.dev"}, Resources: []string{"connectedaccounts"}, Verbs: []string{"vend"}, ResourceNames: []string{name}}},
		})).To(Succeed())
		Expect(env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "narrow"}})).To(Succeed())
		bind(ctx, ns, "narrow", rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "vend-u3"}, ns, "narrow")
		narrow := api(token(ctx, ns, "narrow"), "")
		u3 := wire.CredentialsRequest{UserID: "u3"}

		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u3", Secret: "sk-" + strings.Repeat("3", 30)})
		Expect(err).NotTo(HaveOccurred())
		r, err := narrow.Credentials(ctx, "openai", u3)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Active).To(BeTrue())

		By("after a disconnect the narrowed vendor learns not_installed, not 403")
		Expect(backend.Disconnect(ctx, "u3", "openai", "")).To(Succeed())
		Eventually(func(g Gomega) {
			r, err := narrow.Credentials(ctx, "openai", u3)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(*r).To(Equal(wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}))
		}).Should(Succeed())
		w, err := narrow.Watch(ctx, wire.WatchRequest{Credentials: []wire.CredentialRef{{Provider: "openai", UserID: "u3"}}, TimeoutSeconds: 1})
		Expect(err).NotTo(HaveOccurred())
		Expect(w.Credentials).To(HaveLen(1))
		Expect(w.Credentials[0].CredentialsResponse).To(Equal(wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}))

		By("a watch that includes any credential the caller may not vend is refused, whether its Provider exists or not")
		for _, other := range []wire.CredentialRef{{Provider: "openai", UserID: "u4"}, {Provider: "nope", UserID: "u3"}} {
			_, err := narrow.Watch(ctx, wire.WatchRequest{Credentials: []wire.CredentialRef{{Provider: "openai", UserID: "u3"}, other}, TimeoutSeconds: 1})
			Expect(expectAPIError(err, http.StatusForbidden, wire.CodeForbidden).Message).To(ContainSubstring(credential.AccountName(other.Provider, other.UserID, "")))
		}
		By("a vendor of every account still watches a missing Provider as not_installed")
		w, err = backend.Watch(ctx, wire.WatchRequest{Credentials: []wire.CredentialRef{{Provider: "nope", UserID: "u3"}}, TimeoutSeconds: 1})
		Expect(err).NotTo(HaveOccurred())
		Expect(w.Credentials[0].Error).To(Equal(wire.ErrorNotInstalled))
	})

	It("changes the watch ETag when an account is recreated, even at the same credential version", func(ctx SpecContext) {
		k1, k2 := "sk-"+strings.Repeat("1", 30)+"ONE1", "sk-"+strings.Repeat("2", 30)+"TWO2"
		refs := []wire.CredentialRef{{Provider: "openai", UserID: "w"}}
		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "w", Secret: k1})
		Expect(err).NotTo(HaveOccurred())
		w1, err := backend.Watch(ctx, wire.WatchRequest{Credentials: refs, TimeoutSeconds: 1})
		Expect(err).NotTo(HaveOccurred())
		Expect(w1.Credentials[0].Credential).To(Equal(&wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: k1, Version: 1}))

		Expect(backend.Disconnect(ctx, "w", "openai", "")).To(Succeed())
		Eventually(func() error { // 409 while the old account is still being deleted
			_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "w", Secret: k2})
			return err
		}).Should(Succeed())
		r, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "w"})
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Credential).To(Equal(&wire.Credential{Object: "credential", AuthMethod: wire.AuthMethodAPIKey, Value: k2, Version: 1}),
			"the recreated account starts again at version 1")

		w2, err := backend.Watch(ctx, wire.WatchRequest{Credentials: refs, ETag: w1.ETag, TimeoutSeconds: 2})
		Expect(err).NotTo(HaveOccurred())
		Expect(w2.Changed).To(BeTrue(), "a sidecar holding the old ETag must get the new key")
		Expect(w2.ETag).NotTo(Equal(w1.ETag))
		Expect(w2.Credentials[0].Credential.GetValue()).To(Equal(k2))
	})

	It("bounds the TokenReviews a flood of random tokens causes, without slowing callers already authenticated", func(ctx SpecContext) {
		counter := &countingClient{Client: env.Client}
		tr := backendapi.NewTokenReviewer(counter, 10*time.Second)
		tr.RequireAudience = true // as deployed: one TokenReview per new token
		url := startServer(tr, backendapi.Options{RateLimit: 1e6})
		good := apiAt(url, serviceAccountToken(ctx, ns, "app", "pipes-vendor", ns, backendapi.Audience), "")
		_, err := good.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"}) // its token is now cached
		Expect(err).NotTo(HaveOccurred())
		h, err := floodClient(env.APICA())
		Expect(err).NotTo(HaveOccurred())

		before := counter.reviews.Load()
		start := time.Now()
		var goodCalls, goodFailures atomic.Int64
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			for {
				select {
				case <-stop:
					return
				default:
				}
				goodCalls.Add(1)
				if _, err := good.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"}); err != nil {
					GinkgoWriter.Printf("authenticated caller during the flood: %v\n", err)
					goodFailures.Add(1)
				}
			}
		}()
		statuses := flood(h, url, 32, 3*time.Second)
		close(stop)
		<-stopped
		elapsed := time.Since(start)
		sent := counter.reviews.Load() - before
		GinkgoWriter.Printf("flood: %v in %s; %d TokenReviews (%.0f/s); authenticated caller: %d calls\n", statuses, elapsed, sent, float64(sent)/elapsed.Seconds(), goodCalls.Load())

		Expect(statuses).NotTo(HaveKey(http.StatusOK))
		Expect(statuses[http.StatusTooManyRequests]).To(BeNumerically(">", 0))
		// Pre-authentication limit per source address: burst 40, then 20/s (a refresh of
		// the good caller's token may add one).
		Expect(float64(sent)).To(BeNumerically("<=", 40+20*elapsed.Seconds()+5))
		Expect(goodFailures.Load()).To(BeZero())
		Expect(goodCalls.Load()).To(BeNumerically(">", 10))
	})
})
