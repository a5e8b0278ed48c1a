package controllers_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var sealingKeysetKey = types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: pipesv1.SealingKeysetSecret}

// publicKeyset fetches the public sealing keyset as kubectl pipes seal does, once the
// operator has published it.
func publicKeyset(ctx context.Context) []byte {
	var pub []byte
	Eventually(func() (err error) {
		pub, err = keyadmin.PublicKeyset(ctx, env.Client, testenv.OperatorNamespace)
		return err
	}).Should(Succeed())
	return pub
}

// sealFor seals key for ca with pub.
func sealFor(pub []byte, ca *pipesv1.ConnectedAccount, key string) string {
	v, err := sealing.Seal(pub, []byte(key), credential.SealingContext(ca))
	Expect(err).NotTo(HaveOccurred())
	return v
}

func sealedAccount(ns, name, provider, user, org string) *pipesv1.ConnectedAccount {
	ca := account(ns, name, provider, user, org, "")
	ca.Spec.APIKey = &pipesv1.APIKeySource{}
	return ca
}

// kstatusOf computes the account's status as Flux's and Argo CD's kstatus checks do.
func kstatusOf(ctx context.Context, ca *pipesv1.ConnectedAccount) status.Status {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(pipesv1.GroupVersion.WithKind("ConnectedAccount"))
	Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(ca), u)).To(Succeed())
	res, err := status.Compute(u)
	Expect(err).NotTo(HaveOccurred())
	return res.Status
}

// deleteAccount deletes ca and waits until it (and its finalizer) is gone.
func deleteAccount(ctx context.Context, ca *pipesv1.ConnectedAccount) {
	Expect(client.IgnoreNotFound(env.Client.Delete(ctx, ca))).To(Succeed())
	Eventually(func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(ca), &pipesv1.ConnectedAccount{}))
	}).Should(BeTrue())
}

func syncedCondition(ctx context.Context, ca *pipesv1.ConnectedAccount) *metav1.Condition {
	return apimeta.FindStatusCondition(getAccount(ctx, ca).Status.Conditions, pipesv1.ConditionSynced)
}

