package validation_test

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/validation"
)

// checkErrors asserts the package's contract on every error: a non-empty Field under
// root, and a non-empty Detail that starts with that Field (or a parent path of it).
func checkErrors(t *testing.T, what string, root string, errs field.ErrorList) {
	t.Helper()
	for _, e := range errs {
		if e == nil {
			t.Fatalf("%s: nil error in list", what)
		}
		if e.Field == "" || e.Detail == "" {
			t.Fatalf("%s: error with empty Field or Detail: %#v", what, e)
		}
		if e.Field != root && !strings.HasPrefix(e.Field, root+".") && !strings.HasPrefix(e.Field, root+"[") {
			t.Fatalf("%s: Field %q is not under %q", what, e.Field, root)
		}
		if !detailStartsWithPath(e) {
			t.Fatalf("%s: Detail %q does not start with its Field %q", what, e.Detail, e.Field)
		}
	}
}

// splitList turns a fuzzed string into a list (comma-separated; empty string is nil).
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func fuzzMethod(b byte) pipesv1.AuthMethod {
	switch b % 4 {
	case 0:
		return pipesv1.AuthMethodAPIKey
	case 1:
		return pipesv1.AuthMethodOAuth
	case 2:
		return ""
	default:
		return "Basic"
	}
}

func fuzzCredentialsMode(b byte) pipesv1.OAuthCredentialsMode {
	switch b % 3 {
	case 0:
		return pipesv1.OAuthCredentialsApplication
	case 1:
		return pipesv1.OAuthCredentialsOrganization
	default:
		return ""
	}
}

