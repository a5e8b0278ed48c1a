package webhook_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/webhook"
)

// ---------------------------------------------------------------------------
// Expected sentences

const (
	msgMethodAPIKeyToOAuth = "spec.method is immutable (was APIKey, requested OAuth): a provider is either OAuth or API key, fixed when it is created; delete this Provider and create it again with the method you want"
	msgMethodOAuthToAPIKey = "spec.method is immutable (was OAuth, requested APIKey): a provider is either OAuth or API key, fixed when it is created; delete this Provider and create it again with the method you want"
	msgOAuthForbidden      = "spec.oauth is forbidden when spec.method is APIKey: API key providers take only description, displayName and enabled; each user supplies their own key when they connect"
	msgOAuthRequired       = "spec.oauth is required when spec.method is OAuth: set its authorizationURL, tokenURL and client"
	msgAPIKeyOverrides     = "API key providers have no credentials or scopes to override: the key is supplied per user when they connect; only spec.enabled can be set"
	msgNeedsSource         = "spec.apiKey needs exactly one source: set either spec.apiKey.secretKeyRef or spec.apiKey.sealed (made with kubectl pipes seal), not both; or remove spec.apiKey to set the key through the backend API"
	msgCELURL              = "must be an absolute https URL (http only for localhost/127.0.0.1/::1)"
	msgWebhookTokenURL     = "spec.oauth.tokenURL must use https (plain http is accepted only for localhost, 127.0.0.1 and ::1)"
	msgCredentialsAppMode  = `spec.credentials is allowed only when Provider "github" has spec.oauth.credentialsMode Organization; this provider uses the application's OAuth client`
	msgMismatch            = `spec.apiKey: auth_method_mismatch: Provider "github" uses OAuth, so its accounts connect through the OAuth flow, not with an API key; remove spec.apiKey`
)

// notFoundIn is the sentence for a missing Provider; {ns} is replaced by the namespace.
func notFoundIn(provider string) string {
	return fmt.Sprintf(`spec.providerRef.name: Provider %q not found in namespace "{ns}"; create the Provider first (kubectl get providers -n {ns} lists them)`, provider)
}

// deniedBy is how the apiserver prefixes a webhook's denial, proving the webhook (not a
// CEL rule) rejected the request.
func deniedBy(webhookName string) string {
	return fmt.Sprintf("admission webhook %q denied the request", webhookName)
}

const (
	providerWebhook = "vprovider.pipes.dev"
	orgWebhook      = "vorganizationprovider.pipes.dev"
	accountWebhook  = "vconnectedaccount.pipes.dev"
)

// ---------------------------------------------------------------------------
// Outcomes

// outcome is what an apply should do: succeed (no substrings) or fail with a 422 Invalid
// error whose message contains every substring ({ns} is replaced by the namespace), or
// matches alt when set (a rule enforced by CEL and by the webhook with different words).
type outcome struct {
	substrs []string
	alt     types.GomegaMatcher
}

func accepted() outcome                        { return outcome{} }
func rejected(substrs ...string) outcome       { return outcome{substrs: substrs} }
func rejectedBy(m types.GomegaMatcher) outcome { return outcome{alt: m} }

func (o outcome) matcher(ns string) types.GomegaMatcher {
	if o.substrs == nil && o.alt == nil {
		return Succeed()
	}
	ms := []types.GomegaMatcher{HaveOccurred(), Satisfy(apierrors.IsInvalid)}
	for _, s := range o.substrs {
		ms = append(ms, MatchError(ContainSubstring(strings.ReplaceAll(s, "{ns}", ns))))
	}
	if o.alt != nil {
		ms = append(ms, o.alt)
	}
	return And(ms...)
}

// ---------------------------------------------------------------------------
// Objects

func apiKeyProvider(name string) *pipesv1.Provider {
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: pipesv1.ProviderSpec{
			Method:      pipesv1.AuthMethodAPIKey,
			DisplayName: "OpenAI",
			Description: "Your OpenAI API key runs completions on your behalf.",
		},
	}
}

func oauthProvider(name string, mutate ...func(*pipesv1.OAuthSpec)) *pipesv1.Provider {
	o := &pipesv1.OAuthSpec{
		AuthorizationURL: "https://github.com/login/oauth/authorize",
		TokenURL:         "https://github.com/login/oauth/access_token",
		ClientID:         "Iv1.0123456789abcdef",
		ClientSecretRef:  &pipesv1.SecretKeyReference{Name: "github-oauth-client", Key: "client-secret"},
		Scopes:           []string{"repo", "read:user"},
	}
	for _, m := range mutate {
		m(o)
	}
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, DisplayName: "GitHub", OAuth: o},
	}
}

func organizationMode(o *pipesv1.OAuthSpec) {
	o.CredentialsMode, o.ClientID, o.ClientSecretRef = pipesv1.OAuthCredentialsOrganization, "", nil
}

func orgProvider(name, provider, org string, mutate ...func(*pipesv1.OrganizationProvider)) *pipesv1.OrganizationProvider {
	op := &pipesv1.OrganizationProvider{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: pipesv1.OrganizationProviderSpec{
			ProviderRef:    pipesv1.LocalObjectReference{Name: provider},
			OrganizationID: org,
		},
	}
	for _, m := range mutate {
		m(op)
	}
	return op
}

func withScopes(s ...string) func(*pipesv1.OrganizationProvider) {
	return func(op *pipesv1.OrganizationProvider) { op.Spec.Scopes = s }
}

