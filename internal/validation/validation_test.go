package validation_test

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/validation"
)

// want is one expected field.Error: its type, path and exact Detail.
type want struct {
	Type   field.ErrorType
	Field  string
	Detail string
}

// expectErrors fails unless errs are exactly wants, in order.
func expectErrors(t *testing.T, errs field.ErrorList, wants ...want) {
	t.Helper()
	got := make([]want, len(errs))
	for i, e := range errs {
		got[i] = want{e.Type, e.Field, e.Detail}
	}
	if len(got) != len(wants) {
		t.Fatalf("got %d errors, want %d:\n got:  %s\n want: %s", len(got), len(wants), fmtWants(got), fmtWants(wants))
	}
	for i := range wants {
		if got[i] != wants[i] {
			t.Errorf("error %d:\n got:  %s\n want: %s", i, fmtWant(got[i]), fmtWant(wants[i]))
		}
	}
	for _, e := range errs {
		if !detailStartsWithPath(e) {
			t.Errorf("Detail %q does not start with its Field %q", e.Detail, e.Field)
		}
	}
}

// detailStartsWithPath reports whether e.Detail starts with e.Field itself, as the
// package documents ("a whole sentence that starts with that path"), followed by the
// end of the sentence, a space or a colon (not a longer path such as spec.apiKey.secretKeyRef
// for Field spec.apiKey).
func detailStartsWithPath(e *field.Error) bool {
	if e.Field == "" || e.Detail == "" || !strings.HasPrefix(e.Detail, e.Field) {
		return false
	}
	rest := e.Detail[len(e.Field):]
	return rest == "" || rest[0] == ' ' || rest[0] == ':'
}

func fmtWant(w want) string { return fmt.Sprintf("{%s %s %q}", w.Type, w.Field, w.Detail) }

func fmtWants(ws []want) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = fmtWant(w)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// ---------------------------------------------------------------------------
// Builders

const ns = "team-a"

func apiKeyProvider(name string) *pipesv1.Provider {
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: pipesv1.ProviderSpec{
			Method:      pipesv1.AuthMethodAPIKey,
			DisplayName: "OpenAI",
			Description: "Your OpenAI API key runs completions on your behalf.",
		},
	}
}

func oauthSpec() *pipesv1.OAuthSpec {
	return &pipesv1.OAuthSpec{
		AuthorizationURL: "https://github.com/login/oauth/authorize",
		TokenURL:         "https://github.com/login/oauth/access_token",
		ClientID:         "Iv1.0123456789abcdef",
		ClientSecretRef:  &pipesv1.SecretKeyReference{Name: "github-oauth-client", Key: "client-secret"},
		Scopes:           []string{"repo", "read:user"},
		CredentialsMode:  pipesv1.OAuthCredentialsApplication,
	}
}

func oauthProvider(name string, mutate ...func(*pipesv1.OAuthSpec)) *pipesv1.Provider {
	o := oauthSpec()
	for _, m := range mutate {
		m(o)
	}
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, DisplayName: "GitHub", OAuth: o},
	}
}

func withOAuth(mutate func(*pipesv1.OAuthSpec)) func(*pipesv1.OAuthSpec) { return mutate }

func orgProvider(provider, org string) *pipesv1.OrganizationProvider {
	return &pipesv1.OrganizationProvider{
		ObjectMeta: metav1.ObjectMeta{Name: provider + "-" + org, Namespace: ns},
		Spec: pipesv1.OrganizationProviderSpec{
			ProviderRef:    pipesv1.LocalObjectReference{Name: provider},
			OrganizationID: org,
		},
	}
}

func orgCredentials() *pipesv1.OrganizationOAuthCredentials {
	return &pipesv1.OrganizationOAuthCredentials{
		ClientID:        "org-client",
		ClientSecretRef: pipesv1.SecretKeyReference{Name: "org-oauth", Key: "secret"},
	}
}

func account(provider, user, org string) *pipesv1.ConnectedAccount {
	return &pipesv1.ConnectedAccount{
		ObjectMeta: metav1.ObjectMeta{Name: provider + "-" + user, Namespace: ns},
		Spec: pipesv1.ConnectedAccountSpec{
			ProviderRef:    pipesv1.LocalObjectReference{Name: provider},
			UserID:         user,
			OrganizationID: org,
		},
	}
}

func withSecretKeyRef(ca *pipesv1.ConnectedAccount) *pipesv1.ConnectedAccount {
	ca.Spec.APIKey = &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: "user-123-openai", Key: "api-key"}}
	return ca
}

// ---------------------------------------------------------------------------
// Messages

const (
	msgOAuthForbidden = "spec.oauth is forbidden when spec.method is APIKey: API key providers take only description, displayName and enabled; each user supplies their own key when they connect"
	msgOAuthRequired  = "spec.oauth is required when spec.method is OAuth: set its authorizationURL, tokenURL and client"
	msgClientID       = "spec.oauth.clientID is required when credentialsMode is Application; with credentialsMode Organization each organization supplies its own client"
	msgClientSecret   = "spec.oauth.clientSecretRef is required when credentialsMode is Application: name the Secret key holding the client secret"
	msgMethodChange   = "spec.method is immutable (was APIKey, requested OAuth): a provider is either OAuth or API key, fixed when it is created; delete this Provider and create it again with the method you want"
	msgAPIKeyOverride = "API key providers have no credentials or scopes to override: the key is supplied per user when they connect; only spec.enabled can be set"
	msgNeedsSource    = "spec.apiKey needs exactly one source: set either spec.apiKey.secretKeyRef or spec.apiKey.sealed (made with kubectl pipes seal), not both; or remove spec.apiKey to set the key through the backend API"
)

func httpsOnly(path string) string {
	return path + " must use https (plain http is accepted only for localhost, 127.0.0.1 and ::1)"
}

func absoluteURL(path string) string {
	return path + " must be an absolute URL such as https://provider.example/oauth/token"
}

func notFound(provider string) want {
	return want{field.ErrorTypeNotFound, "spec.providerRef.name",
		fmt.Sprintf("spec.providerRef.name: Provider %q not found in namespace %q; create the Provider first (kubectl get providers -n %s lists them)", provider, ns, ns)}
}

// ---------------------------------------------------------------------------
// Provider

