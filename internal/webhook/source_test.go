package webhook_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

// A principal that may write ConnectedAccounts but not read a Secret must not be able to
// make the operator read that Secret for it.
var _ = Describe("ConnectedAccount source Secrets and the requester's own rights", func() {
	var (
		ns      string
		backend client.Client // a ServiceAccount bound only to pipes-backend
		user    string
	)

	BeforeEach(func() {
		ns = newNamespace(env.Client)
		createAll(env.Client, ns, apiKeyProvider("openai"))
		for _, name := range []string{"db-password", "allowed-key"} {
			Expect(env.Client.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}},
				Data:       map[string][]byte{"api-key": []byte("sk-not-for-the-backend-0000")},
			})).To(Succeed())
		}
		tok, err := env.ServiceAccountToken(ctx, ns, "backend", "pipes-backend", ns)
		Expect(err).NotTo(HaveOccurred())
		user = "system:serviceaccount:" + ns + ":backend"
		cfg := rest.AnonymousClientConfig(env.Config)
		cfg.BearerToken = tok
		backend, err = client.New(cfg, client.Options{Scheme: operator.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		By("granting the backend get on allowed-key only")
		Expect(env.Client.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-allowed-key"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, ResourceNames: []string{"allowed-key"}}},
		})).To(Succeed())
		Expect(env.Bind(ctx, ns, "read-allowed-key", rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "read-allowed-key"}, ns, "backend")).To(Succeed())
	})

	sourced := func(name, secret string) *pipesv1.ConnectedAccount {
		ca := account(name, "openai", "user_"+name, "")
		ca.Namespace = ns
		ca.Spec.APIKey = &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: secret, Key: "api-key"}}
		return ca
	}

	It("rejects naming a Secret the requester may not get, naming the missing permission", func() {
		err := backend.Create(ctx, sourced("steal", "db-password"))
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(`spec.apiKey.secretKeyRef.name: ` + user + ` may not get Secret "db-password" in namespace "` + ns + `"`))
		Expect(err.Error()).To(ContainSubstring("grant it get on secrets (resourceNames: [db-password])"))
		Expect(err.Error()).NotTo(ContainSubstring("sk-not-for-the-backend"))
	})

	It("accepts a Secret the requester may get, and re-checks when the reference changes", func() {
		ca := sourced("mine", "allowed-key")
		Expect(backend.Create(ctx, ca)).To(Succeed())

		By("updates that keep the reference are not re-checked (labels, the operator's finalizer)")
		Expect(update(backend, ca, func(c *pipesv1.ConnectedAccount) { c.Labels = map[string]string{"team": "a"} })).To(Succeed())

		By("pointing it at a Secret it may not read is refused")
		err := update(backend, ca, func(c *pipesv1.ConnectedAccount) { c.Spec.APIKey.SecretKeyRef.Name = "db-password" })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(`may not get Secret "db-password"`))

		By("an administrator, who may read it, can make the same change")
		Expect(update(env.Client, ca, func(c *pipesv1.ConnectedAccount) { c.Spec.APIKey.SecretKeyRef.Name = "db-password" })).To(Succeed())
	})

	It("rejects a Provider or OrganizationProvider whose OAuth client secret the requester may not get", func() {
		By("letting the backend write Providers and OrganizationProviders")
		Expect(env.Client.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "provider-author"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"pipes.dev"}, Resources: []string{"providers", "organizationproviders"},
				Verbs: []string{"get", "create", "update"}}},
		})).To(Succeed())
		Expect(env.Bind(ctx, ns, "provider-author", rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "provider-author"}, ns, "backend")).To(Succeed())
		p := oauthProvider("gitlab")
		p.Namespace = ns
		p.Spec.OAuth.ClientSecretRef = &pipesv1.SecretKeyReference{Name: "db-password", Key: "api-key"}
		Eventually(func() string {
			err := backend.Create(ctx, p.DeepCopy())
			if err == nil {
				return "created"
			}
			return err.Error()
		}).Should(ContainSubstring(`spec.oauth.clientSecretRef.name: ` + user + ` may not get Secret "db-password"`))
		p.Spec.OAuth.ClientSecretRef.Name = "allowed-key"
		Expect(backend.Create(ctx, p)).To(Succeed())
		err := update(backend, p, func(p *pipesv1.Provider) { p.Spec.OAuth.ClientSecretRef.Name = "db-password" })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)

		op := orgProvider("gitlab-org-1", "gitlab", "org_1")
		op.Namespace = ns
		op.Spec.Credentials = &pipesv1.OrganizationOAuthCredentials{ClientID: "org", ClientSecretRef: pipesv1.SecretKeyReference{Name: "db-password", Key: "api-key"}}
		err = backend.Create(ctx, op)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(`spec.credentials.clientSecretRef.name: ` + user + ` may not get Secret "db-password"`))
		Expect(err.Error()).To(ContainSubstring("OAuth client secret"))
	})
})