func withCredentials(op *pipesv1.OrganizationProvider) {
	op.Spec.Credentials = &pipesv1.OrganizationOAuthCredentials{
		ClientID: "org-client", ClientSecretRef: pipesv1.SecretKeyReference{Name: "org-oauth", Key: "client-secret"},
	}
}

func withEnabled(v bool) func(*pipesv1.OrganizationProvider) {
	return func(op *pipesv1.OrganizationProvider) { op.Spec.Enabled = &v }
}

func account(name, provider, user, org string, mutate ...func(*pipesv1.ConnectedAccount)) *pipesv1.ConnectedAccount {
	ca := &pipesv1.ConnectedAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: pipesv1.ConnectedAccountSpec{
			ProviderRef: pipesv1.LocalObjectReference{Name: provider}, UserID: user, OrganizationID: org,
		},
	}
	for _, m := range mutate {
		m(ca)
	}
	return ca
}

func withSecretKeyRef(ca *pipesv1.ConnectedAccount) {
	ca.Spec.APIKey = &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: ca.Name + "-key", Key: "api-key"}}
}

// ---------------------------------------------------------------------------
// Helpers

// newNamespace creates a fresh namespace in the control plane behind c.
func newNamespace(c client.Client) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "wh-"}}
	Expect(c.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// createAll creates objs in ns and, in the webhook environment, waits until the
// manager's cache (which the webhooks read) holds each one.
func createAll(c client.Client, ns string, objs ...client.Object) {
	GinkgoHelper()
	for _, o := range objs {
		o.SetNamespace(ns)
		Expect(c.Create(ctx, o)).To(Succeed(), "creating %T %s", o, o.GetName())
		if c == env.Client {
			waitCached(o)
		}
	}
}

// waitCached waits until the manager's cache holds o (at least as new as o).
func waitCached(o client.Object) {
	GinkgoHelper()
	gvk, err := env.Client.GroupVersionKindFor(o)
	Expect(err).NotTo(HaveOccurred())
	fresh, err := env.Client.Scheme().New(gvk)
	Expect(err).NotTo(HaveOccurred())
	obj := fresh.(client.Object)
	Eventually(func() error {
		return env.Operator.Manager.GetCache().Get(ctx, client.ObjectKeyFromObject(o), obj)
	}).Should(Succeed(), "the manager's cache never saw %T %s/%s", o, o.GetNamespace(), o.GetName())
}

// update re-reads obj, applies mutate and updates it, retrying on conflicts (the
// controllers write status and finalizers concurrently). It returns the first
// non-conflict error.
func update[T client.Object](c client.Client, obj T, mutate func(T)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return c.Update(ctx, obj)
	})
}

// ---------------------------------------------------------------------------
// Provider