func TestProvider(t *testing.T) {
	tokenURL := "spec.oauth.tokenURL"
	authURL := "spec.oauth.authorizationURL"
	tests := []struct {
		name     string
		provider *pipesv1.Provider
		want     []want
	}{
		{name: "APIKey with displayName and description", provider: apiKeyProvider("openai")},
		{name: "APIKey minimal", provider: &pipesv1.Provider{Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}},
		{
			name: "APIKey with oauth",
			provider: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.OAuth = oauthSpec()
				return p
			}(),
			want: []want{{field.ErrorTypeForbidden, "spec.oauth", msgOAuthForbidden}},
		},
		{
			name: "APIKey with an empty oauth",
			provider: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.OAuth = &pipesv1.OAuthSpec{}
				return p
			}(),
			want: []want{{field.ErrorTypeForbidden, "spec.oauth", msgOAuthForbidden}},
		},
		{
			name:     "OAuth without oauth",
			provider: &pipesv1.Provider{Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth}},
			want:     []want{{field.ErrorTypeRequired, "spec.oauth", msgOAuthRequired}},
		},
		{
			name:     "unsupported method",
			provider: &pipesv1.Provider{Spec: pipesv1.ProviderSpec{Method: "Basic"}},
			want:     []want{{field.ErrorTypeNotSupported, "spec.method", `spec.method must be OAuth or APIKey, not "Basic"`}},
		},
		{
			name:     "empty method",
			provider: &pipesv1.Provider{Spec: pipesv1.ProviderSpec{}},
			want:     []want{{field.ErrorTypeNotSupported, "spec.method", `spec.method must be OAuth or APIKey, not ""`}},
		},
		{
			name:     "method is case-sensitive",
			provider: &pipesv1.Provider{Spec: pipesv1.ProviderSpec{Method: "apikey"}},
			want:     []want{{field.ErrorTypeNotSupported, "spec.method", `spec.method must be OAuth or APIKey, not "apikey"`}},
		},
		{
			name: "description at the limit",
			provider: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.Description = strings.Repeat("d", validation.MaxDescriptionLength)
				return p
			}(),
		},
		{
			name: "description too long",
			provider: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.Description = strings.Repeat("d", validation.MaxDescriptionLength+1)
				return p
			}(),
			want: []want{{field.ErrorTypeTooLong, "spec.description", "spec.description is 2049 characters long; shorten it to at most 2048"}},
		},
		{
			name: "multibyte description counted in characters: 1500 é (3000 bytes)",
			provider: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.Description = strings.Repeat("é", 1500)
				return p
			}(),
		},
		{
			name: "multibyte description at the limit: 2048 four-byte runes",
			provider: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.Description = strings.Repeat("😀", validation.MaxDescriptionLength)
				return p
			}(),
		},
		{
			name: "multibyte description too long: 2049 é",
			provider: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.Description = strings.Repeat("é", validation.MaxDescriptionLength+1)
				return p
			}(),
			want: []want{{field.ErrorTypeTooLong, "spec.description", "spec.description is 2049 characters long; shorten it to at most 2048"}},
		},
		{
			name: "unsupported method and long description report both",
			provider: &pipesv1.Provider{Spec: pipesv1.ProviderSpec{
				Method: "Token", Description: strings.Repeat("x", 3000),
			}},
			want: []want{
				{field.ErrorTypeNotSupported, "spec.method", `spec.method must be OAuth or APIKey, not "Token"`},
				{field.ErrorTypeTooLong, "spec.description", "spec.description is 3000 characters long; shorten it to at most 2048"},
			},
		},
		{name: "OAuth Application mode", provider: oauthProvider("github")},
		{
			name: "OAuth http on localhost, 127.0.0.1 and ::1",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.AuthorizationURL = "http://localhost:8080/authorize"
				o.TokenURL = "http://127.0.0.1:8080/token"
			}),
		},
		{
			name:     "OAuth http on ::1",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.TokenURL = "http://[::1]:9000/token" }),
		},
		{
			name:     "OAuth tokenURL http on a public host",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.TokenURL = "http://example.com/token" }),
			want:     []want{{field.ErrorTypeInvalid, tokenURL, httpsOnly(tokenURL)}},
		},
		{
			name:     "OAuth authorizationURL http on a host that only starts with localhost",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.AuthorizationURL = "http://localhost.evil.example/authorize" }),
			want:     []want{{field.ErrorTypeInvalid, authURL, httpsOnly(authURL)}},
		},
		{
			name:     "OAuth tokenURL with another scheme",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.TokenURL = "ftp://example.com/token" }),
			want:     []want{{field.ErrorTypeInvalid, tokenURL, httpsOnly(tokenURL)}},
		},
		{
			name:     "OAuth tokenURL relative",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.TokenURL = "/oauth/token" }),
			want:     []want{{field.ErrorTypeInvalid, tokenURL, absoluteURL(tokenURL)}},
		},
		{
			name:     "OAuth tokenURL without host",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.TokenURL = "https:///token" }),
			want:     []want{{field.ErrorTypeInvalid, tokenURL, absoluteURL(tokenURL)}},
		},
		{
			name:     "OAuth authorizationURL unparsable",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.AuthorizationURL = "://no-scheme" }),
			want:     []want{{field.ErrorTypeInvalid, authURL, absoluteURL(authURL)}},
		},
		{
			name: "OAuth both URLs empty",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.AuthorizationURL, o.TokenURL = "", ""
			}),
			want: []want{
				{field.ErrorTypeInvalid, authURL, absoluteURL(authURL)},
				{field.ErrorTypeInvalid, tokenURL, absoluteURL(tokenURL)},
			},
		},
		{
			name:     "OAuth Application mode without clientID",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.ClientID = "" }),
			want:     []want{{field.ErrorTypeRequired, "spec.oauth.clientID", msgClientID}},
		},
		{
			name:     "OAuth Application mode without clientSecretRef",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.ClientSecretRef = nil }),
			want:     []want{{field.ErrorTypeRequired, "spec.oauth.clientSecretRef", msgClientSecret}},
		},
		{
			name: "OAuth unset credentialsMode means Application",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.CredentialsMode, o.ClientID, o.ClientSecretRef = "", "", nil
			}),
			want: []want{
				{field.ErrorTypeRequired, "spec.oauth.clientID", msgClientID},
				{field.ErrorTypeRequired, "spec.oauth.clientSecretRef", msgClientSecret},
			},
		},
		{
			name: "OAuth Organization mode needs no client",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.CredentialsMode, o.ClientID, o.ClientSecretRef = pipesv1.OAuthCredentialsOrganization, "", nil
			}),
		},
		{
			name:     "OAuth without scopes",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.Scopes = nil }),
		},
		{
			name:     "OAuth duplicate scope",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.Scopes = []string{"repo", "read:user", "repo"} }),
			want:     []want{{field.ErrorTypeDuplicate, "spec.oauth.scopes[2]", `spec.oauth.scopes[2] repeats scope "repo"; list each scope once`}},
		},
		{
			name: "OAuth scopes with spaces, tabs, newlines or nothing",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.Scopes = []string{"repo read:user", "ok", "a\tb", "", "   ", "x\n"}
			}),
			want: []want{
				{field.ErrorTypeInvalid, "spec.oauth.scopes[0]", "spec.oauth.scopes[0] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[2]", "spec.oauth.scopes[2] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[3]", "spec.oauth.scopes[3] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[4]", "spec.oauth.scopes[4] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[5]", "spec.oauth.scopes[5] must be a single non-empty scope without spaces"},
			},
		},
		{
			name: "OAuth scopes with any Unicode space: vertical tab, no-break space, line separator, ideographic space, NEL",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.Scopes = []string{"a\vb", "repo", "c\u00a0d", "e\u2028f", "g\u3000h", "i\u0085j", "\u00a0", "read:üser"}
			}),
			want: []want{
				{field.ErrorTypeInvalid, "spec.oauth.scopes[0]", "spec.oauth.scopes[0] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[2]", "spec.oauth.scopes[2] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[3]", "spec.oauth.scopes[3] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[4]", "spec.oauth.scopes[4] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[5]", "spec.oauth.scopes[5] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.oauth.scopes[6]", "spec.oauth.scopes[6] must be a single non-empty scope without spaces"},
			},
		},
		{
			name: "OAuth allowed authorizationParams",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.AuthorizationParams = map[string]string{"access_type": "offline", "prompt": "consent"}
			}),
		},
		{
			name: "OAuth reserved authorizationParams, sorted, case-insensitive",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.AuthorizationParams = map[string]string{
					"state": "x", "access_type": "offline", "Redirect_URI": "https://evil.example", "client_id": "c",
				}
			}),
			want: []want{
				{field.ErrorTypeForbidden, "spec.oauth.authorizationParams[Redirect_URI]", "spec.oauth.authorizationParams[Redirect_URI] is set by the OAuth flow itself; remove it (scopes go in spec.oauth.scopes)"},
				{field.ErrorTypeForbidden, "spec.oauth.authorizationParams[client_id]", "spec.oauth.authorizationParams[client_id] is set by the OAuth flow itself; remove it (scopes go in spec.oauth.scopes)"},
				{field.ErrorTypeForbidden, "spec.oauth.authorizationParams[state]", "spec.oauth.authorizationParams[state] is set by the OAuth flow itself; remove it (scopes go in spec.oauth.scopes)"},
			},
		},
		{
			name: "OAuth every reserved authorizationParam",
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) {
				o.AuthorizationParams = map[string]string{}
				for _, k := range []string{"client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method"} {
					o.AuthorizationParams[k] = "v"
				}
			}),
			want: func() []want {
				var ws []want
				for _, k := range []string{"client_id", "code_challenge", "code_challenge_method", "redirect_uri", "response_type", "scope", "state"} {
					p := "spec.oauth.authorizationParams[" + k + "]"
					ws = append(ws, want{field.ErrorTypeForbidden, p, p + " is set by the OAuth flow itself; remove it (scopes go in spec.oauth.scopes)"})
				}
				return ws
			}(),
		},
		{
			name: "OAuth many problems at once, in field order",
			provider: oauthProvider("github", withOAuth(func(o *pipesv1.OAuthSpec) {
				o.AuthorizationURL = "http://example.com/a"
				o.TokenURL = "token"
				o.ClientID = ""
				o.ClientSecretRef = nil
				o.Scopes = []string{"a", "a"}
				o.AuthorizationParams = map[string]string{"scope": "a"}
			})),
			want: []want{
				{field.ErrorTypeInvalid, authURL, httpsOnly(authURL)},
				{field.ErrorTypeInvalid, tokenURL, absoluteURL(tokenURL)},
				{field.ErrorTypeRequired, "spec.oauth.clientID", msgClientID},
				{field.ErrorTypeRequired, "spec.oauth.clientSecretRef", msgClientSecret},
				{field.ErrorTypeDuplicate, "spec.oauth.scopes[1]", `spec.oauth.scopes[1] repeats scope "a"; list each scope once`},
				{field.ErrorTypeForbidden, "spec.oauth.authorizationParams[scope]", "spec.oauth.authorizationParams[scope] is set by the OAuth flow itself; remove it (scopes go in spec.oauth.scopes)"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, validation.Provider(tc.provider), tc.want...)
		})
	}
}