var _ = Describe("Sealed API keys (spec.apiKey.sealed)", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "github"))).To(Succeed())
	})

	It("connects an account from a sealed value and refuses that value under any other name, namespace, provider, user or organization, never storing the key in plaintext", func(ctx SpecContext) {
		key := "sk-sealed-" + strings.Repeat("S", 24) + "q7w3"
		pub := publicKeyset(ctx)
		ca := sealedAccount(ns, "openai-alice", "openai", "alice", "")
		sealed := sealFor(pub, ca, key)
		ca.Spec.APIKey.Sealed = sealed
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		DeferCleanup(deleteAccount, ca)
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("True/Connected"))
			g.Expect(conditionOf(got, pipesv1.ConditionSynced)).To(Equal("True/Ready"))
			g.Expect(got.Status.APIKeyLast4).To(Equal("q7w3"))
			g.Expect(got.Status.CredentialVersion).To(BeEquivalentTo(1))
		}).Should(Succeed())
		Expect(decryptStored(ctx, ca)).To(Equal(key))
		Expect(kstatusOf(ctx, ca)).To(Equal(status.CurrentStatus))
		Eventually(func() []string { return eventReasons(ctx, ca) }).Should(ContainElement(pipesv1.EventConnected))

		By("refusing the same value in an account that differs in one binding field")
		other := newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(other, "openai"))).To(Succeed())
		deleteAccount(ctx, ca) // the same provider and user in ns would be a duplicate account
		for _, copied := range []*pipesv1.ConnectedAccount{
			sealedAccount(other, "openai-alice", "openai", "alice", ""),  // namespace
			sealedAccount(ns, "openai-alice-2", "openai", "alice", ""),   // name
			sealedAccount(ns, "openai-alice", "github", "alice", ""),     // provider
			sealedAccount(ns, "openai-alice", "openai", "bob", ""),       // user
			sealedAccount(ns, "openai-alice", "openai", "alice", "acme"), // organization
		} {
			copied.Spec.APIKey.Sealed = sealed
			Expect(env.Client.Create(ctx, copied)).To(Succeed())
			Eventually(func() string { return readyReason(ctx, copied) }).Should(Equal("False/"+pipesv1.ReasonSealedForAnotherAccount), "%s/%s %+v", copied.Namespace, copied.Name, copied.Spec)
			c := syncedCondition(ctx, copied)
			Expect(c.Status).To(Equal(metav1.ConditionFalse))
			Expect(c.Message).To(ContainSubstring("was sealed for another account"))
			Expect(c.Message).To(ContainSubstring(credential.SealingContext(copied).String()), "the message names this account's binding")
			Expect(c.Message).To(ContainSubstring("kubectl pipes seal"))
			got := getAccount(ctx, copied)
			Expect(got.Status.State).To(Equal(pipesv1.StateDisconnected))
			Expect(got.Status.CredentialSecretRef).To(BeNil())
			Expect(kstatusOf(ctx, copied)).To(Equal(status.FailedStatus))
			Eventually(func() []string { return eventReasons(ctx, copied) }).Should(ContainElement(pipesv1.EventConnectionFailed))
			deleteAccount(ctx, copied)
		}

		By("searching the API server, etcd and the manager's log for the plaintext key")
		hits, err := testenv.APIObjectsContaining(ctx, env.Config, []byte(key))
		Expect(err).NotTo(HaveOccurred())
		Expect(hits).To(BeEmpty())
		found, err := testenv.EtcdOccurrences(env.EtcdDataDir(), []byte(key))
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(BeEmpty(), "a sealed key is never stored unencrypted, not even in a source Secret")
		Expect(env.Log.Bytes()).NotTo(ContainSubstring(key))
	})

	It("rotates the stored key when the sealed value changes, and not when the same value is applied again", func(ctx SpecContext) {
		pub := publicKeyset(ctx)
		ca := sealedAccount(ns, "openai-carol", "openai", "carol", "org_1")
		ca.Spec.APIKey.Sealed = sealFor(pub, ca, "sk-first-"+strings.Repeat("F", 20)+"aaa1")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		DeferCleanup(deleteAccount, ca)
		Eventually(func() string { return getAccount(ctx, ca).Status.APIKeyLast4 }).Should(Equal("aaa1"))

		update(ctx, ca, func(a *pipesv1.ConnectedAccount) { a.Labels = map[string]string{"touched": "yes"} })
		Consistently(func() int64 { return getAccount(ctx, ca).Status.CredentialVersion }, "1s").Should(BeEquivalentTo(1))

		update(ctx, ca, func(a *pipesv1.ConnectedAccount) {
			a.Spec.APIKey.Sealed = sealFor(pub, ca, "sk-second-"+strings.Repeat("G", 20)+"bbb2")
		})
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(got.Status.CredentialVersion).To(BeEquivalentTo(2))
			g.Expect(got.Status.APIKeyLast4).To(Equal("bbb2"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(ctx, ca) }).Should(ContainElement(pipesv1.EventRotated))
		Expect(kstatusOf(ctx, ca)).To(Equal(status.CurrentStatus))
	})

	It("says what is wrong with a corrupted or foreign sealed value, keeps the last good key, and refuses a malformed one at admission", func(ctx SpecContext) {
		pub := publicKeyset(ctx)
		ca := sealedAccount(ns, "openai-dave", "openai", "dave", "")
		good := sealFor(pub, ca, "sk-good-"+strings.Repeat("D", 20)+"good")
		ca.Spec.APIKey.Sealed = good
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		DeferCleanup(deleteAccount, ca)
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))

		By("a flipped character: Synced=False, SealedValueInvalid; the last good key stays vendable")
		corrupted := []byte(good)
		i := len(corrupted) - 10
		corrupted[i] = map[bool]byte{true: 'B', false: 'A'}[corrupted[i] == 'A']
		update(ctx, ca, func(a *pipesv1.ConnectedAccount) { a.Spec.APIKey.Sealed = string(corrupted) })
		Eventually(func() string { return conditionOf(getAccount(ctx, ca), pipesv1.ConditionSynced) }).Should(Equal("False/" + pipesv1.ReasonSealedValueInvalid))
		Expect(syncedCondition(ctx, ca).Message).To(ContainSubstring("reseal the key for this account"))
		Expect(readyReason(ctx, ca)).To(Equal("True/Connected"))
		Expect(getAccount(ctx, ca).Status.APIKeyLast4).To(Equal("good"))
		Expect(kstatusOf(ctx, ca)).To(Equal(status.FailedStatus), "a source that does not sync is Failed even while the old key is vended")

		By("a value sealed by another cluster's operator: SealedValueInvalid, naming the unknown key")
		foreign, err := sealing.NewKeyset()
		Expect(err).NotTo(HaveOccurred())
		foreignPub, err := foreign.PublicKeysetJSON()
		Expect(err).NotTo(HaveOccurred())
		update(ctx, ca, func(a *pipesv1.ConnectedAccount) {
			a.Spec.APIKey.Sealed = sealFor(foreignPub, ca, "sk-foreign-"+strings.Repeat("X", 20))
		})
		Eventually(func() string { return syncedCondition(ctx, ca).Message }).Should(ContainSubstring("sealed with a key this operator does not hold"))
		Expect(conditionOf(getAccount(ctx, ca), pipesv1.ConditionSynced)).To(Equal("False/" + pipesv1.ReasonSealedValueInvalid))

		By("the webhook refuses values that are not sealed values at all")
		for bad, msg := range map[string]string{
			"sk-live-plaintext-key-pasted-by-mistake": `spec.apiKey.sealed is not a sealed value: it must start with "v1:"`,
			good[:50]:                   "too short for a sealed API key",
			good[:len(good)-4] + "!!!!": `spec.apiKey.sealed is not valid base64 after "v1:"`,
		} {
			err := env.Client.Update(ctx, withSealed(getAccount(ctx, ca), bad))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
			Expect(err.Error()).To(ContainSubstring(msg))
			Expect(err.Error()).NotTo(ContainSubstring("sk-live-plaintext"), "the rejected value is not echoed")
		}
		By("both sources at once: CEL refuses it")
		both := withSealed(getAccount(ctx, ca), good)
		both.Spec.APIKey.SecretKeyRef = &pipesv1.SecretKeyReference{Name: "s", Key: "api-key"}
		err = env.Client.Update(ctx, both)
		Expect(err).To(MatchError(ContainSubstring("spec.apiKey needs exactly one source")))

		By("without the webhook, a malformed value reaches the reconciler, which reports it and carries on")
		withoutWebhook(ctx, "vconnectedaccount.pipes.dev")
		update(ctx, ca, func(a *pipesv1.ConnectedAccount) { a.Spec.APIKey.Sealed = "v1:%%%not-base64%%%" })
		Eventually(func() string { return syncedCondition(ctx, ca).Message }).Should(ContainSubstring("is not one kubectl pipes seal produces"))
		update(ctx, ca, func(a *pipesv1.ConnectedAccount) { a.Spec.APIKey.Sealed = good })
		Eventually(func() string { return conditionOf(getAccount(ctx, ca), pipesv1.ConditionSynced) }).Should(Equal("True/Ready"))
		Expect(kstatusOf(ctx, ca)).To(Equal(status.CurrentStatus))
		Expect(getAccount(ctx, ca).Status.CredentialVersion).To(BeEquivalentTo(1), "the same key as before: no new version")
	})

	It("reports an account waiting for its key as in progress to kstatus", func(ctx SpecContext) {
		ca := account(ns, "openai-erin", "openai", "erin", "", "")
		Expect(env.Client.Create(ctx, ca)).To(Succeed())
		DeferCleanup(deleteAccount, ca)
		Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("False/" + pipesv1.ReasonAwaitingCredential))
		Expect(kstatusOf(ctx, ca)).To(Equal(status.InProgressStatus))
	})

	It("publishes the public keyset to every authenticated user, and only that ConfigMap", func(ctx SpecContext) {
		root, err := devenv.Root()
		Expect(err).NotTo(HaveOccurred())
		raw, err := os.ReadFile(filepath.Join(root, "config", "rbac", "sealing_public_keyset_reader.yaml"))
		Expect(err).NotTo(HaveOccurred())
		docs := strings.Split(string(raw), "\n---\n")
		var role rbacv1.Role
		var binding rbacv1.RoleBinding
		Expect(yaml.Unmarshal([]byte(docs[0]), &role)).To(Succeed())
		Expect(yaml.Unmarshal([]byte(docs[1]), &binding)).To(Succeed())
		role.Namespace, binding.Namespace = testenv.OperatorNamespace, testenv.OperatorNamespace // as config/default's kustomization sets them
		Expect(client.IgnoreAlreadyExists(env.Client.Create(ctx, &role))).To(Succeed())
		Expect(client.IgnoreAlreadyExists(env.Client.Create(ctx, &binding))).To(Succeed())
		other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: "not-public-" + ns}}
		Expect(env.Client.Create(ctx, other)).To(Succeed())

		Expect(env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ci"}})).To(Succeed())
		token, err := env.Token(ctx, ns, "ci")
		Expect(err).NotTo(HaveOccurred())
		cfg := rest.AnonymousClientConfig(env.Config)
		cfg.BearerToken = token
		ci, err := client.New(cfg, client.Options{Scheme: env.Client.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		pub, err := keyadmin.PublicKeyset(ctx, ci, testenv.OperatorNamespace)
		Expect(err).NotTo(HaveOccurred())
		Expect(pub).To(Equal(publicKeyset(ctx)))
		Expect(apierrors.IsForbidden(ci.Get(ctx, client.ObjectKeyFromObject(other), &corev1.ConfigMap{}))).To(BeTrue())
		Expect(apierrors.IsForbidden(ci.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(testenv.OperatorNamespace)))).To(BeTrue())

		By("the published keyset has no private key material")
		Expect(string(pub)).NotTo(ContainSubstring("HpkePrivateKey"))
		Expect(sealing.ParsePublicKeyset(pub)).NotTo(BeNil())
	})

	It("rotates the sealing keyset: new seals use the new key, old values open until resealed, then prune removes the old key", Serial, func(ctx SpecContext) {
		oldPub := publicKeyset(ctx)
		a := sealedAccount(ns, "openai-frank", "openai", "frank", "")
		a.Spec.APIKey.Sealed = sealFor(oldPub, a, "sk-frank-"+strings.Repeat("1", 20)+"fr01")
		Expect(env.Client.Create(ctx, a)).To(Succeed())
		DeferCleanup(deleteAccount, a)
		Eventually(func() string { return readyReason(ctx, a) }).Should(Equal("True/Connected"))

		oldID, newID, err := keyadmin.RotateSealingKeyset(ctx, env.Client, sealingKeysetKey)
		Expect(err).NotTo(HaveOccurred())
		Expect(newID).NotTo(Equal(oldID))

		By("every replica reloads; the published keyset now seals with the new key")
		var newPub []byte
		Eventually(func(g Gomega) {
			newPub = publicKeyset(ctx)
			id, err := sealing.KeyIDOf(sealFor(newPub, a, "sk-probe-0123456789"))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(id).To(Equal(newID))
		}).Should(Succeed())
		Expect(env.Operator.Opener.Keyset().PrimaryKeyID()).To(Equal(newID))

		By("a value sealed with the old key still opens")
		b := sealedAccount(ns, "openai-grace", "openai", "grace", "")
		b.Spec.APIKey.Sealed = sealFor(oldPub, b, "sk-grace-"+strings.Repeat("2", 20)+"gr02")
		Expect(env.Client.Create(ctx, b)).To(Succeed())
		DeferCleanup(deleteAccount, b)
		Eventually(func() string { return readyReason(ctx, b) }).Should(Equal("True/Connected"))

		By("status counts the sealed values per key; prune keeps the old key while they use it")
		st, err := keyadmin.SealingKeysetStatus(ctx, env.Client, sealingKeysetKey)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Primary).To(Equal(newID))
		Expect(st.Keys).To(ContainElement(keyadmin.KeyStatus{ID: oldID, Primary: false, Uses: 2}))
		Expect(st.OnOldKeys).To(Equal(2))
		var out bytes.Buffer
		Expect(st.Write(&out)).To(Succeed())
		Expect(out.String()).To(ContainSubstring("2 still on old keys"))
		removed, err := keyadmin.PruneSealingKeyset(ctx, env.Client, sealingKeysetKey)
		Expect(err).NotTo(HaveOccurred())
		Expect(removed).NotTo(ContainElement(oldID))

		By("resealing with the new key (a Git change): the accounts keep their keys; prune then removes the old key")
		for _, ca := range []*pipesv1.ConnectedAccount{a, b} {
			plain := map[string]string{a.Name: "sk-frank-" + strings.Repeat("1", 20) + "fr01", b.Name: "sk-grace-" + strings.Repeat("2", 20) + "gr02"}[ca.Name]
			update(ctx, ca, func(x *pipesv1.ConnectedAccount) { x.Spec.APIKey.Sealed = sealFor(newPub, x, plain) })
		}
		for _, ca := range []*pipesv1.ConnectedAccount{a, b} {
			Eventually(func() string { return conditionOf(getAccount(ctx, ca), pipesv1.ConditionSynced) }).Should(Equal("True/Ready"))
		}
		removed, err = keyadmin.PruneSealingKeyset(ctx, env.Client, sealingKeysetKey)
		Expect(err).NotTo(HaveOccurred())
		Expect(removed).To(ContainElement(oldID))
		Eventually(func() []uint32 { return env.Operator.Opener.Keyset().KeyIDs() }).ShouldNot(ContainElement(oldID))
		Expect(getAccount(ctx, a).Status.CredentialVersion).To(BeEquivalentTo(1), "the same key resealed is not a new credential version")

		By("a value sealed with the pruned key is refused")
		c := sealedAccount(ns, "openai-heidi", "openai", "heidi", "")
		c.Spec.APIKey.Sealed = sealFor(oldPub, c, "sk-heidi-"+strings.Repeat("3", 20))
		Expect(env.Client.Create(ctx, c)).To(Succeed())
		DeferCleanup(deleteAccount, c)
		Eventually(func() string { return readyReason(ctx, c) }).Should(Equal("False/" + pipesv1.ReasonSealedValueInvalid))
		Expect(syncedCondition(ctx, c).Message).To(ContainSubstring("key %d", oldID))
	})

	It("survives a GitOps round trip: kubectl apply --server-side -k from a git repository, in sync on re-apply, rotated by a commit", func(ctx SpecContext) {
		kubectl := kubectlAsAdmin()
		pub := publicKeyset(ctx)
		ca := sealedAccount(ns, "openai-ivan", "openai", "ivan", "")
		DeferCleanup(deleteAccount, ca)

		repo := GinkgoT().TempDir()
		git := func(dir string, args ...string) {
			cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=ci", "-c", "user.email=ci@example.com", "-c", "init.defaultBranch=main"}, args...)...)
			out, err := cmd.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "git %v: %s", args, out)
		}
		commit := func(sealed, msg string) {
			Expect(os.WriteFile(filepath.Join(repo, "kustomization.yaml"), []byte("namespace: "+ns+"\nresources:\n- account.yaml\n"), 0o600)).To(Succeed())
			Expect(os.WriteFile(filepath.Join(repo, "account.yaml"), []byte(`apiVersion: pipes.dev/v1alpha1
kind: ConnectedAccount
metadata:
  name: openai-ivan
spec:
  providerRef:
    name: openai
  userID: ivan
  apiKey:
    sealed: `+sealed+"\n"), 0o600)).To(Succeed())
			git(repo, "add", ".")
			git(repo, "commit", "-q", "-m", msg)
		}
		git(repo, "init", "-q")
		commit(sealFor(pub, ca, "sk-ivan-"+strings.Repeat("I", 20)+"iv01"), "seal ivan's key")
		checkout := filepath.Join(GinkgoT().TempDir(), "checkout")
		out, err := exec.Command("git", "clone", "-q", repo, checkout).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", out)

		apply := func() string {
			stdout, stderr, err := kubectl("apply", "--server-side", "--field-manager=gitops", "-k", checkout)
			Expect(err).NotTo(HaveOccurred(), "%s", stderr)
			return stdout
		}
		diff := func() (string, error) {
			stdout, stderr, err := kubectl("diff", "--server-side", "--field-manager=gitops", "-k", checkout)
			if err != nil {
				return stdout + stderr, err
			}
			return stdout, nil
		}

		By("kstatus sees a freshly applied account as in progress, not current")
		stdout, stderr, err := kubectl("apply", "--server-side", "--field-manager=gitops", "--dry-run=server", "-o", "json", "-k", checkout)
		Expect(err).NotTo(HaveOccurred(), "%s", stderr)
		dry := &unstructured.Unstructured{}
		Expect(dry.UnmarshalJSON([]byte(stdout))).To(Succeed())
		res, err := status.Compute(dry)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Status).To(Equal(status.InProgressStatus), "%s", stdout)

		Expect(apply()).To(ContainSubstring("connectedaccount.pipes.dev/openai-ivan serverside-applied"))
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("True/Connected"))
			g.Expect(got.Status.APIKeyLast4).To(Equal("iv01"))
		}).Should(Succeed())
		Expect(kstatusOf(ctx, ca)).To(Equal(status.CurrentStatus))
		generation := getAccount(ctx, ca).Generation

		By("after reconcile, nothing but status differs from Git: kubectl diff is empty, re-applying changes nothing")
		d, err := diff()
		Expect(err).NotTo(HaveOccurred(), "kubectl diff found drift: %s", d)
		Expect(d).To(BeEmpty())
		apply()
		d, err = diff()
		Expect(err).NotTo(HaveOccurred(), "kubectl diff found drift: %s", d)
		got := getAccount(ctx, ca)
		Expect(got.Generation).To(Equal(generation))
		Expect(got.Status.CredentialVersion).To(BeEquivalentTo(1))

		By("a commit with a new sealed value rotates the key")
		commit(sealFor(pub, ca, "sk-ivan-"+strings.Repeat("J", 20)+"iv02"), "rotate ivan's key")
		git(checkout, "pull", "-q")
		d, err = diff()
		Expect(err).To(HaveOccurred(), "the new commit is drift until applied")
		Expect(d).To(ContainSubstring("sealed"))
		apply()
		Eventually(func(g Gomega) {
			got := getAccount(ctx, ca)
			g.Expect(got.Status.APIKeyLast4).To(Equal("iv02"))
			g.Expect(got.Status.CredentialVersion).To(BeEquivalentTo(2))
			g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		}).Should(Succeed())
		Expect(kstatusOf(ctx, ca)).To(Equal(status.CurrentStatus))
		d, err = diff()
		Expect(err).NotTo(HaveOccurred(), "kubectl diff found drift: %s", d)
		Expect(d).To(BeEmpty())
	})
})

// withSealed sets ca's sealed value.
func withSealed(ca *pipesv1.ConnectedAccount, value string) *pipesv1.ConnectedAccount {
	ca.Spec.APIKey = &pipesv1.APIKeySource{Sealed: value}
	return ca
}

// decryptStored opens ca's stored credential with the operator's keyring.
func decryptStored(ctx context.Context, ca *pipesv1.ConnectedAccount) (string, error) {
	var s corev1.Secret
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: credential.SecretName(ca)}, &s); err != nil {
		return "", err
	}
	plain, err := env.Operator.Store.Open(getAccount(ctx, ca), &s)
	return string(plain), err
}

// kubectlAsAdmin returns a function running the source-built kubectl as a cluster admin.
func kubectlAsAdmin() func(args ...string) (stdout, stderr string, err error) {
	user, err := env.Env.AddUser(envtest.User{Name: "gitops", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	k, err := user.Kubectl()
	Expect(err).NotTo(HaveOccurred())
	k.Path = filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	return func(args ...string) (string, string, error) {
		o, e, err := k.Run(args...)
		out, _ := io.ReadAll(o)
		errOut, _ := io.ReadAll(e)
		return string(out), string(errOut), err
	}
}