var _ = Describe("Provider webhook", func() {
	DescribeTable("create",
		func(p *pipesv1.Provider, want outcome) {
			ns := newNamespace(env.Client)
			p.Namespace = ns
			Expect(env.Client.Create(ctx, p)).To(want.matcher(ns))
			if want.substrs == nil && want.alt == nil {
				var got pipesv1.Provider
				Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(p), &got)).To(Succeed())
				Expect(got.Spec.Method).To(Equal(p.Spec.Method))
				Expect(got.Spec.DisplayName).To(Equal(p.Spec.DisplayName))
				Expect(got.Spec.Description).To(Equal(p.Spec.Description))
				Expect(got.IsEnabled()).To(BeTrue(), "spec.enabled defaults to true")
			}
		},
		Entry("valid APIKey with description and displayName", apiKeyProvider("openai"), accepted()),
		Entry("APIKey with oauth", func() *pipesv1.Provider {
			p := apiKeyProvider("openai")
			p.Spec.OAuth = oauthProvider("x").Spec.OAuth
			return p
		}(), rejected(msgOAuthForbidden)),
		Entry("OAuth without oauth", &pipesv1.Provider{
			ObjectMeta: metav1.ObjectMeta{Name: "github"},
			Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth},
		}, rejected(msgOAuthRequired)),
		Entry("valid OAuth with https URLs", oauthProvider("github"), accepted()),
		Entry("OAuth tokenURL http://127.0.0.1", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.TokenURL = "http://127.0.0.1:8080/token"
		}), accepted()),
		Entry("OAuth URLs http://localhost", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.AuthorizationURL, o.TokenURL = "http://localhost:8080/authorize", "http://localhost:8080/token"
		}), accepted()),
		Entry("OAuth tokenURL http://[::1]", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.TokenURL = "http://[::1]:8080/token"
		}), accepted()),
		Entry("OAuth tokenURL http://example.com", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.TokenURL = "http://example.com/token"
		}), rejectedBy(And(
			MatchError(ContainSubstring("spec.oauth.tokenURL")),
			Or(MatchError(ContainSubstring(msgCELURL)), MatchError(ContainSubstring(msgWebhookTokenURL))),
		))),
		Entry("OAuth relative tokenURL", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.TokenURL = "/oauth/token"
		}), rejectedBy(And(
			MatchError(ContainSubstring("spec.oauth.tokenURL")),
			Or(MatchError(ContainSubstring(msgCELURL)), MatchError(ContainSubstring("spec.oauth.tokenURL must be an absolute URL"))),
		))),
		Entry("OAuth Application mode without clientID", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.ClientID = ""
		}), rejected("spec.oauth.clientID", "required when credentialsMode is Application")),
		Entry("OAuth Organization mode without a client", oauthProvider("github", organizationMode), accepted()),
		Entry("OAuth reserved authorizationParams (webhook only)", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.AuthorizationParams = map[string]string{"access_type": "offline", "state": "fixed"}
		}), rejected(deniedBy(providerWebhook), "spec.oauth.authorizationParams[state] is set by the OAuth flow itself; remove it (scopes go in spec.oauth.scopes)")),
		Entry("OAuth scope with a space (webhook only)", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.Scopes = []string{"repo", "read:user write:user"}
		}), rejected(deniedBy(providerWebhook), "spec.oauth.scopes[1] must be a single non-empty scope without spaces")),
		Entry("description too long", func() *pipesv1.Provider {
			p := apiKeyProvider("openai")
			p.Spec.Description = strings.Repeat("d", validation.MaxDescriptionLength+1)
			return p
		}(), rejected("spec.description", "Too long")),
		Entry("multibyte description of 1500 é (3000 bytes) is counted in characters", func() *pipesv1.Provider {
			p := apiKeyProvider("openai")
			p.Spec.Description = strings.Repeat("é", 1500)
			return p
		}(), accepted()),
		Entry("multibyte description of 2049 é", func() *pipesv1.Provider {
			p := apiKeyProvider("openai")
			p.Spec.Description = strings.Repeat("é", validation.MaxDescriptionLength+1)
			return p
		}(), rejected("spec.description", "Too long")),
	)

	DescribeTable("update",
		func(initial *pipesv1.Provider, mutate func(*pipesv1.Provider), want outcome) {
			ns := newNamespace(env.Client)
			createAll(env.Client, ns, initial)
			expected := initial.DeepCopy() // as stored, with defaults
			mutate(expected)
			Expect(update(env.Client, initial, mutate)).To(want.matcher(ns))
			var got pipesv1.Provider
			Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(initial), &got)).To(Succeed())
			if want.substrs == nil && want.alt == nil {
				Expect(got.Spec).To(Equal(expected.Spec))
			} else {
				Expect(got.Spec).NotTo(Equal(expected.Spec), "a rejected update must not be stored")
			}
		},
		Entry("method APIKey to OAuth", apiKeyProvider("openai"), func(p *pipesv1.Provider) {
			p.Spec.Method, p.Spec.OAuth = pipesv1.AuthMethodOAuth, oauthProvider("x").Spec.OAuth
		}, rejected(msgMethodAPIKeyToOAuth)),
		Entry("method OAuth to APIKey", oauthProvider("github"), func(p *pipesv1.Provider) {
			p.Spec.Method, p.Spec.OAuth = pipesv1.AuthMethodAPIKey, nil
		}, rejected(msgMethodOAuthToAPIKey)),
		Entry("description and displayName edits", apiKeyProvider("openai"), func(p *pipesv1.Provider) {
			p.Spec.Description, p.Spec.DisplayName = "Now with a different description.", "OpenAI (beta)"
		}, accepted()),
		Entry("OAuth scopes, description and enabled edits", oauthProvider("github"), func(p *pipesv1.Provider) {
			off := false
			p.Spec.Description, p.Spec.Enabled, p.Spec.OAuth.Scopes = "Repositories.", &off, []string{"repo"}
		}, accepted()),
		Entry("OAuth authorizationParams gaining a reserved key", oauthProvider("github"), func(p *pipesv1.Provider) {
			p.Spec.OAuth.AuthorizationParams = map[string]string{"redirect_uri": "https://evil.example/cb"}
		}, rejected(deniedBy(providerWebhook), "spec.oauth.authorizationParams[redirect_uri] is set by the OAuth flow itself")),
	)

	It("is served by the manager's webhook, which gives the rules' own sentences (CEL shadows some of them in the apiserver)", func() {
		v := &webhook.ProviderValidator{}
		oldP, newP := apiKeyProvider("openai"), apiKeyProvider("openai")
		newP.Spec.Method, newP.Spec.OAuth = pipesv1.AuthMethodOAuth, oauthProvider("x").Spec.OAuth
		_, err := v.ValidateUpdate(ctx, oldP, newP)
		Expect(err).To(MatchError(msgMethodAPIKeyToOAuth)) // exactly the sentence, no prefix
		var status *apierrors.StatusError
		Expect(errors.As(err, &status)).To(BeTrue())
		Expect(status.ErrStatus.Code).To(BeEquivalentTo(422))
		Expect(status.ErrStatus.Reason).To(Equal(metav1.StatusReasonInvalid))
		Expect(status.ErrStatus.Details.Kind).To(Equal("Provider"))
		Expect(status.ErrStatus.Details.Name).To(Equal("openai"))
		// kubectl prints causes as "field: message", so the cause drops the field from the sentence.
		Expect(status.ErrStatus.Details.Causes).To(Equal([]metav1.StatusCause{{
			Type: metav1.CauseType(field.ErrorTypeForbidden), Field: "spec.method",
			Message: strings.TrimPrefix(msgMethodAPIKeyToOAuth, "spec.method "),
		}}))

		_, err = v.ValidateCreate(ctx, oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.TokenURL = "http://example.com/t" }))
		Expect(err).To(MatchError(msgWebhookTokenURL))
		_, err = v.ValidateCreate(ctx, oauthProvider("github"))
		Expect(err).NotTo(HaveOccurred())
	})
})

// ---------------------------------------------------------------------------
// OrganizationProvider