func TestProviderUpdate(t *testing.T) {
	oauthFromAPIKey := func() *pipesv1.Provider {
		p := apiKeyProvider("openai")
		p.Spec.Method = pipesv1.AuthMethodOAuth
		p.Spec.OAuth = oauthSpec()
		return p
	}
	tests := []struct {
		name     string
		old, new *pipesv1.Provider
		want     []want
	}{
		{
			name: "APIKey to OAuth",
			old:  apiKeyProvider("openai"), new: oauthFromAPIKey(),
			want: []want{{field.ErrorTypeForbidden, "spec.method", msgMethodChange}},
		},
		{
			name: "OAuth to APIKey",
			old:  oauthProvider("github"),
			new: func() *pipesv1.Provider {
				p := oauthProvider("github")
				p.Spec.Method, p.Spec.OAuth = pipesv1.AuthMethodAPIKey, nil
				return p
			}(),
			want: []want{{field.ErrorTypeForbidden, "spec.method",
				"spec.method is immutable (was OAuth, requested APIKey): a provider is either OAuth or API key, fixed when it is created; delete this Provider and create it again with the method you want"}},
		},
		{
			name: "APIKey to OAuth without oauth reports the method first, then the spec",
			old:  apiKeyProvider("openai"),
			new: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.Method = pipesv1.AuthMethodOAuth
				return p
			}(),
			want: []want{
				{field.ErrorTypeForbidden, "spec.method", msgMethodChange},
				{field.ErrorTypeRequired, "spec.oauth", msgOAuthRequired},
			},
		},
		{
			name: "description and displayName edits",
			old:  apiKeyProvider("openai"),
			new: func() *pipesv1.Provider {
				p := apiKeyProvider("openai")
				p.Spec.Description, p.Spec.DisplayName = "Something else entirely.", "OpenAI (beta)"
				return p
			}(),
		},
		{
			name: "disabling",
			old:  oauthProvider("github"),
			new: func() *pipesv1.Provider {
				p := oauthProvider("github")
				off := false
				p.Spec.Enabled = &off
				return p
			}(),
		},
		{
			name: "same method, new spec still validated",
			old:  oauthProvider("github"),
			new:  oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.TokenURL = "http://example.com/token" }),
			want: []want{{field.ErrorTypeInvalid, "spec.oauth.tokenURL", httpsOnly("spec.oauth.tokenURL")}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := validation.ProviderUpdate(tc.old, tc.new)
			expectErrors(t, errs, tc.want...)
			if len(tc.want) > 0 && tc.want[0].Field == "spec.method" {
				if errs[0].BadValue != string(tc.new.Spec.Method) {
					t.Errorf("BadValue = %v, want the requested method %q", errs[0].BadValue, tc.new.Spec.Method)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// OrganizationProvider

func TestOrganizationProvider(t *testing.T) {
	openai := apiKeyProvider("openai")
	github := oauthProvider("github")
	githubOrgMode := oauthProvider("github", func(o *pipesv1.OAuthSpec) {
		o.CredentialsMode, o.ClientID, o.ClientSecretRef = pipesv1.OAuthCredentialsOrganization, "", nil
	})
	githubNoScopes := oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.Scopes = nil })
	op := func(provider, org string, mutate func(*pipesv1.OrganizationProvider)) *pipesv1.OrganizationProvider {
		o := orgProvider(provider, org)
		if mutate != nil {
			mutate(o)
		}
		return o
	}
	enabled := func(v bool) func(*pipesv1.OrganizationProvider) {
		return func(o *pipesv1.OrganizationProvider) { o.Spec.Enabled = &v }
	}
	scopes := func(s ...string) func(*pipesv1.OrganizationProvider) {
		return func(o *pipesv1.OrganizationProvider) { o.Spec.Scopes = s }
	}
	creds := func(o *pipesv1.OrganizationProvider) { o.Spec.Credentials = orgCredentials() }

	tests := []struct {
		name     string
		op       *pipesv1.OrganizationProvider
		provider *pipesv1.Provider
		want     []want
	}{
		{name: "provider missing", op: op("openai", "org_9", nil), want: []want{notFound("openai")}},
		{
			name: "provider missing and organizationID empty",
			op:   op("openai", "", nil),
			want: []want{{field.ErrorTypeRequired, "spec.organizationID", "spec.organizationID is required"}, notFound("openai")},
		},
		{name: "API key provider, only enabled", op: op("openai", "org_9", enabled(false)), provider: openai},
		{name: "API key provider, nothing set", op: op("openai", "org_9", nil), provider: openai},
		{
			name: "API key provider with scopes", op: op("openai", "org_9", scopes("read")), provider: openai,
			want: []want{{field.ErrorTypeForbidden, "spec.scopes", "spec.scopes: " + msgAPIKeyOverride}},
		},
		{
			name: "API key provider with credentials", op: op("openai", "org_9", creds), provider: openai,
			want: []want{{field.ErrorTypeForbidden, "spec.credentials", "spec.credentials: " + msgAPIKeyOverride}},
		},
		{
			name: "API key provider with scopes and credentials",
			op: op("openai", "org_9", func(o *pipesv1.OrganizationProvider) {
				scopes("read")(o)
				creds(o)
			}),
			provider: openai,
			want: []want{
				{field.ErrorTypeForbidden, "spec.scopes", "spec.scopes: " + msgAPIKeyOverride},
				{field.ErrorTypeForbidden, "spec.credentials", "spec.credentials: " + msgAPIKeyOverride},
			},
		},
		{name: "OAuth provider, scopes a subset", op: op("github", "org_9", scopes("repo")), provider: github},
		{name: "OAuth provider, all scopes", op: op("github", "org_9", scopes("read:user", "repo")), provider: github},
		{name: "OAuth provider, no scopes", op: op("github", "org_9", enabled(true)), provider: github},
		{
			name: "OAuth provider, scopes not a subset name the disallowed ones once",
			op:   op("github", "org_9", scopes("repo", "admin:org", "delete_repo")), provider: github,
			want: []want{{field.ErrorTypeForbidden, "spec.scopes",
				`spec.scopes may only narrow Provider "github"'s scopes; not allowed: admin:org, delete_repo (allowed: repo, read:user)`}},
		},
		{
			name: "OAuth provider, repeated disallowed scope named once, repetition reported",
			op:   op("github", "org_9", scopes("admin", "admin")), provider: github,
			want: []want{
				{field.ErrorTypeDuplicate, "spec.scopes[1]", `spec.scopes[1] repeats scope "admin"; list each scope once`},
				{field.ErrorTypeForbidden, "spec.scopes", `spec.scopes may only narrow Provider "github"'s scopes; not allowed: admin (allowed: repo, read:user)`},
			},
		},
		{
			name: "OAuth provider without scopes allows none",
			op:   op("github", "org_9", scopes("repo")), provider: githubNoScopes,
			want: []want{{field.ErrorTypeForbidden, "spec.scopes", `spec.scopes may only narrow Provider "github"'s scopes; not allowed: repo (allowed: none)`}},
		},
		{
			name: "OAuth provider, scope with a space",
			op:   op("github", "org_9", scopes("repo read:user")), provider: github,
			want: []want{
				{field.ErrorTypeInvalid, "spec.scopes[0]", "spec.scopes[0] must be a single non-empty scope without spaces"},
				{field.ErrorTypeForbidden, "spec.scopes", `spec.scopes may only narrow Provider "github"'s scopes; not allowed: repo read:user (allowed: repo, read:user)`},
			},
		},
		{
			// The Provider lists these very strings, so only the space rule rejects them.
			name:     "OAuth provider, scopes with a vertical tab and a no-break space",
			op:       op("github", "org_9", scopes("a\vb", "c\u00a0d")),
			provider: oauthProvider("github", func(o *pipesv1.OAuthSpec) { o.Scopes = []string{"a\vb", "c\u00a0d"} }),
			want: []want{
				{field.ErrorTypeInvalid, "spec.scopes[0]", "spec.scopes[0] must be a single non-empty scope without spaces"},
				{field.ErrorTypeInvalid, "spec.scopes[1]", "spec.scopes[1] must be a single non-empty scope without spaces"},
			},
		},
		{
			name: "credentials with credentialsMode Application", op: op("github", "org_9", creds), provider: github,
			want: []want{{field.ErrorTypeForbidden, "spec.credentials",
				`spec.credentials is allowed only when Provider "github" has spec.oauth.credentialsMode Organization; this provider uses the application's OAuth client`}},
		},
		{name: "credentials with credentialsMode Organization", op: op("github", "org_9", creds), provider: githubOrgMode},
		{
			name: "organizationID too long",
			op:   op("openai", strings.Repeat("o", validation.MaxIDLength+1), nil), provider: openai,
			want: []want{{field.ErrorTypeTooLong, "spec.organizationID", "spec.organizationID is 257 characters long; at most 256 are allowed"}},
		},
		{name: "organizationID at the limit", op: op("openai", strings.Repeat("o", validation.MaxIDLength), nil), provider: openai},
		{name: "organizationID of 200 é (400 bytes) counted in characters", op: op("openai", strings.Repeat("é", 200), nil), provider: openai},
		{name: "organizationID of 256 é at the limit", op: op("openai", strings.Repeat("é", validation.MaxIDLength), nil), provider: openai},
		{
			name: "organizationID of 257 é",
			op:   op("openai", strings.Repeat("é", validation.MaxIDLength+1), nil), provider: openai,
			want: []want{{field.ErrorTypeTooLong, "spec.organizationID", "spec.organizationID is 257 characters long; at most 256 are allowed"}},
		},
		{
			name: "organizationID not valid UTF-8",
			op:   op("openai", "org\xff9", nil), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID is not valid UTF-8 text"}},
		},
		{
			name: "organizationID with a line separator",
			op:   op("openai", "org\u20289", nil), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID contains control characters; use printable characters only"}},
		},
		{
			name: "organizationID with surrounding whitespace",
			op:   op("openai", " org_9", nil), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID has leading or trailing whitespace; remove it"}},
		},
		{
			name: "organizationID with a control character",
			op:   op("openai", "org\x009", nil), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID contains control characters; use printable characters only"}},
		},
		{
			name: "organizationID with DEL",
			op:   op("openai", "org\x7f9", nil), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID contains control characters; use printable characters only"}},
		},
		{name: "organizationID with non-ASCII printable text", op: op("openai", "организация-9", nil), provider: openai},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, validation.OrganizationProvider(tc.op, tc.provider), tc.want...)
		})
	}
}

