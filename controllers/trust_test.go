package controllers_test

import (
	"context"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
)

// What the reconciler refuses to do with its own rights on behalf of whoever wrote a
// ConnectedAccount, and what it refuses to vend.
var _ = Describe("ConnectedAccount trust boundary", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
	})

	readyMessage := func(ctx context.Context, ca *pipesv1.ConnectedAccount) string {
		c := apimeta.FindStatusCondition(getAccount(ctx, ca).Status.Conditions, pipesv1.ConditionReady)
		if c == nil {
			return ""
		}
		return c.Message
	}
	credentialSecret := func(ctx context.Context, ca *pipesv1.ConnectedAccount) (*corev1.Secret, error) {
		var s corev1.Secret
		err := env.Client.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: credential.SecretName(ca)}, &s)
		return &s, err
	}

	It("reads only source Secrets opted in with the credential-source label, and never lists their keys", func(ctx SpecContext) {
		key := "sk-" + strings.Repeat("o", 28) + "OPTN"
		plain := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"},
			Data:       map[string][]byte{"api-key": []byte(key), "db-password-field": []byte("hunter2-hunter2")},
		}
		Expect(env.Client.Create(ctx, plain)).To(Succeed())
		ca := account(ns, "optin", "openai", "u", "", "plain")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonSourceNotOptedIn))
		Expect(readyMessage(ctx, ca)).To(ContainSubstring("kubectl label secret -n " + ns + " plain pipes.dev/credential-source=true"))
		_, err := credentialSecret(ctx, ca)
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "nothing is copied from a Secret that is not opted in")

		By("a missing key is reported without the Secret's other key names")
		missing := account(ns, "wrong-key", "openai", "u2", "", "")
		missing.Spec.APIKey = &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: "plain", Key: "no-such-key"}}
		Expect(env.Client.Create(ctx, missing)).To(Succeed())
		update(ctx, plain, func(s *corev1.Secret) {
			s.Labels = map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}
		})
		Eventually(func() string { return readyReason(ctx, missing) }).Should(Equal("False/" + pipesv1.ReasonSourceNotFound))
		for _, c := range getAccount(ctx, missing).Status.Conditions {
			Expect(c.Message).NotTo(ContainSubstring("db-password-field"))
			Expect(c.Message).NotTo(ContainSubstring("api-key"))
		}

		By("labelling the Secret connects the account")
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))
		Expect(getAccount(ctx, ca).Status.APIKeyLast4).To(Equal("OPTN"))

		By("removing the label stops further copies but keeps the stored key")
		update(ctx, plain, func(s *corev1.Secret) { s.Labels = nil; s.Data["api-key"] = []byte(key + "-rotated") })
		Eventually(func() string { return conditionOf(getAccount(ctx, ca), pipesv1.ConditionSynced) }).Should(Equal("False/" + pipesv1.ReasonSourceNotOptedIn))
		Expect(getAccount(ctx, ca).Status.APIKeyLast4).To(Equal("OPTN"))
	})

	It("deletes only the credential Secret it controls, never another Secret with that name", func(ctx SpecContext) {
		for _, victim := range []struct {
			account string
			labels  map[string]string
		}{
			{"unlabelled", nil},
			// In the managed cache, but not the account's: no owner reference.
			{"labelled", map[string]string{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: credential.ComponentCredential}},
		} {
			ca := account(ns, victim.account, "openai", "user-"+victim.account, "", "")
			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: credential.SecretName(ca), Labels: victim.labels},
				Data:       map[string][]byte{"password": []byte("not-the-operators")},
			}
			Expect(env.Client.Create(ctx, secret)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(env.Client.Delete(ctx, secret)).To(Succeed()) })
			Expect(env.Client.Create(ctx, ca)).To(Succeed())
			Eventually(func() string { return conditionOf(getAccount(ctx, ca), pipesv1.ConditionReady) }).ShouldNot(BeEmpty(), "reconciled")

			Expect(env.Client.Delete(ctx, ca)).To(Succeed())
			Eventually(func() bool {
				return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(ca), &pipesv1.ConnectedAccount{}))
			}).Should(BeTrue(), "the account's deletion completes")
			Consistently(func() error { _, err := credentialSecret(ctx, ca); return err }, "1s").Should(Succeed(),
				"the %s Secret named like %s's credential Secret was deleted", victim.account, ca.Name)
		}
	})

	It("refuses a restored older credential, and a ciphertext relabelled as newer", func(ctx SpecContext) {
		key1, key2 := "sk-"+strings.Repeat("1", 28)+"OLD1", "sk-"+strings.Repeat("2", 28)+"NEW2"
		ca := account(ns, "rollback", "openai", "u", "", "")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		// Its restored credential stays on whatever key wrapped it: gone with the account,
		// it does not hold up the keyset rotation spec's count of credentials on old keys.
		DeferCleanup(func(ctx SpecContext) { Expect(env.Client.Delete(ctx, ca)).To(Succeed()) })
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonAwaitingCredential))

		By("storing version 1, then version 2, the way the backend API does")
		store := env.Operator.Store
		got := getAccount(ctx, ca)
		_, err := store.Put(ctx, got, nil, []byte(key1), credential.Stored{Version: credential.NextVersion(got, nil), Last4: "OLD1"})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int64 { return getAccount(ctx, ca).Status.CredentialVersion }).Should(BeEquivalentTo(1))
		v1, err := credentialSecret(ctx, ca)
		Expect(err).NotTo(HaveOccurred())
		got = getAccount(ctx, ca)
		prev := credential.Describe(v1)
		_, err = store.Put(ctx, got, v1, []byte(key2), credential.Stored{Version: credential.NextVersion(got, &prev), Last4: "NEW2"})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(got.Status.CredentialVersion).To(BeEquivalentTo(2))
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("True/Connected"))
		}).Should(Succeed())

		By("restoring the version-1 Secret (a backup, a replayed write)")
		current, err := credentialSecret(ctx, ca)
		Expect(err).NotTo(HaveOccurred())
		restored := current.DeepCopy()
		restored.Annotations, restored.Data = v1.Annotations, v1.Data
		Expect(env.Client.Update(ctx, restored)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonCredentialRolledBack))
		after := getAccount(ctx, ca)
		Expect(after.Status.State).To(Equal(pipesv1.StateNeedsReauthorization))
		Expect(after.Status.CredentialVersion).To(BeEquivalentTo(2), "the recorded version is never lowered")
		_, err = store.Open(after, restored)
		Expect(err).To(MatchError(credential.ErrRolledBack))

		By("claiming the current version for the old ciphertext does not decrypt")
		relabelled, err := credentialSecret(ctx, ca)
		Expect(err).NotTo(HaveOccurred())
		relabelled.Annotations[pipesv1.AnnotationCredentialVersion] = "2"
		Expect(env.Client.Update(ctx, relabelled)).To(Succeed())
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonDecryptionFailed))
		Expect(env.Log.Bytes()).NotTo(ContainSubstring(key1))
		Expect(env.Log.Bytes()).NotTo(ContainSubstring(key2))
	})
})
