package controllers_test

import (
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

// gauge reads a gauge from the manager's metrics registry.
func gauge(name string) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	Fail("metric " + name + " not registered")
	return 0
}

var _ = Describe("Keyset rotation", func() {
	It("re-encrypts every credential under a new primary key, after which the old key can be removed", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		keysetKey := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "pipes-keyset"}
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		var accounts []*pipesv1.ConnectedAccount
		keys := map[string]string{}
		for i := range 3 {
			name := fmt.Sprintf("acct-%d", i)
			keys[name] = fmt.Sprintf("sk-rot-%d-%s", i, strings.Repeat("r", 24))
			Expect(env.Client.Create(ctx, sourceSecret(ns, name, keys[name]))).To(Succeed())
			ca := account(ns, name, "openai", fmt.Sprintf("u%d", i), "", name)
			Expect(env.Client.Create(ctx, ca)).To(Succeed())
			accounts = append(accounts, ca)
		}
		for _, ca := range accounts {
			Eventually(func() string { return readyReason(ctx, ca) }).Should(Equal("True/Connected"))
		}

		oldID, newID, err := keyring.RotateSecret(ctx, env.Client, keysetKey)
		Expect(err).NotTo(HaveOccurred())
		Expect(newID).NotTo(Equal(oldID))

		By("re-encrypting in the background")
		for _, ca := range accounts {
			Eventually(func() int64 { return getAccount(ctx, ca).Status.EncryptionKeyID }).Should(Equal(int64(newID)))
			Expect(getAccount(ctx, ca).Status.CredentialVersion).To(BeEquivalentTo(1), "re-encryption is not a rotation of the credential")
			Eventually(func() []string { return eventReasons(ctx, ca) }).Should(ContainElement(pipesv1.EventReencrypted))
		}
		Eventually(func() float64 { return gauge("pipes_credentials_on_old_keys") }).Should(BeZero())
		Expect(gauge("pipes_credentials_stored")).To(BeNumerically(">=", 3))
		usage, err := credential.KeyUsage(ctx, env.Client)
		Expect(err).NotTo(HaveOccurred())
		Expect(usage).NotTo(HaveKey(oldID))

		By("pruning the old key")
		removed, err := keyring.PruneSecret(ctx, env.Client, keysetKey, func(ctx context.Context) (map[uint32]int, error) {
			return credential.KeyUsage(ctx, env.Client)
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(removed).To(ContainElement(oldID))
		Eventually(func() []uint32 { return env.Operator.Keyring.Keyset().KeyIDs() }).ShouldNot(ContainElement(oldID))

		By("every credential still decrypts with the pruned keyset")
		for _, ca := range accounts {
			got := getAccount(ctx, ca)
			s, err := env.Operator.Store.Get(ctx, got)
			Expect(err).NotTo(HaveOccurred())
			plain, err := env.Operator.Store.Open(got, s)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(plain)).To(Equal(keys[ca.Name]))
			Expect(conditionOf(got, pipesv1.ConditionReady)).To(Equal("True/Connected"))
		}
	})
})