func TestOrganizationSettingsPaths(t *testing.T) {
	base := field.NewPath("body")
	sp, cp := base.Child("scopes"), base.Child("credentials")
	expectErrors(t, validation.OrganizationSettings(apiKeyProvider("openai"), []string{"x"}, true, sp, cp),
		want{field.ErrorTypeForbidden, "body.scopes", "body.scopes: " + msgAPIKeyOverride},
		want{field.ErrorTypeForbidden, "body.credentials", "body.credentials: " + msgAPIKeyOverride},
	)
	expectErrors(t, validation.OrganizationSettings(oauthProvider("github"), []string{"gist"}, true, sp, cp),
		want{field.ErrorTypeForbidden, "body.scopes", `body.scopes may only narrow Provider "github"'s scopes; not allowed: gist (allowed: repo, read:user)`},
		want{field.ErrorTypeForbidden, "body.credentials", `body.credentials is allowed only when Provider "github" has spec.oauth.credentialsMode Organization; this provider uses the application's OAuth client`},
	)
	// An OAuth provider whose oauth block is missing (rejected on its own) allows nothing.
	broken := &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "broken"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth}}
	expectErrors(t, validation.OrganizationSettings(broken, []string{"a"}, true, sp, cp),
		want{field.ErrorTypeForbidden, "body.scopes", `body.scopes may only narrow Provider "broken"'s scopes; not allowed: a (allowed: none)`},
		want{field.ErrorTypeForbidden, "body.credentials", `body.credentials is allowed only when Provider "broken" has spec.oauth.credentialsMode Organization; this provider uses the application's OAuth client`},
	)
	expectErrors(t, validation.OrganizationSettings(apiKeyProvider("openai"), nil, false, sp, cp))
	// The two paths are independent (the backend API names its fields differently).
	expectErrors(t, validation.OrganizationSettings(apiKeyProvider("openai"), []string{"x"}, true, field.NewPath("scopes"), field.NewPath("oauthClient")),
		want{field.ErrorTypeForbidden, "scopes", "scopes: " + msgAPIKeyOverride},
		want{field.ErrorTypeForbidden, "oauthClient", "oauthClient: " + msgAPIKeyOverride},
	)
	expectErrors(t, validation.OrganizationSettings(oauthProvider("github"), []string{"repo", "repo", "gist"}, true, field.NewPath("scopes"), field.NewPath("oauthClient")),
		want{field.ErrorTypeDuplicate, "scopes[1]", `scopes[1] repeats scope "repo"; list each scope once`},
		want{field.ErrorTypeForbidden, "scopes", `scopes may only narrow Provider "github"'s scopes; not allowed: gist (allowed: repo, read:user)`},
		want{field.ErrorTypeForbidden, "oauthClient", `oauthClient is allowed only when Provider "github" has spec.oauth.credentialsMode Organization; this provider uses the application's OAuth client`},
	)
}