var _ = Describe("OrganizationProvider webhook", func() {
	DescribeTable("create",
		func(providers []*pipesv1.Provider, op *pipesv1.OrganizationProvider, want outcome) {
			ns := newNamespace(env.Client)
			for _, p := range providers {
				createAll(env.Client, ns, p)
			}
			op.Namespace = ns
			Expect(env.Client.Create(ctx, op)).To(want.matcher(ns))
		},
		Entry("provider missing", nil, orgProvider("openai-org-9", "openai", "org_9"),
			rejected(deniedBy(orgWebhook), notFoundIn("openai"))),
		Entry("API key provider with scopes", []*pipesv1.Provider{apiKeyProvider("openai")},
			orgProvider("openai-org-9", "openai", "org_9", withScopes("read")),
			rejected(deniedBy(orgWebhook), "spec.scopes: "+msgAPIKeyOverrides)),
		Entry("API key provider with credentials", []*pipesv1.Provider{apiKeyProvider("openai")},
			orgProvider("openai-org-9", "openai", "org_9", withCredentials),
			rejected(deniedBy(orgWebhook), "spec.credentials: "+msgAPIKeyOverrides)),
		Entry("API key provider with only enabled", []*pipesv1.Provider{apiKeyProvider("openai")},
			orgProvider("openai-org-9", "openai", "org_9", withEnabled(false)), accepted()),
		Entry("OAuth provider, scopes not a subset", []*pipesv1.Provider{oauthProvider("github")},
			orgProvider("github-org-9", "github", "org_9", withScopes("repo", "admin:org", "delete_repo")),
			rejected(deniedBy(orgWebhook), `spec.scopes may only narrow Provider "github"'s scopes; not allowed: admin:org, delete_repo (allowed: repo, read:user)`)),
		Entry("OAuth provider, scopes a subset", []*pipesv1.Provider{oauthProvider("github")},
			orgProvider("github-org-9", "github", "org_9", withScopes("repo")), accepted()),
		Entry("OAuth provider, credentials with credentialsMode Application", []*pipesv1.Provider{oauthProvider("github")},
			orgProvider("github-org-9", "github", "org_9", withCredentials),
			rejected(deniedBy(orgWebhook), msgCredentialsAppMode)),
		Entry("OAuth provider, credentials with credentialsMode Organization", []*pipesv1.Provider{oauthProvider("github", organizationMode)},
			orgProvider("github-org-9", "github", "org_9", withCredentials, withScopes("read:user")), accepted()),
		Entry("organizationID with surrounding whitespace", []*pipesv1.Provider{apiKeyProvider("openai")},
			orgProvider("openai-org-9", "openai", " org_9"),
			rejected(deniedBy(orgWebhook), "spec.organizationID has leading or trailing whitespace; remove it")),
		Entry("organizationID of 200 é (400 bytes)", []*pipesv1.Provider{apiKeyProvider("openai")},
			orgProvider("openai-org-9", "openai", strings.Repeat("é", 200)), accepted()),
		Entry("OAuth provider, scope with a no-break space (webhook only)", []*pipesv1.Provider{oauthProvider("github")},
			orgProvider("github-org-9", "github", "org_9", withScopes("repo", "c\u00a0d")),
			rejected(deniedBy(orgWebhook), "spec.scopes[1] must be a single non-empty scope without spaces")),
	)

	It("rejects a second OrganizationProvider for the same provider and organization, naming the first", func() {
		ns := newNamespace(env.Client)
		createAll(env.Client, ns, apiKeyProvider("openai"), orgProvider("first", "openai", "org_9"))

		second := orgProvider("second", "openai", "org_9", withEnabled(false))
		second.Namespace = ns
		// createAll waited for the manager's cache to hold "first"; Eventually still allows
		// for the webhook's reads lagging behind (each failed attempt creates nothing).
		Eventually(func() error { return env.Client.Create(ctx, second.DeepCopy()) }).Should(rejected(
			deniedBy(orgWebhook),
			`spec.organizationID: OrganizationProvider "first" already configures Provider "openai" for organization "org_9"; edit that one instead`,
		).matcher(ns))
		Expect(apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(second), &pipesv1.OrganizationProvider{}))).To(BeTrue())

		// Another organization, or another provider for the same organization, is fine.
		createAll(env.Client, ns, orgProvider("other-org", "openai", "org_10"))
		createAll(env.Client, ns, oauthProvider("github"), orgProvider("other-provider", "github", "org_9"))
	})

	DescribeTable("update",
		func(mutate func(*pipesv1.OrganizationProvider), want outcome) {
			ns := newNamespace(env.Client)
			op := orgProvider("github-org-9", "github", "org_9", withScopes("repo"))
			createAll(env.Client, ns, oauthProvider("github"), apiKeyProvider("openai"), op)
			Expect(update(env.Client, op, mutate)).To(want.matcher(ns))
		},
		Entry("providerRef", func(op *pipesv1.OrganizationProvider) { op.Spec.ProviderRef.Name = "openai" },
			rejected("spec.providerRef is immutable", "create another OrganizationProvider for another provider")),
		Entry("organizationID", func(op *pipesv1.OrganizationProvider) { op.Spec.OrganizationID = "org_10" },
			rejected("spec.organizationID is immutable", "create another OrganizationProvider for another organization")),
		Entry("enabled and scopes within the provider's", func(op *pipesv1.OrganizationProvider) {
			off := false
			op.Spec.Enabled, op.Spec.Scopes = &off, []string{"read:user"}
		}, accepted()),
		Entry("scopes beyond the provider's", func(op *pipesv1.OrganizationProvider) { op.Spec.Scopes = []string{"gist"} },
			rejected(deniedBy(orgWebhook), `spec.scopes may only narrow Provider "github"'s scopes; not allowed: gist (allowed: repo, read:user)`)),
	)

	It("gives the webhook's own immutability sentences (CEL answers first in the apiserver)", func() {
		v := &webhook.OrganizationProviderValidator{Reader: env.Operator.Manager.GetClient()}
		ns := newNamespace(env.Client)
		createAll(env.Client, ns, apiKeyProvider("openai"), oauthProvider("github"))
		oldOP := orgProvider("op", "openai", "org_9")
		oldOP.Namespace = ns
		newOP := oldOP.DeepCopy()
		newOP.Spec.ProviderRef.Name, newOP.Spec.OrganizationID = "github", "org_10"
		_, err := v.ValidateUpdate(ctx, oldOP, newOP)
		Expect(err).To(MatchError(`spec.providerRef is immutable (was "openai"): create another OrganizationProvider for another provider; ` +
			`spec.organizationID is immutable (was "org_9"): create another OrganizationProvider for another organization`))
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
	})

	It("still admits updates of an OrganizationProvider whose Provider was deleted; its identity stays immutable", func() {
		ns := newNamespace(env.Client)
		p := oauthProvider("github")
		op := orgProvider("github-org-9", "github", "org_9", withScopes("repo"))
		createAll(env.Client, ns, p, op)
		Expect(env.Client.Delete(ctx, p)).To(Succeed())
		// The webhook reads the manager's cache: wait until it, too, has seen the deletion.
		Eventually(func() bool {
			return apierrors.IsNotFound(env.Operator.Manager.GetCache().Get(ctx, client.ObjectKeyFromObject(p), &pipesv1.Provider{}))
		}).Should(BeTrue(), "the manager's cache still holds the deleted Provider")

		// A label change goes through the real webhook.
		Expect(update(env.Client, op, func(o *pipesv1.OrganizationProvider) {
			if o.Labels == nil {
				o.Labels = map[string]string{}
			}
			o.Labels["team"] = "payments"
		})).To(Succeed())
		var got pipesv1.OrganizationProvider
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(op), &got)).To(Succeed())
		Expect(got.Labels).To(HaveKeyWithValue("team", "payments"))

		// So does disabling it.
		Expect(update(env.Client, op, func(o *pipesv1.OrganizationProvider) {
			off := false
			o.Spec.Enabled = &off
		})).To(Succeed())
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(op), &got)).To(Succeed())
		Expect(got.IsEnabled()).To(BeFalse())

		// Immutability still holds (CEL answers first in the apiserver) ...
		Expect(update(env.Client, op, func(o *pipesv1.OrganizationProvider) { o.Spec.OrganizationID = "org_10" })).
			To(rejected("spec.organizationID is immutable").matcher(ns))
		Expect(update(env.Client, op, func(o *pipesv1.OrganizationProvider) { o.Spec.ProviderRef.Name = "gitlab" })).
			To(rejected("spec.providerRef is immutable").matcher(ns))
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(op), &got)).To(Succeed())
		Expect(got.Spec.OrganizationID).To(Equal("org_9"))
		Expect(got.Spec.ProviderRef.Name).To(Equal("github"))

		// ... and in the webhook itself, which reports no missing Provider on update and,
		// with no Provider to check them against, leaves the settings alone.
		v := &webhook.OrganizationProviderValidator{Reader: env.Operator.Manager.GetClient()}
		oldOP := got.DeepCopy()
		newOP := oldOP.DeepCopy()
		newOP.Labels["tier"] = "gold"
		newOP.Spec.Scopes = []string{"gist"}
		_, err := v.ValidateUpdate(ctx, oldOP, newOP)
		Expect(err).NotTo(HaveOccurred())
		newOP.Spec.ProviderRef.Name, newOP.Spec.OrganizationID = "gitlab", "org_10"
		_, err = v.ValidateUpdate(ctx, oldOP, newOP)
		Expect(err).To(MatchError(`spec.providerRef is immutable (was "github"): create another OrganizationProvider for another provider; ` +
			`spec.organizationID is immutable (was "org_9"): create another OrganizationProvider for another organization`))
		Expect(apierrors.IsInvalid(err)).To(BeTrue())

		// Creating one for the deleted Provider is still rejected.
		Expect(env.Client.Create(ctx, orgProvider("github-org-10", "github", "org_10", func(o *pipesv1.OrganizationProvider) { o.Namespace = ns }))).
			To(rejected(deniedBy(orgWebhook), notFoundIn("github")).matcher(ns))
	})
})