// validID restates the identifier rule independently: non-empty, at most MaxIDLength
// bytes, no surrounding whitespace, no ASCII control characters.
func validID(id string) bool {
	return id != "" && len(id) <= validation.MaxIDLength && strings.TrimSpace(id) == id &&
		!strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func hasErrorAt(errs field.ErrorList, path string) bool {
	for _, e := range errs {
		if e.Field == path {
			return true
		}
	}
	return false
}

func FuzzProvider(f *testing.F) {
	f.Add(byte(0), byte(0), true, "OpenAI", "A description.", "https://a.example/auth", "https://a.example/token", "client", true, "repo,read:user", "access_type", byte(0))
	f.Add(byte(1), byte(1), true, "GitHub", "", "https://github.com/login/oauth/authorize", "http://127.0.0.1:8080/token", "Iv1.x", true, "repo", "prompt", byte(0))
	f.Add(byte(1), byte(0), false, "", "", "", "", "", false, "", "", byte(1))
	f.Add(byte(0), byte(1), true, "x", strings.Repeat("d", 2049), "http://example.com", "/relative", "", false, "a,a, b,", "STATE", byte(2))
	f.Add(byte(3), byte(2), true, "\x00", "\xff\xfe", "https://[::1]:9/x", "http://[::1]/t", "\n", true, "\t,\n", "redirect_uri", byte(1))
	f.Add(byte(1), byte(1), true, "n", "d", "://", "https://", "c", true, ",,,", "scope", byte(0))
	f.Fuzz(func(t *testing.T, method, newMethod byte, hasOAuth bool, displayName, description, authURL, tokenURL, clientID string,
		hasSecret bool, scopes, paramKey string, mode byte) {
		p := &pipesv1.Provider{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
			Spec:       pipesv1.ProviderSpec{Method: fuzzMethod(method), DisplayName: displayName, Description: description},
		}
		if hasOAuth {
			p.Spec.OAuth = &pipesv1.OAuthSpec{
				AuthorizationURL: authURL, TokenURL: tokenURL, ClientID: clientID,
				Scopes: splitList(scopes), CredentialsMode: fuzzCredentialsMode(mode),
				AuthorizationParams: map[string]string{paramKey: "v"},
			}
			if hasSecret {
				p.Spec.OAuth.ClientSecretRef = &pipesv1.SecretKeyReference{Name: "s", Key: "k"}
			}
		}
		errs := validation.Provider(p)
		checkErrors(t, "Provider", "spec", errs)

		// Rules that must hold whatever else is wrong.
		if p.Spec.Method == pipesv1.AuthMethodAPIKey && hasOAuth != hasErrorAt(errs, "spec.oauth") {
			t.Fatalf("APIKey provider with oauth=%v: errors %v", hasOAuth, errs)
		}
		if p.Spec.Method == pipesv1.AuthMethodOAuth && !hasOAuth && !hasErrorAt(errs, "spec.oauth") {
			t.Fatalf("OAuth provider without oauth accepted: %v", errs)
		}
		if (len(description) > validation.MaxDescriptionLength) != hasErrorAt(errs, "spec.description") {
			t.Fatalf("description of %d bytes: errors %v", len(description), errs)
		}

		// Update: the Provider's own errors, preceded by the method error iff it changed.
		n := p.DeepCopy()
		n.Spec.Method = fuzzMethod(newMethod)
		uerrs := validation.ProviderUpdate(p, n)
		checkErrors(t, "ProviderUpdate", "spec", uerrs)
		own := validation.Provider(n)
		if p.Spec.Method != n.Spec.Method {
			if len(uerrs) != len(own)+1 || uerrs[0].Field != "spec.method" ||
				uerrs[0].Detail != fmt.Sprintf("spec.method is immutable (was %s, requested %s): a provider is either OAuth or API key, fixed when it is created; delete this Provider and create it again with the method you want", p.Spec.Method, n.Spec.Method) {
				t.Fatalf("method change %q -> %q: errors %v", p.Spec.Method, n.Spec.Method, uerrs)
			}
		} else if len(uerrs) != len(own) {
			t.Fatalf("no method change: update errors %v, own errors %v", uerrs, own)
		}
	})
}

func FuzzOrganizationProvider(f *testing.F) {
	f.Add("openai", "org_9", true, byte(0), "", false, "", byte(0), true, "org_9", "openai")
	f.Add("github", "org_9", true, byte(1), "repo", true, "repo,read:user", byte(1), false, "org_10", "github")
	f.Add("github", "", true, byte(1), "admin,admin,repo", true, "repo", byte(0), true, "org", "gitlab")
	f.Add("x", " org ", false, byte(2), "a b", false, "", byte(2), false, "\x00", "")
	f.Add("openai", strings.Repeat("o", 257), true, byte(0), "read", true, "", byte(0), true, "", "openai")
	f.Fuzz(func(t *testing.T, providerName, org string, providerExists bool, method byte, scopes string, hasCreds bool,
		providerScopes string, mode byte, enabled bool, newOrg, newProvider string) {
		op := &pipesv1.OrganizationProvider{
			ObjectMeta: metav1.ObjectMeta{Name: "op", Namespace: "ns"},
			Spec: pipesv1.OrganizationProviderSpec{
				ProviderRef: pipesv1.LocalObjectReference{Name: providerName}, OrganizationID: org,
				Enabled: &enabled, Scopes: splitList(scopes),
			},
		}
		if hasCreds {
			op.Spec.Credentials = &pipesv1.OrganizationOAuthCredentials{ClientID: "c", ClientSecretRef: pipesv1.SecretKeyReference{Name: "s", Key: "k"}}
		}
		var provider *pipesv1.Provider
		if providerExists {
			provider = &pipesv1.Provider{
				ObjectMeta: metav1.ObjectMeta{Name: providerName, Namespace: "ns"},
				Spec:       pipesv1.ProviderSpec{Method: fuzzMethod(method)},
			}
			if provider.Spec.Method == pipesv1.AuthMethodOAuth {
				provider.Spec.OAuth = &pipesv1.OAuthSpec{Scopes: splitList(providerScopes), CredentialsMode: fuzzCredentialsMode(mode)}
			}
		}
		errs := validation.OrganizationProvider(op, provider)
		checkErrors(t, "OrganizationProvider", "spec", errs)
		if (provider == nil) != hasErrorAt(errs, "spec.providerRef.name") {
			t.Fatalf("provider exists=%v: errors %v", provider != nil, errs)
		}
		if validID(org) == hasErrorAt(errs, "spec.organizationID") {
			t.Fatalf("organizationID %q: errors %v", org, errs)
		}
		if provider != nil && provider.Spec.Method == pipesv1.AuthMethodAPIKey {
			if (len(op.Spec.Scopes) > 0) != hasErrorAt(errs, "spec.scopes") || hasCreds != hasErrorAt(errs, "spec.credentials") {
				t.Fatalf("API key provider, scopes %q creds %v: errors %v", op.Spec.Scopes, hasCreds, errs)
			}
			for _, e := range errs {
				if (e.Field == "spec.scopes" || e.Field == "spec.credentials") && !strings.Contains(e.Detail, validation.APIKeyProviderOverrides) {
					t.Fatalf("API key override error without the shared sentence: %q", e.Detail)
				}
			}
		}

		if provider != nil {
			body := validation.OrganizationSettings(provider, op.Spec.Scopes, hasCreds, field.NewPath("body"))
			checkErrors(t, "OrganizationSettings", "body", body)
		}

		n := op.DeepCopy()
		n.Spec.OrganizationID, n.Spec.ProviderRef.Name = newOrg, newProvider
		uerrs := validation.OrganizationProviderUpdate(op, n)
		checkErrors(t, "OrganizationProviderUpdate", "spec", uerrs)
		if (org != newOrg) != hasErrorAt(uerrs, "spec.organizationID") || (providerName != newProvider) != hasErrorAt(uerrs, "spec.providerRef") {
			t.Fatalf("update %q/%q -> %q/%q: errors %v", providerName, org, newProvider, newOrg, uerrs)
		}
	})
}

func FuzzConnectedAccount(f *testing.F) {
	f.Add("openai", "user_123", "", true, byte(0), true, true, "user_123", "", "openai")
	f.Add("github", "user_123", "org_9", true, byte(1), true, true, "user_456", "org_9", "github")
	f.Add("github", "", "org_9", false, byte(1), true, false, "u", "", "x")
	f.Add("x", " u\n", "\x7f", true, byte(3), false, false, "", "org", "")
	f.Add("openai", strings.Repeat("u", 300), strings.Repeat("o", 256), true, byte(0), false, false, "u", "o", "openai")
	f.Fuzz(func(t *testing.T, providerName, user, org string, providerExists bool, method byte, hasAPIKey, hasRef bool,
		newUser, newOrg, newProvider string) {
		ca := &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: "ns"},
			Spec: pipesv1.ConnectedAccountSpec{
				ProviderRef: pipesv1.LocalObjectReference{Name: providerName}, UserID: user, OrganizationID: org,
			},
		}
		if hasAPIKey {
			ca.Spec.APIKey = &pipesv1.APIKeySource{}
			if hasRef {
				ca.Spec.APIKey.SecretKeyRef = &pipesv1.SecretKeyReference{Name: "s", Key: "k"}
			}
		}
		var provider *pipesv1.Provider
		if providerExists {
			provider = &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Name: providerName, Namespace: "ns"}, Spec: pipesv1.ProviderSpec{Method: fuzzMethod(method)}}
		}
		errs := validation.ConnectedAccount(ca, provider)
		checkErrors(t, "ConnectedAccount", "spec", errs)
		if (provider == nil) != hasErrorAt(errs, "spec.providerRef.name") {
			t.Fatalf("provider exists=%v: errors %v", provider != nil, errs)
		}
		mismatch := provider != nil && provider.Spec.Method == pipesv1.AuthMethodOAuth && hasAPIKey
		if mismatch != hasErrorAt(errs, "spec.apiKey") {
			t.Fatalf("OAuth provider with apiKey=%v: errors %v", hasAPIKey, errs)
		}
		if (hasAPIKey && !hasRef) != hasErrorAt(errs, "spec.apiKey.secretKeyRef") {
			t.Fatalf("apiKey=%v secretKeyRef=%v: errors %v", hasAPIKey, hasRef, errs)
		}
		if validID(user) == hasErrorAt(errs, "spec.userID") {
			t.Fatalf("userID %q: errors %v", user, errs)
		}
		if (org == "" || validID(org)) == hasErrorAt(errs, "spec.organizationID") {
			t.Fatalf("organizationID %q: errors %v", org, errs)
		}

		n := ca.DeepCopy()
		n.Spec.UserID, n.Spec.OrganizationID, n.Spec.ProviderRef.Name = newUser, newOrg, newProvider
		uerrs := validation.ConnectedAccountUpdate(ca, n)
		checkErrors(t, "ConnectedAccountUpdate", "spec", uerrs)
		if (user != newUser) != hasErrorAt(uerrs, "spec.userID") ||
			(org != newOrg) != hasErrorAt(uerrs, "spec.organizationID") ||
			(providerName != newProvider) != hasErrorAt(uerrs, "spec.providerRef") {
			t.Fatalf("update errors %v", uerrs)
		}
	})
}