func TestOrganizationProviderUpdate(t *testing.T) {
	old := orgProvider("openai", "org_9")
	tests := []struct {
		name   string
		mutate func(*pipesv1.OrganizationProvider)
		want   []want
	}{
		{name: "no change", mutate: func(*pipesv1.OrganizationProvider) {}},
		{
			name: "enabled, scopes and credentials may change",
			mutate: func(o *pipesv1.OrganizationProvider) {
				off := false
				o.Spec.Enabled, o.Spec.Scopes, o.Spec.Credentials = &off, []string{"a"}, orgCredentials()
			},
		},
		{
			name:   "providerRef",
			mutate: func(o *pipesv1.OrganizationProvider) { o.Spec.ProviderRef.Name = "github" },
			want: []want{{field.ErrorTypeForbidden, "spec.providerRef",
				`spec.providerRef is immutable (was "openai"): create another OrganizationProvider for another provider`}},
		},
		{
			name:   "organizationID",
			mutate: func(o *pipesv1.OrganizationProvider) { o.Spec.OrganizationID = "org_10" },
			want: []want{{field.ErrorTypeForbidden, "spec.organizationID",
				`spec.organizationID is immutable (was "org_9"): create another OrganizationProvider for another organization`}},
		},
		{
			name: "both",
			mutate: func(o *pipesv1.OrganizationProvider) {
				o.Spec.ProviderRef.Name, o.Spec.OrganizationID = "github", "org_10"
			},
			want: []want{
				{field.ErrorTypeForbidden, "spec.providerRef", `spec.providerRef is immutable (was "openai"): create another OrganizationProvider for another provider`},
				{field.ErrorTypeForbidden, "spec.organizationID", `spec.organizationID is immutable (was "org_9"): create another OrganizationProvider for another organization`},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := old.DeepCopy()
			tc.mutate(n)
			expectErrors(t, validation.OrganizationProviderUpdate(old, n), tc.want...)
		})
	}
}

// ---------------------------------------------------------------------------
// ConnectedAccount