// ---------------------------------------------------------------------------
// ConnectedAccount

var _ = Describe("ConnectedAccount webhook", func() {
	DescribeTable("create",
		func(providers []*pipesv1.Provider, ca *pipesv1.ConnectedAccount, want outcome) {
			ns := newNamespace(env.Client)
			for _, p := range providers {
				createAll(env.Client, ns, p)
			}
			ca.Namespace = ns
			Expect(env.Client.Create(ctx, ca)).To(want.matcher(ns))
		},
		Entry("provider missing", nil, account("acct", "openai", "user_123", ""),
			rejected(deniedBy(accountWebhook), notFoundIn("openai"))),
		Entry("apiKey.secretKeyRef on an OAuth provider", []*pipesv1.Provider{oauthProvider("github")},
			account("acct", "github", "user_123", "", withSecretKeyRef),
			rejected(deniedBy(accountWebhook), validation.AuthMethodMismatchCode, msgMismatch)),
		Entry("API key provider with apiKey.secretKeyRef", []*pipesv1.Provider{apiKeyProvider("openai")},
			account("acct", "openai", "user_123", "", withSecretKeyRef), accepted()),
		Entry("API key provider without apiKey", []*pipesv1.Provider{apiKeyProvider("openai")},
			account("acct", "openai", "user_123", "org_9"), accepted()),
		Entry("OAuth provider without apiKey", []*pipesv1.Provider{oauthProvider("github")},
			account("acct", "github", "user_123", ""), accepted()),
		Entry("apiKey without a source (CEL)", []*pipesv1.Provider{apiKeyProvider("openai")},
			account("acct", "openai", "user_123", "", func(ca *pipesv1.ConnectedAccount) { ca.Spec.APIKey = &pipesv1.APIKeySource{} }),
			rejected(msgNeedsSource)),
		Entry("userID with a trailing space", []*pipesv1.Provider{apiKeyProvider("openai")},
			account("acct", "openai", "user_123 ", ""),
			rejected(deniedBy(accountWebhook), "spec.userID has leading or trailing whitespace; remove it")),
		Entry("userID and organizationID of 200 é (400 bytes each)", []*pipesv1.Provider{apiKeyProvider("openai")},
			account("acct", "openai", strings.Repeat("é", 200), strings.Repeat("é", 200)), accepted()),
		Entry("userID with a line separator (webhook only)", []*pipesv1.Provider{apiKeyProvider("openai")},
			account("acct", "openai", "user\u2028123", ""),
			rejected(deniedBy(accountWebhook), "spec.userID contains control characters; use printable characters only")),
	)

	DescribeTable("duplicates",
		func(first, second *pipesv1.ConnectedAccount, want outcome) {
			ns := newNamespace(env.Client)
			createAll(env.Client, ns, apiKeyProvider("openai"), oauthProvider("github"), first)
			second.Namespace = ns
			if want.substrs == nil {
				Expect(env.Client.Create(ctx, second)).To(Succeed())
				return
			}
			Eventually(func() error { return env.Client.Create(ctx, second.DeepCopy()) }).Should(want.matcher(ns))
			Expect(apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(second), &pipesv1.ConnectedAccount{}))).To(BeTrue())
		},
		Entry("same provider and user",
			account("first", "openai", "user_123", ""), account("second", "openai", "user_123", "", withSecretKeyRef),
			rejected(deniedBy(accountWebhook), `spec.userID: ConnectedAccount "first" already connects user "user_123" to Provider "openai"; update that one instead (one account per provider, user and organization)`)),
		Entry("same provider, user and organization",
			account("first", "openai", "user_123", "org_9"), account("second", "openai", "user_123", "org_9"),
			rejected(deniedBy(accountWebhook), `spec.userID: ConnectedAccount "first" already connects user "user_123" in organization "org_9" to Provider "openai"; update that one instead (one account per provider, user and organization)`)),
		Entry("same user, another organization",
			account("first", "openai", "user_123", "org_9"), account("second", "openai", "user_123", "org_10"), accepted()),
		Entry("same user, with and without organization",
			account("first", "openai", "user_123", ""), account("second", "openai", "user_123", "org_9"), accepted()),
		Entry("same user, another provider",
			account("first", "openai", "user_123", ""), account("second", "github", "user_123", ""), accepted()),
	)

	DescribeTable("update",
		func(initial *pipesv1.ConnectedAccount, mutate func(*pipesv1.ConnectedAccount), want outcome) {
			ns := newNamespace(env.Client)
			createAll(env.Client, ns, apiKeyProvider("openai"), oauthProvider("github"), initial)
			Expect(update(env.Client, initial, mutate)).To(want.matcher(ns))
		},
		Entry("providerRef", account("acct", "openai", "user_123", ""),
			func(ca *pipesv1.ConnectedAccount) { ca.Spec.ProviderRef.Name = "github" },
			rejected("spec.providerRef is immutable", "create another ConnectedAccount for another provider")),
		Entry("userID", account("acct", "openai", "user_123", ""),
			func(ca *pipesv1.ConnectedAccount) { ca.Spec.UserID = "user_456" },
			rejected("spec.userID is immutable", "create another ConnectedAccount for another user")),
		Entry("organizationID changed", account("acct", "openai", "user_123", "org_9"),
			func(ca *pipesv1.ConnectedAccount) { ca.Spec.OrganizationID = "org_10" },
			rejected("spec.organizationID is immutable", "create another ConnectedAccount for another organization")),
		Entry("organizationID added", account("acct", "openai", "user_123", ""),
			func(ca *pipesv1.ConnectedAccount) { ca.Spec.OrganizationID = "org_9" },
			rejected("spec.organizationID is immutable", "create another ConnectedAccount for another organization")),
		Entry("organizationID removed", account("acct", "openai", "user_123", "org_9"),
			func(ca *pipesv1.ConnectedAccount) { ca.Spec.OrganizationID = "" },
			rejected("spec.organizationID is immutable", "create another ConnectedAccount for another organization")),
		Entry("apiKey added on an API key provider", account("acct", "openai", "user_123", ""),
			withSecretKeyRef, accepted()),
		Entry("apiKey added on an OAuth provider", account("acct", "github", "user_123", ""),
			withSecretKeyRef, rejected(deniedBy(accountWebhook), msgMismatch)),
	)

	It("gives the webhook's own immutability sentences (CEL answers first in the apiserver)", func() {
		v := &webhook.ConnectedAccountValidator{Reader: env.Operator.Manager.GetClient()}
		oldCA := account("acct", "openai", "user_123", "")
		oldCA.Namespace = "nowhere" // the Provider need not exist on update
		newCA := oldCA.DeepCopy()
		newCA.Spec.ProviderRef.Name, newCA.Spec.UserID, newCA.Spec.OrganizationID = "github", "user_456", "org_9"
		_, err := v.ValidateUpdate(ctx, oldCA, newCA)
		Expect(err).To(MatchError(`spec.providerRef is immutable (was "openai"): create another ConnectedAccount for another provider; ` +
			`spec.userID is immutable (was "user_123"): create another ConnectedAccount for another user; ` +
			`spec.organizationID is immutable (was ""): create another ConnectedAccount for another organization`))
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
	})
})

