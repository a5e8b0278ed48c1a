package backendapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gstruct"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const allowedOrigin = "https://app.example.com"

// widgetCall sends a request to the public listener's widget API with a widget token and
// an Origin header ("" for none); it returns the status, the headers and the body.
func widgetCall(method, path, tok, origin, body string) (int, http.Header, string) {
	req, err := http.NewRequest(method, env.PublicURL()+"/widget/api/v1"+path, strings.NewReader(body))
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func widgetProviders(tok string) []wire.WidgetProvider {
	status, _, body := widgetCall(http.MethodGet, "/providers", tok, allowedOrigin, "")
	ExpectWithOffset(1, status).To(Equal(http.StatusOK), body)
	var list wire.WidgetProviderList
	ExpectWithOffset(1, json.Unmarshal([]byte(body), &list)).To(Succeed())
	return list.Data
}

func widgetProvider(tok, slug string) wire.WidgetProvider {
	for _, p := range widgetProviders(tok) {
		if p.Slug == slug {
			return p
		}
	}
	Fail("no provider " + slug + " in the widget's list")
	return wire.WidgetProvider{}
}

var _ = Describe("Widget sessions", func() {
	var ns, backendTok string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		Expect(env.Client.Create(ctx, oauthProvider(ns, "github"))).To(Succeed())
		backendTok = serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns)
	})

	issue := func(ctx SpecContext, user, org string, scopes ...string) string {
		tok, err := api(backendTok, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: user, OrganizationID: org, Scopes: scopes})
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		return tok
	}

	It("issues tokens to callers allowed to create widgettokens, with the admin scope only for those who may update organizationproviders", func(ctx SpecContext) {
		tok := issue(ctx, "user_a", "org_1")
		claims, err := env.Operator.Widgets.Verify(ctx, tok)
		Expect(err).NotTo(HaveOccurred())
		Expect(claims.Namespace).To(Equal(ns))
		Expect(claims.UserID).To(Equal("user_a"))
		Expect(claims.ExpiresAt).To(BeTemporally("~", time.Now().Add(widgettoken.DefaultTTL), 5*time.Second))

		vendorTok := serviceAccountToken(ctx, ns, "vendor", "pipes-vendor", ns)
		_, err = api(vendorTok, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: "user_a"})
		e := expectAPIError(err, http.StatusForbidden, wire.CodeForbidden)
		Expect(e.Message).To(ContainSubstring("widgettokens.pipes.dev"))

		// Allowed to issue, but not to manage organizations: no admin token.
		Expect(env.Client.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "issuer"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"pipes.dev"}, Resources: []string{"widgettokens"}, Verbs: []string{"create"}}},
		})).To(Succeed())
		issuerTok := serviceAccountToken(ctx, ns, "issuer", "", "")
		bind(ctx, ns, "issuer", rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "issuer"}, ns, "issuer")
		Eventually(func() error {
			_, err := api(issuerTok, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: "user_a", OrganizationID: "org_1"})
			return err
		}).Should(Succeed())
		_, err = api(issuerTok, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: "user_a", OrganizationID: "org_1", Scopes: []string{widgettoken.ScopeManage}})
		e = expectAPIError(err, http.StatusForbidden, wire.CodeForbidden)
		Expect(e.Message).To(ContainSubstring("organizationproviders"))

		_, err = api(backendTok, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: "user_a", Scopes: []string{widgettoken.ScopeManage}})
		e = expectAPIError(err, http.StatusBadRequest, wire.CodeInvalidRequest)
		Expect(e.Message).To(ContainSubstring("organization_id"))
		_, err = api(backendTok, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: "user_a", Scopes: []string{"widgets:users-table:manage"}})
		e = expectAPIError(err, http.StatusBadRequest, wire.CodeInvalidRequest)
		Expect(e.Message).To(ContainSubstring(widgettoken.ScopeManage))
		_, err = api(backendTok, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: ""})
		Expect(expectAPIError(err, http.StatusBadRequest, wire.CodeInvalidRequest).Message).To(ContainSubstring("user_id"))
	})

	It("lets a user connect, replace and disconnect their own key, showing only its last four, and vends what they set", func(ctx SpecContext) {
		tok := issue(ctx, "user_a", "org_1")
		status, _, body := widgetCall(http.MethodGet, "/session", tok, allowedOrigin, "")
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(body).To(ContainSubstring(`"user_id":"user_a"`))

		list := widgetProviders(tok)
		Expect(list).To(HaveLen(2))
		Expect(list[0].Slug).To(Equal("github")) // sorted by display name: GitHub's is the slug
		Expect(list[1]).To(gstruct.MatchFields(gstruct.IgnoreExtras, gstruct.Fields{"Slug": Equal("openai"), "Name": Equal("OpenAI"), "Description": Equal("completions on your behalf"),
			"Method": Equal(wire.AuthMethodAPIKey), "Enabled": BeTrue(), "State": Equal(wire.StateDisconnected)}))

		const key = "sk-widget-first-key-0001"
		status, _, body = widgetCall(http.MethodPut, "/providers/openai/api-key", tok, allowedOrigin, `{"secret":"`+key+`"}`)
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(body).NotTo(ContainSubstring("sk-widget"))
		var p wire.WidgetProvider
		Expect(json.Unmarshal([]byte(body), &p)).To(Succeed())
		Expect(p.State).To(Equal(wire.StateConnected))
		Expect(p.APIKeyLast4).To(Equal("0001"))
		Expect(p.UpdatedAt).NotTo(BeNil())

		vended, err := api(backendTok, "").Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_a", OrganizationID: "org_1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(vended.Credential.GetValue()).To(Equal(key))

		const rotated = "sk-widget-second-key-0002"
		status, _, body = widgetCall(http.MethodPut, "/providers/openai/api-key", tok, allowedOrigin, `{"secret":"`+rotated+`"}`)
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(widgetProvider(tok, "openai").APIKeyLast4).To(Equal("0002"))
		vended, err = api(backendTok, "").Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_a", OrganizationID: "org_1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(vended.Credential.GetValue()).To(Equal(rotated))

		// The same validation as the backend API, in the same words.
		status, _, body = widgetCall(http.MethodPut, "/providers/openai/api-key", tok, allowedOrigin, `{"secret":"sk-pasted-with-a-newline-7777\n"}`)
		Expect(status).To(Equal(http.StatusBadRequest), body)
		Expect(body).To(ContainSubstring("secret has leading or trailing whitespace"))
		Expect(body).NotTo(ContainSubstring("sk-pasted"))
		Expect(widgetProvider(tok, "openai").APIKeyLast4).To(Equal("0002")) // nothing lost
		status, _, body = widgetCall(http.MethodPut, "/providers/github/api-key", tok, allowedOrigin, `{"secret":"`+key+`"}`)
		Expect(status).To(Equal(http.StatusUnprocessableEntity), body)
		Expect(body).To(ContainSubstring(wire.CodeAuthMethodMismatch))

		status, _, body = widgetCall(http.MethodDelete, "/providers/openai/connection", tok, allowedOrigin, "")
		Expect(status).To(Equal(http.StatusNoContent), body)
		Eventually(func() string {
			vended, err := api(backendTok, "").Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_a", OrganizationID: "org_1"})
			Expect(err).NotTo(HaveOccurred())
			return vended.Error
		}).Should(Equal(wire.ErrorNotInstalled))
		Expect(widgetProvider(tok, "openai").State).To(Equal(wire.StateDisconnected))
	})

	It("confines a token to its own user, organization and namespace", func(ctx SpecContext) {
		_, err := api(backendTok, "").UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_b", OrganizationID: "org_1", Secret: "sk-belongs-to-user-b-9999"})
		Expect(err).NotTo(HaveOccurred())
		_, err = api(backendTok, "").UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", OrganizationID: "org_2", Secret: "sk-user-a-other-org-8888"})
		Expect(err).NotTo(HaveOccurred())

		tokA := issue(ctx, "user_a", "org_1")
		Expect(widgetProvider(tokA, "openai").State).To(Equal(wire.StateDisconnected)) // neither B's nor A's other organization's
		status, _, _ := widgetCall(http.MethodDelete, "/providers/openai/connection", tokA, allowedOrigin, "")
		Expect(status).To(Equal(http.StatusNotFound))
		vended, err := api(backendTok, "").Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_b", OrganizationID: "org_1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(vended.Credential.GetValue()).To(Equal("sk-belongs-to-user-b-9999"))

		// Nothing in the request chooses the user: unknown fields are refused, not obeyed.
		status, _, body := widgetCall(http.MethodPut, "/providers/openai/api-key", tokA, allowedOrigin, `{"secret":"sk-attempt-for-user-b-0000","user_id":"user_b"}`)
		Expect(status).To(Equal(http.StatusBadRequest), body)
		Expect(body).To(ContainSubstring("user_id"))

		// A token of another namespace sees that namespace only.
		other := newNamespace(ctx)
		otherBackend := serviceAccountToken(ctx, other, "backend", "pipes-backend", other)
		otherTok, err := api(otherBackend, "").WidgetToken(ctx, wire.WidgetTokenRequest{UserID: "user_b", OrganizationID: "org_1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(widgetProviders(otherTok)).To(BeEmpty())
	})

	It("answers an expired, tampered or missing token with a 401 that says what to do", func(ctx SpecContext) {
		past := widgettoken.New(env.Operator.Widgets.Keyset(), time.Minute)
		past.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
		expired, _, err := past.Issue(widgettoken.Claims{Namespace: ns, UserID: "user_a"})
		Expect(err).NotTo(HaveOccurred())
		status, _, body := widgetCall(http.MethodGet, "/providers", expired, allowedOrigin, "")
		Expect(status).To(Equal(http.StatusUnauthorized))
		Expect(body).To(ContainSubstring(wire.CodeSessionExpired))
		Expect(body).To(ContainSubstring("/widgets/token"))

		tok := issue(ctx, "user_a", "")
		parts := strings.Split(tok, ".")
		other := issue(ctx, "user_b", "")
		tampered := parts[0] + "." + strings.Split(other, ".")[1] + "." + parts[2]
		for _, bad := range []string{tampered, backendTok, "x"} {
			status, _, body = widgetCall(http.MethodGet, "/providers", bad, allowedOrigin, "")
			Expect(status).To(Equal(http.StatusUnauthorized), body)
			Expect(body).To(ContainSubstring(wire.CodeUnauthorized))
			Expect(body).NotTo(ContainSubstring(bad))
		}
		status, _, body = widgetCall(http.MethodGet, "/providers", "", allowedOrigin, "")
		Expect(status).To(Equal(http.StatusUnauthorized))
		Expect(body).To(ContainSubstring("Authorization"))
	})

	It("lets an admin token enable and disable a provider for its organization, and only that", func(ctx SpecContext) {
		admin := issue(ctx, "admin_1", "org_1", widgettoken.ScopeManage)
		user := issue(ctx, "user_a", "org_1")
		otherOrg := issue(ctx, "user_a", "org_2")

		status, _, body := widgetCall(http.MethodPut, "/providers/openai/organization", user, allowedOrigin, `{"enabled":false}`)
		Expect(status).To(Equal(http.StatusForbidden), body)
		Expect(body).To(ContainSubstring(widgettoken.ScopeManage))

		status, _, body = widgetCall(http.MethodPut, "/providers/openai/organization", admin, allowedOrigin, `{"enabled":false}`)
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(body).To(ContainSubstring(`"enabled":false`))
		Eventually(func() bool { return widgetProvider(user, "openai").Enabled }).Should(BeFalse())
		Expect(widgetProvider(otherOrg, "openai").Enabled).To(BeTrue())

		status, _, body = widgetCall(http.MethodPut, "/providers/openai/api-key", user, allowedOrigin, `{"secret":"sk-while-disabled-00001"}`)
		Expect(status).To(Equal(http.StatusConflict), body)
		Expect(body).To(ContainSubstring(wire.CodeProviderDisabled))

		status, _, body = widgetCall(http.MethodPut, "/providers/openai/organization", admin, allowedOrigin, `{}`)
		Expect(status).To(Equal(http.StatusBadRequest), body)
		status, _, body = widgetCall(http.MethodPut, "/providers/openai/organization", admin, allowedOrigin, `{"enabled":true}`)
		Expect(status).To(Equal(http.StatusOK), body)
		Eventually(func() bool { return widgetProvider(user, "openai").Enabled }).Should(BeTrue())
	})

	It("answers pages of allowed origins only, and keeps its routes and the backend API's apart", func(ctx SpecContext) {
		tok := issue(ctx, "user_a", "")
		req, _ := http.NewRequest(http.MethodOptions, env.PublicURL()+"/widget/api/v1/providers/openai/api-key", nil)
		req.Header.Set("Origin", allowedOrigin)
		req.Header.Set("Access-Control-Request-Method", "PUT")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusNoContent))
		Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal(allowedOrigin))
		Expect(resp.Header.Get("Access-Control-Allow-Methods")).To(ContainSubstring("PUT"))
		Expect(resp.Header.Get("Access-Control-Allow-Headers")).To(ContainSubstring("Authorization"))
		Expect(resp.Header.Get("Access-Control-Allow-Credentials")).To(BeEmpty())

		req.Header.Set("Origin", "https://evil.example.com")
		resp, err = http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusForbidden))
		Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(BeEmpty())

		// Not even a write whose answer the page could not read.
		status, _, body := widgetCall(http.MethodPut, "/providers/openai/api-key", tok, "https://evil.example.com", `{"secret":"sk-from-another-site-0000"}`)
		Expect(status).To(Equal(http.StatusForbidden))
		Expect(body).To(ContainSubstring("--widget-allowed-origins"))
		Expect(widgetProvider(tok, "openai").State).To(Equal(wire.StateDisconnected))

		status, header, _ := widgetCall(http.MethodGet, "/providers", tok, allowedOrigin, "")
		Expect(status).To(Equal(http.StatusOK))
		Expect(header.Get("Access-Control-Allow-Origin")).To(Equal(allowedOrigin))
		Expect(header.Get("Cache-Control")).To(Equal("no-store"))
		Expect(header.Get("X-Content-Type-Options")).To(Equal("nosniff"))

		// The public listener serves none of the backend API, and the backend API none of the widget's.
		resp, err = http.Post(env.PublicURL()+"/data-integrations/openai/credentials", "application/json", strings.NewReader(`{"user_id":"user_a"}`))
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusNotFound))
		status, _ = raw(http.MethodGet, "/widget/api/v1/providers", tok, "")
		Expect(status).To(Equal(http.StatusNotFound))
		status, _ = rawAt(env.APIURL(), http.MethodGet, "/widget/pipes-widget.js", "", "")
		Expect(status).To(Equal(http.StatusNotFound))
	})

	It("serves the widget script compressed, from a versioned URL cached for a year", func() {
		path := env.Operator.Public.Assets.ScriptPath()
		req, _ := http.NewRequest(http.MethodGet, env.PublicURL()+path, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultTransport.RoundTrip(req) // no transparent decompression
		Expect(err).NotTo(HaveOccurred())
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(resp.Header.Get("Content-Encoding")).To(Equal("gzip"))
		Expect(resp.Header.Get("Content-Type")).To(HavePrefix("text/javascript"))
		Expect(resp.Header.Get("Cache-Control")).To(ContainSubstring("immutable"))
		Expect(resp.Header.Get("X-Content-Type-Options")).To(Equal("nosniff"))
		Expect(b).To(HaveLen(env.Operator.Public.Assets.GzipSize()))
		Expect(len(b)).To(BeNumerically("<", 20<<10), "the user widget's gzipped size target")
		GinkgoWriter.Printf("widget script: %d bytes gzipped\n", len(b))

		resp, err = http.Get(env.PublicURL() + "/widget/v/000000000000/pipes-widget.js")
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.Request.URL.Path).To(Equal(path)) // an old version redirects to the current one
	})
})