func TestConnectedAccount(t *testing.T) {
	openai := apiKeyProvider("openai")
	github := oauthProvider("github")
	mismatch := `spec.apiKey: auth_method_mismatch: Provider "github" uses OAuth, so its accounts connect through the OAuth flow, not with an API key; remove spec.apiKey`
	withSealed := func(ca *pipesv1.ConnectedAccount, value string) *pipesv1.ConnectedAccount {
		if ca.Spec.APIKey == nil {
			ca.Spec.APIKey = &pipesv1.APIKeySource{}
		}
		ca.Spec.APIKey.Sealed = value
		return ca
	}
	ks, err := sealing.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ks.PublicKeysetJSON()
	validSealed, err := sealing.Seal(pub, []byte("sk-0123456789abcdef"), sealing.Context{Namespace: "ns", Name: "acct", Provider: "openai", User: "user_123"})
	if err != nil {
		t.Fatal(err)
	}
	noSource := func(ca *pipesv1.ConnectedAccount) *pipesv1.ConnectedAccount {
		ca.Spec.APIKey = &pipesv1.APIKeySource{}
		return ca
	}
	tests := []struct {
		name     string
		ca       *pipesv1.ConnectedAccount
		provider *pipesv1.Provider
		want     []want
	}{
		{name: "API key provider with secretKeyRef", ca: withSecretKeyRef(account("openai", "user_123", "")), provider: openai},
		{name: "API key provider without apiKey", ca: account("openai", "user_123", ""), provider: openai},
		{name: "API key provider, organization-scoped", ca: account("openai", "user_123", "org_9"), provider: openai},
		{name: "OAuth provider without apiKey", ca: account("github", "user_123", "org_9"), provider: github},
		{
			name: "OAuth provider with apiKey", ca: withSecretKeyRef(account("github", "user_123", "")), provider: github,
			want: []want{{field.ErrorTypeForbidden, "spec.apiKey", mismatch}},
		},
		{
			name: "apiKey without a source", ca: noSource(account("openai", "user_123", "")), provider: openai,
			want: []want{{field.ErrorTypeRequired, "spec.apiKey", msgNeedsSource}},
		},
		{
			name: "apiKey without a source on an OAuth provider", ca: noSource(account("github", "user_123", "")), provider: github,
			want: []want{
				{field.ErrorTypeRequired, "spec.apiKey", msgNeedsSource},
				{field.ErrorTypeForbidden, "spec.apiKey", mismatch},
			},
		},
		{name: "API key provider with a sealed key", ca: withSealed(account("openai", "user_123", ""), validSealed), provider: openai},
		{
			name: "both secretKeyRef and sealed", ca: withSealed(withSecretKeyRef(account("openai", "user_123", "")), validSealed), provider: openai,
			want: []want{{field.ErrorTypeRequired, "spec.apiKey", msgNeedsSource}},
		},
		{
			name: "sealed without the v1: prefix", ca: withSealed(account("openai", "user_123", ""), "sk-live-plaintext-key"), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.apiKey.sealed", `spec.apiKey.sealed is not a sealed value: it must start with "v1:", as kubectl pipes seal writes it (to take a key from a Secret, use spec.apiKey.secretKeyRef)`}},
		},
		{
			name: "sealed cut short", ca: withSealed(account("openai", "user_123", ""), validSealed[:40]), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.apiKey.sealed", fmt.Sprintf("spec.apiKey.sealed is 40 characters long, too short for a sealed API key (at least %d): it was cut; reseal the key with kubectl pipes seal", sealing.MinSealedLength)}},
		},
		{
			name: "sealed not base64", ca: withSealed(account("openai", "user_123", ""), validSealed[:len(validSealed)-4]+"!!!!"), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.apiKey.sealed", `spec.apiKey.sealed is not valid base64 after "v1:", or is not a sealed value: it was cut or edited; reseal the key with kubectl pipes seal`}},
		},
		{
			name: "sealed too long", ca: withSealed(account("openai", "user_123", ""), "v1:"+strings.Repeat("A", sealing.MaxSealedLength)), provider: openai,
			want: []want{{field.ErrorTypeTooLong, "spec.apiKey.sealed", fmt.Sprintf("spec.apiKey.sealed is %d characters long; a sealed API key is at most %d: reseal the key with kubectl pipes seal", sealing.MaxSealedLength+3, sealing.MaxSealedLength)}},
		},
		{name: "provider missing", ca: account("openai", "user_123", ""), want: []want{notFound("openai")}},
		{
			name: "provider missing and apiKey without a source", ca: noSource(account("openai", "user_123", "")),
			want: []want{{field.ErrorTypeRequired, "spec.apiKey", msgNeedsSource}, notFound("openai")},
		},
		{
			name: "userID empty", ca: account("openai", "", ""), provider: openai,
			want: []want{{field.ErrorTypeRequired, "spec.userID", "spec.userID is required"}},
		},
		{
			name: "userID too long", ca: account("openai", strings.Repeat("u", 300), ""), provider: openai,
			want: []want{{field.ErrorTypeTooLong, "spec.userID", "spec.userID is 300 characters long; at most 256 are allowed"}},
		},
		{name: "userID of 200 é (400 bytes) counted in characters", ca: account("openai", strings.Repeat("é", 200), ""), provider: openai},
		{name: "userID of 256 four-byte runes at the limit", ca: account("openai", strings.Repeat("😀", validation.MaxIDLength), ""), provider: openai},
		{
			name: "userID of 257 é", ca: account("openai", strings.Repeat("é", validation.MaxIDLength+1), ""), provider: openai,
			want: []want{{field.ErrorTypeTooLong, "spec.userID", "spec.userID is 257 characters long; at most 256 are allowed"}},
		},
		{
			name: "userID not valid UTF-8", ca: account("openai", "user\xc3(123", ""), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.userID", "spec.userID is not valid UTF-8 text"}},
		},
		{
			name: "userID not valid UTF-8 and too long in bytes reports UTF-8", ca: account("openai", strings.Repeat("\xff", 300), ""), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.userID", "spec.userID is not valid UTF-8 text"}},
		},
		{
			name: "userID with a paragraph separator", ca: account("openai", "user\u2029123", ""), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.userID", "spec.userID contains control characters; use printable characters only"}},
		},
		{
			name: "userID with a C1 control character", ca: account("openai", "user\u009b123", ""), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.userID", "spec.userID contains control characters; use printable characters only"}},
		},
		{
			name: "userID with a trailing line separator", ca: account("openai", "user_123\u2028", ""), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.userID", "spec.userID has leading or trailing whitespace; remove it"}},
		},
		{
			name: "userID with trailing newline", ca: account("openai", "user_123\n", ""), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.userID", "spec.userID has leading or trailing whitespace; remove it"}},
		},
		{
			name: "userID with a control character", ca: account("openai", "user\x1b123", ""), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.userID", "spec.userID contains control characters; use printable characters only"}},
		},
		{
			name: "organizationID with whitespace", ca: account("openai", "user_123", "org_9 "), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID has leading or trailing whitespace; remove it"}},
		},
		{
			name: "organizationID too long", ca: account("openai", "user_123", strings.Repeat("o", 257)), provider: openai,
			want: []want{{field.ErrorTypeTooLong, "spec.organizationID", "spec.organizationID is 257 characters long; at most 256 are allowed"}},
		},
		{name: "organizationID of 200 é", ca: account("openai", "user_123", strings.Repeat("é", 200)), provider: openai},
		{
			name: "organizationID not valid UTF-8", ca: account("openai", "user_123", "\xfforg"), provider: openai,
			want: []want{{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID is not valid UTF-8 text"}},
		},
		{
			name: "bad userID, bad organizationID and missing provider report all three",
			ca:   account("openai", " u", "o\x01"),
			want: []want{
				{field.ErrorTypeInvalid, "spec.userID", "spec.userID has leading or trailing whitespace; remove it"},
				{field.ErrorTypeInvalid, "spec.organizationID", "spec.organizationID contains control characters; use printable characters only"},
				notFound("openai"),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := validation.ConnectedAccount(tc.ca, tc.provider)
			expectErrors(t, errs, tc.want...)
			for _, e := range errs {
				// spec.apiKey carries two rules: the auth method mismatch (Forbidden, with the
				// code) and the missing source (Required, without it).
				if e.Field == "spec.apiKey" && (e.Type == field.ErrorTypeForbidden) != strings.Contains(e.Detail, validation.AuthMethodMismatchCode) {
					t.Errorf("spec.apiKey %s error %q: the code %q belongs to the auth method mismatch only", e.Type, e.Detail, validation.AuthMethodMismatchCode)
				}
				// Invalid UTF-8 is never echoed back.
				if strings.Contains(e.Detail, "UTF-8") && e.BadValue != nil {
					t.Errorf("BadValue = %q for invalid UTF-8, want nil", e.BadValue)
				}
			}
		})
	}
}

func TestConnectedAccountUpdate(t *testing.T) {
	tests := []struct {
		name   string
		old    *pipesv1.ConnectedAccount
		mutate func(*pipesv1.ConnectedAccount)
		want   []want
	}{
		{name: "no change", old: account("openai", "user_123", "org_9"), mutate: func(*pipesv1.ConnectedAccount) {}},
		{
			name: "apiKey may be added and removed", old: account("openai", "user_123", ""),
			mutate: func(ca *pipesv1.ConnectedAccount) { withSecretKeyRef(ca) },
		},
		{
			name: "providerRef", old: account("openai", "user_123", ""),
			mutate: func(ca *pipesv1.ConnectedAccount) { ca.Spec.ProviderRef.Name = "github" },
			want: []want{{field.ErrorTypeForbidden, "spec.providerRef",
				`spec.providerRef is immutable (was "openai"): create another ConnectedAccount for another provider`}},
		},
		{
			name: "userID", old: account("openai", "user_123", ""),
			mutate: func(ca *pipesv1.ConnectedAccount) { ca.Spec.UserID = "user_456" },
			want: []want{{field.ErrorTypeForbidden, "spec.userID",
				`spec.userID is immutable (was "user_123"): create another ConnectedAccount for another user`}},
		},
		{
			name: "organizationID changed", old: account("openai", "user_123", "org_9"),
			mutate: func(ca *pipesv1.ConnectedAccount) { ca.Spec.OrganizationID = "org_10" },
			want: []want{{field.ErrorTypeForbidden, "spec.organizationID",
				`spec.organizationID is immutable (was "org_9"): create another ConnectedAccount for another organization`}},
		},
		{
			name: "organizationID added", old: account("openai", "user_123", ""),
			mutate: func(ca *pipesv1.ConnectedAccount) { ca.Spec.OrganizationID = "org_9" },
			want: []want{{field.ErrorTypeForbidden, "spec.organizationID",
				`spec.organizationID is immutable (was ""): create another ConnectedAccount for another organization`}},
		},
		{
			name: "organizationID removed", old: account("openai", "user_123", "org_9"),
			mutate: func(ca *pipesv1.ConnectedAccount) { ca.Spec.OrganizationID = "" },
			want: []want{{field.ErrorTypeForbidden, "spec.organizationID",
				`spec.organizationID is immutable (was "org_9"): create another ConnectedAccount for another organization`}},
		},
		{
			name: "all three", old: account("openai", "user_123", "org_9"),
			mutate: func(ca *pipesv1.ConnectedAccount) {
				ca.Spec.ProviderRef.Name, ca.Spec.UserID, ca.Spec.OrganizationID = "github", "user_456", ""
			},
			want: []want{
				{field.ErrorTypeForbidden, "spec.providerRef", `spec.providerRef is immutable (was "openai"): create another ConnectedAccount for another provider`},
				{field.ErrorTypeForbidden, "spec.userID", `spec.userID is immutable (was "user_123"): create another ConnectedAccount for another user`},
				{field.ErrorTypeForbidden, "spec.organizationID", `spec.organizationID is immutable (was "org_9"): create another ConnectedAccount for another organization`},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.old.DeepCopy()
			tc.mutate(n)
			expectErrors(t, validation.ConnectedAccountUpdate(tc.old, n), tc.want...)
		})
	}
}

// ---------------------------------------------------------------------------
// Uniqueness (the webhooks find the existing object; the rule names it)

func TestDuplicates(t *testing.T) {
	expectErrors(t, field.ErrorList{validation.DuplicateOrganizationProvider(orgProvider("openai", "org_9"), "first")},
		want{field.ErrorTypeDuplicate, "spec.organizationID",
			`spec.organizationID: OrganizationProvider "first" already configures Provider "openai" for organization "org_9"; edit that one instead`})
	expectErrors(t, field.ErrorList{validation.DuplicateConnectedAccount(account("openai", "user_123", ""), "first")},
		want{field.ErrorTypeDuplicate, "spec.userID",
			`spec.userID: ConnectedAccount "first" already connects user "user_123" to Provider "openai"; update that one instead (one account per provider, user and organization)`})
	expectErrors(t, field.ErrorList{validation.DuplicateConnectedAccount(account("openai", "user_123", "org_9"), "first")},
		want{field.ErrorTypeDuplicate, "spec.userID",
			`spec.userID: ConnectedAccount "first" already connects user "user_123" in organization "org_9" to Provider "openai"; update that one instead (one account per provider, user and organization)`})
}

// ---------------------------------------------------------------------------
// Identifiers from the backend API

func TestUserIDAndOrganizationID(t *testing.T) {
	p := field.NewPath("body", "userID")
	expectErrors(t, validation.UserID(p, ""), want{field.ErrorTypeRequired, "body.userID", "body.userID is required"})
	expectErrors(t, validation.UserID(p, "user_123"))
	expectErrors(t, validation.UserID(p, "\tuser"), want{field.ErrorTypeInvalid, "body.userID", "body.userID has leading or trailing whitespace; remove it"})

	o := field.NewPath("body", "organizationID")
	expectErrors(t, validation.OrganizationID(o, "")) // optional
	expectErrors(t, validation.OrganizationID(o, "org_9"))
	expectErrors(t, validation.OrganizationID(o, strings.Repeat("é", 129))) // 258 bytes, 129 characters: counted in characters
	expectErrors(t, validation.OrganizationID(o, strings.Repeat("é", 200))) // 400 bytes
	expectErrors(t, validation.UserID(p, strings.Repeat("é", 200)))
	expectErrors(t, validation.OrganizationID(o, strings.Repeat("é", validation.MaxIDLength+1)),
		want{field.ErrorTypeTooLong, "body.organizationID", "body.organizationID is 257 characters long; at most 256 are allowed"})
	expectErrors(t, validation.OrganizationID(o, "a\u007fb"),
		want{field.ErrorTypeInvalid, "body.organizationID", "body.organizationID contains control characters; use printable characters only"})
	for _, id := range []string{"a\u2028b", "a\u2029b", "a\u0085b", "a\u009fb"} {
		expectErrors(t, validation.OrganizationID(o, id),
			want{field.ErrorTypeInvalid, "body.organizationID", "body.organizationID contains control characters; use printable characters only"})
	}
	expectErrors(t, validation.OrganizationID(o, "org_9\u2029"),
		want{field.ErrorTypeInvalid, "body.organizationID", "body.organizationID has leading or trailing whitespace; remove it"})
	for _, id := range []string{"\xff", "user-SECRET\xfe", "\xed\xa0\x80" /* an encoded surrogate */, "\xc3"} {
		errs := validation.UserID(p, id)
		expectErrors(t, errs, want{field.ErrorTypeInvalid, "body.userID", "body.userID is not valid UTF-8 text"})
		if errs[0].BadValue != nil || strings.Contains(errs[0].Error(), "SECRET") {
			t.Errorf("UserID(%q) echoes the value: BadValue %v, Error() %q", id, errs[0].BadValue, errs[0].Error())
		}
	}
}

// ---------------------------------------------------------------------------
// API keys

func TestAPIKey(t *testing.T) {
	path := field.NewPath("body", "apiKey")
	const secret = "sk-live-SECRETVALUE-0123456789"
	tests := []struct {
		name string
		key  []byte
		want []want
	}{
		{name: "valid", key: []byte(secret)},
		{name: "valid, one byte", key: []byte("k")},
		{name: "valid, non-ASCII", key: []byte("ключ-" + secret)},
		{name: "valid, inner space", key: []byte("sk live " + secret)},
		{name: "valid, at the limit", key: []byte(strings.Repeat("k", validation.MaxAPIKeyLength))},
		{name: "nil", key: nil, want: []want{{field.ErrorTypeRequired, "body.apiKey", "body.apiKey is empty; supply the API key issued by the provider"}}},
		{name: "empty", key: []byte{}, want: []want{{field.ErrorTypeRequired, "body.apiKey", "body.apiKey is empty; supply the API key issued by the provider"}}},
		{
			name: "too long", key: []byte(secret + strings.Repeat("k", validation.MaxAPIKeyLength)),
			want: []want{{field.ErrorTypeTooLong, "body.apiKey", fmt.Sprintf("body.apiKey is %d bytes long; API keys may be at most 8192 bytes", len(secret)+validation.MaxAPIKeyLength)}},
		},
		{
			name: "trailing newline", key: []byte(secret + "\n"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey has leading or trailing whitespace (often a trailing newline from `echo`); store the key without it, e.g. with `printf %s`"}},
		},
		{
			name: "leading space", key: []byte(" " + secret),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey has leading or trailing whitespace (often a trailing newline from `echo`); store the key without it, e.g. with `printf %s`"}},
		},
		{
			name: "only whitespace", key: []byte("   "),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey has leading or trailing whitespace (often a trailing newline from `echo`); store the key without it, e.g. with `printf %s`"}},
		},
		{
			name: "NUL inside", key: []byte("sk-live-SECRET\x00VALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey contains control characters; an API key is a single line of printable text"}},
		},
		{
			name: "newline inside", key: []byte("sk-live-SECRET\nVALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey contains control characters; an API key is a single line of printable text"}},
		},
		{
			name: "DEL inside", key: []byte("sk-live-SECRET\x7fVALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey contains control characters; an API key is a single line of printable text"}},
		},
		{name: "valid, emoji", key: []byte("sk-😀-" + secret)},
		{
			name: "invalid UTF-8", key: []byte("sk-live-SECRET\xffVALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey is not valid UTF-8 text; an API key is a single line of printable text"}},
		},
		{
			name: "invalid UTF-8: truncated sequence at the end", key: []byte("sk-live-SECRETVALUE\xe2\x80"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey is not valid UTF-8 text; an API key is a single line of printable text"}},
		},
		{
			name: "invalid UTF-8 with surrounding whitespace reports UTF-8", key: []byte(" sk-live-SECRET\xc0VALUE\n"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey is not valid UTF-8 text; an API key is a single line of printable text"}},
		},
		{
			name: "invalid UTF-8 and too long reports the length", key: append([]byte("sk-live-SECRET\xff"), strings.Repeat("k", validation.MaxAPIKeyLength)...),
			want: []want{{field.ErrorTypeTooLong, "body.apiKey", fmt.Sprintf("body.apiKey is %d bytes long; API keys may be at most 8192 bytes", len("sk-live-SECRET\xff")+validation.MaxAPIKeyLength)}},
		},
		{
			name: "line separator U+2028 inside", key: []byte("sk-live-SECRET\u2028VALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey contains control characters; an API key is a single line of printable text"}},
		},
		{
			name: "paragraph separator U+2029 inside", key: []byte("sk-live-SECRET\u2029VALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey contains control characters; an API key is a single line of printable text"}},
		},
		{
			name: "NEL U+0085 inside", key: []byte("sk-live-SECRET\u0085VALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey contains control characters; an API key is a single line of printable text"}},
		},
		{
			name: "C1 control U+009B inside", key: []byte("sk-live-SECRET\u009bVALUE"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey contains control characters; an API key is a single line of printable text"}},
		},
		{
			name: "trailing line separator U+2028", key: []byte(secret + "\u2028"),
			want: []want{{field.ErrorTypeInvalid, "body.apiKey", "body.apiKey has leading or trailing whitespace (often a trailing newline from `echo`); store the key without it, e.g. with `printf %s`"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := validation.APIKey(path, tc.key)
			expectErrors(t, errs, tc.want...)
			for _, e := range errs {
				// The key must never be echoed back: not in the Detail, not as BadValue,
				// not in Error() (which prints BadValue).
				for _, s := range []string{e.Detail, e.Error(), fmt.Sprint(e.BadValue)} {
					if strings.Contains(s, "SECRET") {
						t.Errorf("error text contains the key: %q", s)
					}
				}
				if e.BadValue != nil {
					t.Errorf("BadValue = %v, want nil", e.BadValue)
				}
			}
		})
	}
}

