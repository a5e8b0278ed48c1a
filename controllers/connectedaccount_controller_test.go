package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var _ = Describe("ConnectedAccount reconciler", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	managedSecret := func(ctx context.Context, ca *pipesv1.ConnectedAccount) (*corev1.Secret, error) {
		var s corev1.Secret
		err := env.Client.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: credential.SecretName(ca)}, &s)
		return &s, err
	}
	decrypt := func(ctx context.Context, ca *pipesv1.ConnectedAccount) (string, error) {
		s, err := managedSecret(ctx, ca)
		if err != nil {
			return "", err
		}
		plain, err := env.Operator.Store.Open(getAccount(ctx, ca), s)
		return string(plain), err
	}

	It("stores, rotates, gates and removes an API key, and never shows it in plaintext", func(ctx SpecContext) {
		key1 := "sk-live-" + strings.Repeat("A", 24) + "k1x9"
		key2 := "sk-live-" + strings.Repeat("B", 24) + "k2y8"
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		src := sourceSecret(ns, "user-a-openai", key1)
		Expect(env.Client.Create(ctx, src)).To(Succeed())
		ca := account(ns, "openai-user-a", "openai", "user_a", "org_1", "user-a-openai")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())

		By("connecting: ciphertext in an owned Secret, last four in status, a Connected event")
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(got.Status.State).To(Equal(pipesv1.StateConnected))
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("True/Connected"))
			g.Expect(got.Status.APIKeyLast4).To(Equal("k1x9"))
			g.Expect(got.Status.CredentialVersion).To(BeEquivalentTo(1))
			g.Expect(got.Status.CredentialSecretRef).To(Equal(&pipesv1.LocalObjectReference{Name: "openai-user-a-credential"}))
			g.Expect(got.Status.LastRotatedTime).NotTo(BeNil())
			g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
			g.Expect(got.Finalizers).To(BeEmpty(), "no finalizer: deleting an account never waits on the operator")
		}).Should(Succeed())
		s, err := managedSecret(ctx, ca)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(s.Type)).To(Equal(pipesv1.CredentialSecretType))
		Expect(s.Labels).To(HaveKeyWithValue(pipesv1.LabelManagedBy, pipesv1.ManagedByValue))
		Expect(s.Labels).To(HaveKeyWithValue(pipesv1.LabelProvider, "openai"))
		Expect(s.Data).To(HaveLen(1))
		Expect(s.Data[pipesv1.CredentialCiphertextKey]).NotTo(ContainSubstring(key1))
		Expect(s.OwnerReferences).To(HaveLen(1))
		Expect(s.OwnerReferences[0].Name).To(Equal(ca.Name))
		Expect(ptr.Deref(s.OwnerReferences[0].Controller, false)).To(BeTrue())
		Expect(decrypt(ctx, ca)).To(Equal(key1))
		Eventually(func() []string { return eventReasons(ctx, ca) }).Should(ContainElement(pipesv1.EventConnected))

		By("counting the account on its Provider")
		Eventually(func(g Gomega) {
			var p pipesv1.Provider
			g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "openai"}, &p)).To(Succeed())
			g.Expect(p.Status.ConnectedAccounts).To(BeEquivalentTo(1))
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
		}).Should(Succeed())

		By("rotating when the source Secret changes: version 2, the old key gone")
		update(ctx, src, func(s *corev1.Secret) { s.Data["api-key"] = []byte(key2) })
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(got.Status.CredentialVersion).To(BeEquivalentTo(2))
			g.Expect(got.Status.APIKeyLast4).To(Equal("k2y8"))
		}).Should(Succeed())
		Expect(decrypt(ctx, ca)).To(Equal(key2))
		var managed corev1.SecretList
		Expect(env.Client.List(ctx, &managed, client.InNamespace(ns), client.MatchingLabels{pipesv1.LabelConnectedAccount: ca.Name})).To(Succeed())
		Expect(managed.Items).To(HaveLen(1), "one managed Secret per account, never both keys")
		Eventually(func() []string { return eventReasons(ctx, ca) }).Should(ContainElement(pipesv1.EventRotated))

		By("disabling the provider for the account's organization: kept, not vendable")
		op := &pipesv1.OrganizationProvider{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openai-org-1"},
			Spec:       pipesv1.OrganizationProviderSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, OrganizationID: "org_1", Enabled: ptr.To(false)},
		}
		Expect(env.Client.Create(ctx, op)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonOrganizationDisabled))
		Expect(getAccount(ctx, ca).Status.State).To(Equal(pipesv1.StateConnected))

		By("re-enabling: vendable again with nothing lost")
		update(ctx, op, func(o *pipesv1.OrganizationProvider) { o.Spec.Enabled = ptr.To(true) })
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))
		Expect(getAccount(ctx, ca).Status.CredentialVersion).To(BeEquivalentTo(2))
		Expect(decrypt(ctx, ca)).To(Equal(key2))

		By("disabling the Provider itself")
		p := apiKeyProvider(ns, "openai")
		update(ctx, p, func(p *pipesv1.Provider) { p.Spec.Enabled = ptr.To(false) })
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonProviderDisabled))
		update(ctx, p, func(p *pipesv1.Provider) { p.Spec.Enabled = ptr.To(true) })
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))

		By("searching the API server, etcd and the manager's log for the plaintext keys")
		for _, key := range []string{key1, key2} {
			hits, err := testenv.APIObjectsContaining(ctx, env.Config, []byte(key))
			Expect(err).NotTo(HaveOccurred())
			if key == key2 {
				Expect(hits).To(ConsistOf("secrets " + ns + "/user-a-openai"))
			} else {
				Expect(hits).To(BeEmpty())
			}
			found, err := testenv.EtcdOccurrences(env.EtcdDataDir(), []byte(key))
			Expect(err).NotTo(HaveOccurred())
			Expect(found).NotTo(BeEmpty(), "the user's own source Secret is stored unencrypted by Kubernetes, so the scan must find it there")
			for where := range found {
				Expect(where).To(Equal("/registry/secrets/"+ns+"/user-a-openai"), "plaintext found in etcd outside the user's source Secret")
			}
			Expect(env.Log.Bytes()).NotTo(ContainSubstring(key))
		}

		By("deleting the account: the managed Secret goes with it")
		Expect(env.Client.Delete(ctx, ca)).To(Succeed())
		Eventually(func() bool {
			_, err := managedSecret(ctx, ca)
			return apierrors.IsNotFound(err)
		}).Should(BeTrue())
		Eventually(func() bool {
			return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(ca), &pipesv1.ConnectedAccount{}))
		}).Should(BeTrue())
	})

	It("removes a deleted account's credential without a finalizer, and lets the name be reused at once", func(ctx SpecContext) {
		key1 := "sk-live-" + strings.Repeat("C", 24) + "c1c1"
		key2 := "sk-live-" + strings.Repeat("D", 24) + "d2d2"
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		Expect(env.Client.Create(ctx, sourceSecret(ns, "src", key1))).To(Succeed())
		connectedWith := func(ca *pipesv1.ConnectedAccount, last4 string) func(Gomega) {
			return func(g Gomega) {
				got := getAccount(ctx, ca)
				g.Expect(got.Status.State).To(Equal(pipesv1.StateConnected))
				g.Expect(got.Status.APIKeyLast4).To(Equal(last4))
			}
		}

		By("deleting an account removes its credential Secret, with a Disconnected event")
		ca := account(ns, "reused", "openai", "u", "", "src")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		Eventually(connectedWith(ca, "c1c1")).Should(Succeed())
		old := getAccount(ctx, ca)
		Expect(env.Client.Delete(ctx, ca)).To(Succeed())
		Eventually(func() bool { _, err := managedSecret(ctx, ca); return apierrors.IsNotFound(err) }).Should(BeTrue())
		Eventually(func() []string { return eventReasons(ctx, old) }).Should(ContainElement(pipesv1.EventDisconnected))

		By("an account created again under the name at once stores its own key, not the old one")
		Expect(env.Client.Create(ctx, sourceSecret(ns, "src2", key2))).To(Succeed())
		again := account(ns, "reused", "openai", "u", "", "src2")
		Expect(env.Client.Create(ctx, again)).To(Succeed())
		Eventually(connectedWith(again, "d2d2")).Should(Succeed())
		Expect(decrypt(ctx, again)).To(Equal(key2))
		s, err := managedSecret(ctx, again)
		Expect(err).NotTo(HaveOccurred())
		Expect(metav1.IsControlledBy(s, getAccount(ctx, again))).To(BeTrue())

		By("an account holding the finalizer of earlier versions is cleaned up and released")
		legacy := account(ns, "legacy", "openai", "u2", "", "src")
		Expect(env.Client.Create(ctx, legacy)).To(Succeed())
		Eventually(connectedWith(legacy, "c1c1")).Should(Succeed())
		update(ctx, legacy, func(ca *pipesv1.ConnectedAccount) { ca.Finalizers = []string{pipesv1.FinalizerCredentialCleanup} })
		Expect(env.Client.Delete(ctx, legacy)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(legacy), &pipesv1.ConnectedAccount{}))
		}).Should(BeTrue(), "the operator removes the old finalizer")
		_, err = managedSecret(ctx, legacy)
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "and the credential with it")
	})

	It("keeps the last good key and says why when the source has a bad key", func(ctx SpecContext) {
		good := "rk_test_" + strings.Repeat("g", 20) + "9Z9Z"
		bad := "rk_test_" + strings.Repeat("b", 20) + "\n"
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "stripe"))).To(Succeed())
		src := sourceSecret(ns, "stripe-key", bad)
		Expect(env.Client.Create(ctx, src)).To(Succeed())
		ca := account(ns, "stripe-u1", "stripe", "u1", "", "stripe-key")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())

		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(got.Status.State).To(Equal(pipesv1.StateDisconnected))
			g.Expect(conditionOf(got, pipesv1.ConditionSynced)).To(Equal("False/" + pipesv1.ReasonInvalidKey))
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("False/" + pipesv1.ReasonInvalidKey))
		}).Should(Succeed())
		for _, c := range getAccount(ctx, ca).Status.Conditions {
			Expect(c.Message).NotTo(ContainSubstring(strings.TrimSpace(bad)))
			Expect(c.Message).To(ContainSubstring("whitespace"))
		}
		Eventually(func() []string { return eventReasons(ctx, ca) }).Should(ContainElement(pipesv1.EventConnectionFailed))

		update(ctx, src, func(s *corev1.Secret) { s.Data["api-key"] = []byte(good) })
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))

		By("a bad rotation leaves the stored key vendable")
		update(ctx, src, func(s *corev1.Secret) { s.Data["api-key"] = []byte("") })
		Eventually(func() string { return conditionOf(getAccount(ctx, ca), pipesv1.ConditionSynced) }).Should(Equal("False/" + pipesv1.ReasonInvalidKey))
		got := getAccount(ctx, ca)
		Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("True/Connected"))
		Expect(got.Status.CredentialVersion).To(BeEquivalentTo(1))
		Expect(decrypt(ctx, ca)).To(Equal(good))
		Expect(env.Log.Bytes()).NotTo(ContainSubstring(good))
	})

	It("reports a missing source Secret and reacts when it appears", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		ca := account(ns, "late", "openai", "u2", "", "not-yet")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonSourceNotFound))
		Expect(env.Client.Create(ctx, sourceSecret(ns, "not-yet", "sk-"+strings.Repeat("z", 30)))).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))
	})

	It("waits for a key set through the backend API when the account names no source", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		ca := account(ns, "api-managed", "openai", "u3", "", "")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(got.Status.State).To(Equal(pipesv1.StateDisconnected))
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("False/" + pipesv1.ReasonAwaitingCredential))
		}).Should(Succeed())
	})

	It("detects tampered and swapped ciphertexts without panicking or leaking", func(ctx SpecContext) {
		keyA, keyB := "sk-aaaa-"+strings.Repeat("1", 24), "sk-bbbb-"+strings.Repeat("2", 24)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		Expect(env.Client.Create(ctx, sourceSecret(ns, "src-a", keyA))).To(Succeed())
		Expect(env.Client.Create(ctx, sourceSecret(ns, "src-b", keyB))).To(Succeed())
		a := account(ns, "acct-a", "openai", "ua", "", "src-a")
		b := account(ns, "acct-b", "openai", "ub", "", "src-b")
		Expect(env.Client.Create(ctx, a)).To(Succeed())
		Expect(env.Client.Create(ctx, b)).To(Succeed())
		Eventually(func() []string { return []string{readyReason(ctx, a), readyReason(ctx, b)} }).Should(Equal([]string{"True/Connected", "True/Connected"}))

		By("flipping one byte of A's ciphertext")
		sa, err := managedSecret(ctx, a)
		Expect(err).NotTo(HaveOccurred())
		ct := bytes.Clone(sa.Data[pipesv1.CredentialCiphertextKey])
		ct[len(ct)-3] ^= 0x01
		sa.Data[pipesv1.CredentialCiphertextKey] = ct
		Expect(env.Client.Update(ctx, sa)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, a) }).Should(Equal("False/" + pipesv1.ReasonDecryptionFailed))
		Expect(getAccount(ctx, a).Status.State).To(Equal(pipesv1.StateNeedsReauthorization))
		Eventually(func() []string { return eventReasons(ctx, a) }).Should(ContainElement(pipesv1.EventReauthorizationNeeded))

		By("copying B's ciphertext into A's Secret")
		sb, err := managedSecret(ctx, b)
		Expect(err).NotTo(HaveOccurred())
		sa, err = managedSecret(ctx, a)
		Expect(err).NotTo(HaveOccurred())
		sa.Data[pipesv1.CredentialCiphertextKey] = sb.Data[pipesv1.CredentialCiphertextKey]
		Expect(env.Client.Update(ctx, sa)).To(Succeed())
		_, err = env.Operator.Store.Open(getAccount(ctx, a), sa)
		Expect(err).To(MatchError(crypto.ErrDecrypt))
		Expect(err.Error()).NotTo(ContainSubstring(keyB))
		Consistently(func() string { return readyReason(ctx, a) }, "1s").Should(Equal("False/" + pipesv1.ReasonDecryptionFailed))
		Expect(readyReason(ctx, b)).To(Equal("True/Connected"))

		By("supplying the key again repairs the account")
		update(ctx, sourceSecret(ns, "src-a", ""), func(s *corev1.Secret) { s.Data["api-key"] = []byte(keyA + "-new") })
		Eventually(func() string { return readyReason(ctx, a) }).Should(Equal("True/Connected"))
		Expect(decrypt(ctx, a)).To(Equal(keyA + "-new"))
		for _, c := range getAccount(ctx, a).Status.Conditions {
			Expect(c.Message).NotTo(ContainSubstring(keyA))
		}
		Expect(env.Log.Bytes()).NotTo(ContainSubstring(keyA))
		Expect(env.Log.Bytes()).NotTo(ContainSubstring(keyB))
	})

	It("keeps a deleted Provider's credentials, unvended, until the Provider returns", func(ctx SpecContext) {
		key := "sk-" + strings.Repeat("q", 30) + "KEEP"
		p := apiKeyProvider(ns, "gone")
		Expect(env.Client.Create(ctx, p)).To(Succeed())
		Expect(env.Client.Create(ctx, sourceSecret(ns, "src", key))).To(Succeed())
		ca := account(ns, "gone-u", "gone", "u", "", "src")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))

		Expect(env.Client.Delete(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("False/" + pipesv1.ReasonProviderNotFound))
			g.Expect(apimeta.FindStatusCondition(got.Status.Conditions, pipesv1.ConditionReady).Message).To(ContainSubstring("kept encrypted and not vended"))
			g.Expect(got.Status.APIKeyLast4).To(Equal("KEEP"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(ctx, ca) }).Should(ContainElement(pipesv1.EventCredentialRetained))
		Consistently(func() (string, error) { return decrypt(ctx, ca) }, "1s").Should(Equal(key), "the credential Secret is kept")
		Expect(eventReasons(ctx, ca)).NotTo(ContainElement(pipesv1.EventDisconnected))

		By("recreating the Provider makes the same credential vendable again")
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "gone"))).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))
		Expect(decrypt(ctx, ca)).To(Equal(key))
		Expect(getAccount(ctx, ca).Status.CredentialVersion).To(BeEquivalentTo(1))

		By("deleting the account removes it")
		Expect(env.Client.Delete(ctx, ca)).To(Succeed())
		Eventually(func() bool { _, err := managedSecret(ctx, ca); return apierrors.IsNotFound(err) }).Should(BeTrue())
	})

	It("lets only the oldest of duplicate accounts hold the credential, and hands over when it goes", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		Expect(env.Client.Create(ctx, sourceSecret(ns, "first-key", "sk-first-"+strings.Repeat("f", 24)+"AAAA"))).To(Succeed())
		Expect(env.Client.Create(ctx, sourceSecret(ns, "second-key", "sk-second-"+strings.Repeat("s", 24)+"BBBB"))).To(Succeed())
		first := account(ns, "first", "openai", "u", "org", "first-key")
		Expect(env.Client.Create(ctx, first)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, first) }).Should(Equal("True/Connected"))

		By("creating a second account of the same identity while the webhook that refuses it is not installed")
		withoutWebhook(ctx, "vconnectedaccount.pipes.dev")
		second := account(ns, "second", "openai", "u", "org", "second-key")
		Eventually(func() error { return env.Client.Create(ctx, second) }).Should(Succeed())
		Eventually(func(g Gomega) {
			got := getAccount(ctx, second)
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("False/" + pipesv1.ReasonDuplicateAccount))
			g.Expect(apimeta.FindStatusCondition(got.Status.Conditions, pipesv1.ConditionReady).Message).To(HavePrefix(
				`ConnectedAccount "first", created earlier, already connects user "u" in organization "org" to Provider "openai"`))
			g.Expect(got.Status.CredentialSecretRef).To(BeNil())
		}).Should(Succeed())
		_, err := managedSecret(ctx, second)
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the duplicate stores nothing")
		Consistently(func() string { return getAccount(ctx, first).Status.APIKeyLast4 }, "1s").Should(Equal("AAAA"))

		By("deleting the first account hands the identity to the second")
		Expect(env.Client.Delete(ctx, first)).To(Succeed())
		Eventually(func(g Gomega) {
			got := getAccount(ctx, second)
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("True/Connected"))
			g.Expect(got.Status.APIKeyLast4).To(Equal("BBBB"))
		}).Should(Succeed())
	})

	It("converges on one Secret holding the last key under a burst of source changes", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		src := sourceSecret(ns, "burst", "sk-burst-"+strings.Repeat("0", 24))
		Expect(env.Client.Create(ctx, src)).To(Succeed())
		ca := account(ns, "burst", "openai", "u", "", "burst")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		last := ""
		for i := range 15 {
			last = fmt.Sprintf("sk-burst-%s%04d", strings.Repeat("x", 20), i)
			update(ctx, src, func(s *corev1.Secret) { s.Data["api-key"] = []byte(last) })
		}
		Eventually(func() (string, error) { return decrypt(ctx, ca) }).Should(Equal(last))
		Eventually(func() string { return getAccount(ctx, ca).Status.APIKeyLast4 }).Should(Equal(last[len(last)-4:]))
		var managed corev1.SecretList
		Expect(env.Client.List(ctx, &managed, client.InNamespace(ns), client.MatchingLabels{pipesv1.LabelManagedBy: pipesv1.ManagedByValue})).To(Succeed())
		Expect(managed.Items).To(HaveLen(1))
		Expect(getAccount(ctx, ca).Status.CredentialVersion).To(BeNumerically(">=", 2))
	})

	It("caches only the Secrets it owns", func(ctx SpecContext) {
		Expect(env.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated"},
			Data:       map[string][]byte{"password": []byte("hunter2")},
		})).To(Succeed())
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		Expect(env.Client.Create(ctx, sourceSecret(ns, "src", "sk-"+strings.Repeat("c", 30)))).To(Succeed())
		ca := account(ns, "cached", "openai", "u", "", "src")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))

		var cached corev1.SecretList
		Expect(env.Operator.Manager.GetCache().List(ctx, &cached, client.InNamespace(ns))).To(Succeed())
		names := []string{}
		for _, s := range cached.Items {
			names = append(names, s.Name)
			Expect(s.Labels).To(HaveKeyWithValue(pipesv1.LabelManagedBy, pipesv1.ManagedByValue))
		}
		Expect(names).To(ConsistOf("cached-credential"))
	})
})