// ---------------------------------------------------------------------------
// CEL only: a second control plane with the CRDs but no webhooks and no manager.

var _ = Describe("CRD validation rules without webhooks", Ordered, func() {
	var cel *testenv.Env

	BeforeAll(func() {
		var err error
		cel, err = testenv.Start(testenv.Options{NoManager: true})
		Expect(err).NotTo(HaveOccurred())
	})

	AfterAll(func() {
		if cel != nil {
			Expect(cel.Stop()).To(Succeed())
		}
	})

	It("has no webhooks: what only the webhooks check is accepted", func() {
		ns := newNamespace(cel.Client)
		createAll(cel.Client, ns,
			oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.AuthorizationParams = map[string]string{"state": "x"} }),
			orgProvider("ghost", "no-such-provider", "org_9"),
			account("ghost", "no-such-provider", "user_123", ""),
		)
	})

	DescribeTable("create",
		func(obj client.Object, want outcome) {
			ns := newNamespace(cel.Client)
			obj.SetNamespace(ns)
			err := cel.Client.Create(ctx, obj)
			Expect(err).To(want.matcher(ns))
			if err != nil {
				Expect(err.Error()).NotTo(ContainSubstring("admission webhook"))
			}
		},
		Entry("APIKey with oauth", func() *pipesv1.Provider {
			p := apiKeyProvider("openai")
			p.Spec.OAuth = oauthProvider("x").Spec.OAuth
			return p
		}(), rejected(msgOAuthForbidden)),
		Entry("OAuth without oauth", &pipesv1.Provider{
			ObjectMeta: metav1.ObjectMeta{Name: "github"},
			Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth},
		}, rejected(msgOAuthRequired)),
		Entry("OAuth tokenURL http://example.com", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.TokenURL = "http://example.com/token"
		}), rejected("spec.oauth.tokenURL", msgCELURL)),
		Entry("OAuth authorizationURL relative", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.AuthorizationURL = "/authorize"
		}), rejected("spec.oauth.authorizationURL", msgCELURL)),
		Entry("OAuth tokenURL http://[::1]", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.TokenURL = "http://[::1]:8080/token"
		}), accepted()),
		Entry("OAuth Application mode without clientSecretRef", oauthProvider("github", func(o *pipesv1.OAuthSpec) {
			o.ClientSecretRef = nil
		}), rejected("spec.oauth.clientID and spec.oauth.clientSecretRef are required when credentialsMode is Application")),
		Entry("OAuth Organization mode without a client", oauthProvider("github", organizationMode), accepted()),
		Entry("ConnectedAccount apiKey without a source", account("acct", "openai", "user_123", "",
			func(ca *pipesv1.ConnectedAccount) { ca.Spec.APIKey = &pipesv1.APIKeySource{} }), rejected(msgNeedsSource)),
	)

	DescribeTable("update",
		func(initial client.Object, mutate func(client.Object), want outcome) {
			ns := newNamespace(cel.Client)
			createAll(cel.Client, ns, initial)
			err := update(cel.Client, initial, mutate)
			Expect(err).To(want.matcher(ns))
			if err != nil {
				Expect(err.Error()).NotTo(ContainSubstring("admission webhook"))
			}
		},
		Entry("Provider method APIKey to OAuth", client.Object(apiKeyProvider("openai")), func(o client.Object) {
			p := o.(*pipesv1.Provider)
			p.Spec.Method, p.Spec.OAuth = pipesv1.AuthMethodOAuth, oauthProvider("x").Spec.OAuth
		}, rejected(msgMethodAPIKeyToOAuth)),
		Entry("Provider method OAuth to APIKey", client.Object(oauthProvider("github")), func(o client.Object) {
			p := o.(*pipesv1.Provider)
			p.Spec.Method, p.Spec.OAuth = pipesv1.AuthMethodAPIKey, nil
		}, rejected(msgMethodOAuthToAPIKey)),
		Entry("Provider description and displayName", client.Object(apiKeyProvider("openai")), func(o client.Object) {
			p := o.(*pipesv1.Provider)
			p.Spec.Description, p.Spec.DisplayName = "Changed.", "Changed"
		}, accepted()),
		Entry("OrganizationProvider providerRef", client.Object(orgProvider("op", "openai", "org_9")), func(o client.Object) {
			o.(*pipesv1.OrganizationProvider).Spec.ProviderRef.Name = "github"
		}, rejected("spec.providerRef is immutable: create another OrganizationProvider for another provider")),
		Entry("OrganizationProvider organizationID", client.Object(orgProvider("op", "openai", "org_9")), func(o client.Object) {
			o.(*pipesv1.OrganizationProvider).Spec.OrganizationID = "org_10"
		}, rejected("spec.organizationID is immutable: create another OrganizationProvider for another organization")),
		Entry("OrganizationProvider enabled", client.Object(orgProvider("op", "openai", "org_9")), func(o client.Object) {
			off := false
			o.(*pipesv1.OrganizationProvider).Spec.Enabled = &off
		}, accepted()),
		Entry("ConnectedAccount providerRef", client.Object(account("acct", "openai", "user_123", "")), func(o client.Object) {
			o.(*pipesv1.ConnectedAccount).Spec.ProviderRef.Name = "github"
		}, rejected("spec.providerRef is immutable: create another ConnectedAccount for another provider")),
		Entry("ConnectedAccount userID", client.Object(account("acct", "openai", "user_123", "")), func(o client.Object) {
			o.(*pipesv1.ConnectedAccount).Spec.UserID = "user_456"
		}, rejected("spec.userID is immutable: create another ConnectedAccount for another user")),
		Entry("ConnectedAccount organizationID changed", client.Object(account("acct", "openai", "user_123", "org_9")), func(o client.Object) {
			o.(*pipesv1.ConnectedAccount).Spec.OrganizationID = "org_10"
		}, rejected("spec.organizationID is immutable: create another ConnectedAccount for another organization")),
		Entry("ConnectedAccount organizationID added", client.Object(account("acct", "openai", "user_123", "")), func(o client.Object) {
			o.(*pipesv1.ConnectedAccount).Spec.OrganizationID = "org_9"
		}, rejected("spec.organizationID is immutable: create another ConnectedAccount for another organization")),
		Entry("ConnectedAccount organizationID removed", client.Object(account("acct", "openai", "user_123", "org_9")), func(o client.Object) {
			o.(*pipesv1.ConnectedAccount).Spec.OrganizationID = ""
		}, rejected("spec.organizationID is immutable: create another ConnectedAccount for another organization")),
		Entry("ConnectedAccount apiKey added", client.Object(account("acct", "openai", "user_123", "")), func(o client.Object) {
			withSecretKeyRef(o.(*pipesv1.ConnectedAccount))
		}, accepted()),
	)
})