func FuzzAPIKey(f *testing.F) {
	f.Add([]byte("sk-live-0123456789abcdef"))
	f.Add([]byte(""))
	f.Add([]byte("sk\n"))
	f.Add([]byte(" sk"))
	f.Add([]byte("sk\x00key"))
	f.Add([]byte("sk\x7fkey"))
	f.Add([]byte("ключ-секрет-АБВГ"))
	f.Add([]byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4"))
	f.Add([]byte(strings.Repeat("k", validation.MaxAPIKeyLength+1)))
	f.Fuzz(func(t *testing.T, key []byte) {
		path := field.NewPath("body", "apiKey")
		errs := validation.APIKey(path, key)
		checkErrors(t, "APIKey", "body.apiKey", errs)
		if len(errs) > 1 {
			t.Fatalf("more than one error: %v", errs)
		}
		// Every message is one of the fixed sentences (with only the length filled in),
		// so it can never contain the key; the key is never the BadValue either.
		allowed := map[string]bool{
			"body.apiKey is empty; supply the API key issued by the provider":                                                                        true,
			fmt.Sprintf("body.apiKey is %d bytes long; API keys may be at most %d bytes", len(key), validation.MaxAPIKeyLength):                      true,
			"body.apiKey has leading or trailing whitespace (often a trailing newline from `echo`); store the key without it, e.g. with `printf %s`": true,
			"body.apiKey contains control characters; an API key is a single line of printable text":                                                 true,
		}
		for _, e := range errs {
			if !allowed[e.Detail] {
				t.Fatalf("unexpected message %q", e.Detail)
			}
			if e.BadValue != nil {
				t.Fatalf("BadValue %v is set; it could leak the key", e.BadValue)
			}
		}
		s := string(key)
		valid := len(key) > 0 && len(key) <= validation.MaxAPIKeyLength && strings.TrimSpace(s) == s &&
			!strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
		if valid != (len(errs) == 0) {
			t.Fatalf("key %q: valid=%v but errors %v", key, valid, errs)
		}

		last4 := validation.Last4(key)
		runes := utf8.RuneCount(key)
		switch {
		case runes < 12 && last4 != "":
			t.Fatalf("Last4 of a %d-character key is %q, want empty", runes, last4)
		case runes >= 12 && utf8.RuneCountInString(last4) != 4:
			t.Fatalf("Last4 of a %d-character key is %q, want four characters", runes, last4)
		case runes >= 12 && utf8.Valid(key) && !strings.HasSuffix(s, last4):
			t.Fatalf("Last4(%q) = %q is not its suffix", key, last4)
		}
	})
}