func TestLast4(t *testing.T) {
	tests := []struct {
		key, want string
	}{
		{"", ""},
		{"abc", ""},
		{"12345678901", ""},      // 11 characters: too short to show any
		{"123456789012", "9012"}, // 12 characters
		{"sk-live-0123456789abcdef", "cdef"},
		{"ключ-секрет", ""},          // 11 runes, 21 bytes: counted in characters, not bytes
		{"ключ-секрет-АБВГ", "АБВГ"}, // multibyte last four
		{"sk-live-key-😀😁😂🤣", "😀😁😂🤣"}, // 4-byte runes
		{"sk-live-key-é", "ey-é"},    // the last four characters, not bytes
	}
	for _, tc := range tests {
		if got := validation.Last4([]byte(tc.key)); got != tc.want {
			t.Errorf("Last4(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestMessage(t *testing.T) {
	if got := validation.Message(nil); got != "" {
		t.Errorf("Message(nil) = %q, want empty", got)
	}
	errs := validation.Provider(&pipesv1.Provider{Spec: pipesv1.ProviderSpec{Method: "X", Description: strings.Repeat("x", 2049)}})
	want := `spec.method must be OAuth or APIKey, not "X"; spec.description is 2049 characters long; shorten it to at most 2048`
	if got := validation.Message(errs); got != want {
		t.Errorf("Message = %q, want %q", got, want)
	}
}