// ---------------------------------------------------------------------------
// Samples and documentation

var _ = Describe("config/samples", func() {
	It("decode and apply cleanly, in file-name order, into a fresh namespace", func() {
		root, err := devenv.Root()
		Expect(err).NotTo(HaveOccurred())
		dir := filepath.Join(root, "config", "samples")
		entries, err := os.ReadDir(dir) // sorted by file name
		Expect(err).NotTo(HaveOccurred())

		ns := newNamespace(env.Client)
		var applied []string
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") && !strings.HasSuffix(e.Name(), ".yml") || e.Name() == "kustomization.yaml" {
				continue
			}
			f, err := os.Open(filepath.Join(dir, e.Name()))
			Expect(err).NotTo(HaveOccurred())
			dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
			for {
				var u unstructured.Unstructured
				err := dec.Decode(&u.Object)
				if errors.Is(err, io.EOF) {
					break
				}
				Expect(err).NotTo(HaveOccurred(), "decoding %s", e.Name())
				if len(u.Object) == 0 {
					continue
				}
				Expect(u.GetNamespace()).To(BeEmpty(), "%s: samples must not pin a namespace", e.Name())
				u.SetNamespace(ns)
				Expect(env.Client.Create(ctx, &u)).To(Succeed(), "applying %s (%s %s)", e.Name(), u.GetKind(), u.GetName())
				applied = append(applied, u.GetKind()+"/"+u.GetName())
				if u.GroupVersionKind().Group == pipesv1.GroupVersion.Group {
					typed, err := env.Client.Scheme().New(u.GroupVersionKind())
					Expect(err).NotTo(HaveOccurred())
					Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, typed)).To(Succeed(), "converting %s", e.Name())
					obj := typed.(client.Object)
					obj.SetNamespace(ns)
					waitCached(obj) // later samples refer to it through the webhooks' cache
				}
			}
			Expect(f.Close()).To(Succeed())
		}
		Expect(applied).To(ContainElements(
			"Provider/openai", "Provider/github", "OrganizationProvider/openai-org-9",
			"Secret/user-123-openai", "ConnectedAccount/openai-user-123",
		))
	})
})

var _ = Describe("CRD documentation (kubectl explain)", func() {
	It("describes every property under spec of each CRD", func() {
		s := runtime.NewScheme()
		Expect(apiextensionsv1.AddToScheme(s)).To(Succeed())
		c, err := client.New(env.Config, client.Options{Scheme: s})
		Expect(err).NotTo(HaveOccurred())

		for _, name := range []string{"providers.pipes.dev", "organizationproviders.pipes.dev", "connectedaccounts.pipes.dev"} {
			var crd apiextensionsv1.CustomResourceDefinition
			Expect(c.Get(ctx, client.ObjectKey{Name: name}, &crd)).To(Succeed())
			Expect(crd.Spec.Versions).NotTo(BeEmpty())
			for _, v := range crd.Spec.Versions {
				Expect(v.Schema).NotTo(BeNil())
				spec, ok := v.Schema.OpenAPIV3Schema.Properties["spec"]
				Expect(ok).To(BeTrue(), "%s %s has no spec", name, v.Name)
				var undocumented []string
				count := describedProperties("spec", spec, &undocumented)
				Expect(undocumented).To(BeEmpty(), "%s %s: properties without a description", name, v.Name)
				Expect(count).To(BeNumerically(">=", 4), "%s %s: too few properties found; is the walk broken?", name, v.Name)
			}
		}
	})
})

// describedProperties walks s (at path) and its nested properties, recording those
// without a description in undocumented; it returns how many properties it visited.
func describedProperties(path string, s apiextensionsv1.JSONSchemaProps, undocumented *[]string) int {
	n := 1
	if strings.TrimSpace(s.Description) == "" {
		*undocumented = append(*undocumented, path)
	}
	for name, p := range s.Properties {
		n += describedProperties(path+"."+name, p, undocumented)
	}
	if s.Items != nil && s.Items.Schema != nil {
		for name, p := range s.Items.Schema.Properties {
			n += describedProperties(path+"[]."+name, p, undocumented)
		}
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		for name, p := range s.AdditionalProperties.Schema.Properties {
			n += describedProperties(path+"{}."+name, p, undocumented)
		}
	}
	return n
}
