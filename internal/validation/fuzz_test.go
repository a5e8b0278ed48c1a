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

// unprintableRune restates the control-character rule independently: the C0 and C1
// control ranges, DEL, and the Unicode line and paragraph separators.
func unprintableRune(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0x2028 || r == 0x2029
}

// validID restates the identifier rule independently: non-empty valid UTF-8, at most
// MaxIDLength characters (not bytes), no surrounding whitespace, nothing unprintable.
func validID(id string) bool {
	return id != "" && utf8.ValidString(id) && len([]rune(id)) <= validation.MaxIDLength && strings.TrimSpace(id) == id &&
		!strings.ContainsFunc(id, unprintableRune)
}

// checkID checks the error reported at path for id (nil when none) against the order of
// the identifier rules; invalid UTF-8 and control characters are never echoed back.
func checkID(t *testing.T, path, id string, required bool, errs field.ErrorList) {
	t.Helper()
	var got []*field.Error
	for _, e := range errs {
		if e.Field == path {
			got = append(got, e)
		}
	}
	if id == "" && !required || validID(id) {
		if len(got) != 0 {
			t.Fatalf("%s %q: unexpected errors %v", path, id, got)
		}
		return
	}
	if len(got) != 1 {
		t.Fatalf("%s %q: want one error, got %v", path, id, got)
	}
	e := got[0]
	switch {
	case id == "":
		if e.Type != field.ErrorTypeRequired {
			t.Fatalf("%s empty: %v", path, e)
		}
	case !utf8.ValidString(id):
		if e.Detail != path+" is not valid UTF-8 text" || e.BadValue != nil {
			t.Fatalf("%s %q not valid UTF-8: %#v", path, id, e)
		}
	case len([]rune(id)) > validation.MaxIDLength:
		n := len([]rune(id))
		if e.Type != field.ErrorTypeTooLong || e.Detail != fmt.Sprintf("%s is %d characters long; at most %d are allowed", path, n, validation.MaxIDLength) {
			t.Fatalf("%s of %d characters: %v", path, n, e)
		}
	case strings.TrimSpace(id) != id:
		if e.Detail != path+" has leading or trailing whitespace; remove it" {
			t.Fatalf("%s %q: %v", path, id, e)
		}
	default:
		if e.Detail != path+" contains control characters; use printable characters only" || e.BadValue != nil {
			t.Fatalf("%s %q: %#v", path, id, e)
		}
	}
}

// badScope restates the scope rule independently: a scope is one non-empty
// whitespace-free field.
func badScope(s string) bool {
	f := strings.Fields(s)
	return len(f) != 1 || f[0] != s
}

// checkScopes checks that exactly the bad scopes are reported as Invalid at path[i].
func checkScopes(t *testing.T, path string, scopes []string, errs field.ErrorList) {
	t.Helper()
	for i, s := range scopes {
		p := fmt.Sprintf("%s[%d]", path, i)
		if badScope(s) != hasErrorOf(errs, field.ErrorTypeInvalid, p) {
			t.Fatalf("scope %q: bad=%v, errors %v", s, badScope(s), errs)
		}
	}
}

func hasErrorAt(errs field.ErrorList, path string) bool {
	for _, e := range errs {
		if e.Field == path {
			return true
		}
	}
	return false
}

func hasErrorOf(errs field.ErrorList, typ field.ErrorType, path string) bool {
	for _, e := range errs {
		if e.Field == path && e.Type == typ {
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
	f.Add(byte(0), byte(0), false, "é", strings.Repeat("é", 1500), "", "", "", false, "", "", byte(0))
	f.Add(byte(0), byte(0), false, "é", strings.Repeat("é", 2049), "", "", "", false, "", "", byte(0))
	f.Add(byte(1), byte(1), true, "n", "\u2028", "https://a.example/a", "https://a.example/t", "c", true, "a\vb,c\u00a0d,e\u2028f,g\u3000h,i\u0085j,ok", "p", byte(0))
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
		// Counted in characters (each byte of invalid UTF-8 counting as one).
		if n := len([]rune(description)); (n > validation.MaxDescriptionLength) != hasErrorAt(errs, "spec.description") {
			t.Fatalf("description of %d characters (%d bytes): errors %v", n, len(description), errs)
		} else if n > validation.MaxDescriptionLength {
			for _, e := range errs {
				if e.Field == "spec.description" && e.Detail != fmt.Sprintf("spec.description is %d characters long; shorten it to at most %d", n, validation.MaxDescriptionLength) {
					t.Fatalf("description of %d characters: %v", n, e)
				}
			}
		}
		if p.Spec.Method == pipesv1.AuthMethodOAuth && hasOAuth {
			checkScopes(t, "spec.oauth.scopes", p.Spec.OAuth.Scopes, errs)
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
	f.Add("openai", strings.Repeat("é", 200), true, byte(0), "", false, "", byte(0), true, strings.Repeat("é", 200), "openai")
	f.Add("openai", strings.Repeat("é", 257), true, byte(0), "", false, "", byte(0), true, "o", "openai")
	f.Add("github", "org\xff", true, byte(1), "a\vb,c\u00a0d", false, "a\vb,c\u00a0d", byte(0), true, "org\u2028", "github")
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
		checkID(t, "spec.organizationID", org, true, errs)
		if provider != nil && provider.Spec.Method != pipesv1.AuthMethodAPIKey {
			checkScopes(t, "spec.scopes", op.Spec.Scopes, errs)
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
			body := validation.OrganizationSettings(provider, op.Spec.Scopes, hasCreds, field.NewPath("body", "scopes"), field.NewPath("body", "credentials"))
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
	f.Add("openai", strings.Repeat("é", 200), strings.Repeat("é", 257), true, byte(0), true, true, "u", "o", "openai")
	f.Add("openai", "user\xc3", "org\u2029x", true, byte(0), false, false, "u", "o", "openai")
	f.Add("openai", "u\u0085v", "\xed\xa0\x80", true, byte(1), true, false, "u", "o", "openai")
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
		// spec.apiKey carries both the auth method mismatch (Forbidden) and the missing source (Required).
		mismatch := provider != nil && provider.Spec.Method == pipesv1.AuthMethodOAuth && hasAPIKey
		if mismatch != hasErrorOf(errs, field.ErrorTypeForbidden, "spec.apiKey") {
			t.Fatalf("OAuth provider with apiKey=%v: errors %v", hasAPIKey, errs)
		}
		if (hasAPIKey && !hasRef) != hasErrorOf(errs, field.ErrorTypeRequired, "spec.apiKey") {
			t.Fatalf("apiKey=%v secretKeyRef=%v: errors %v", hasAPIKey, hasRef, errs)
		}
		if hasErrorAt(errs, "spec.apiKey.secretKeyRef") {
			t.Fatalf("error reported at spec.apiKey.secretKeyRef: %v", errs)
		}
		checkID(t, "spec.userID", user, true, errs)
		checkID(t, "spec.organizationID", org, false, errs)

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
	f.Add([]byte("sk-live-\u2028-0123456789"))
	f.Add([]byte("sk-live-\u2029-0123456789"))
	f.Add([]byte("sk-live-\u0085-0123456789"))
	f.Add([]byte("sk-live-0123456789\xe2\x80"))
	f.Add([]byte(" \xff "))
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
			"body.apiKey is not valid UTF-8 text; an API key is a single line of printable text":                                                     true,
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
		valid := len(key) > 0 && len(key) <= validation.MaxAPIKeyLength && utf8.Valid(key) && strings.TrimSpace(s) == s &&
			!strings.ContainsFunc(s, unprintableRune)
		if valid != (len(errs) == 0) {
			t.Fatalf("key %q: valid=%v but errors %v", key, valid, errs)
		}
		// Invalid UTF-8 is reported as such whenever the key's length is acceptable.
		if len(key) > 0 && len(key) <= validation.MaxAPIKeyLength && !utf8.Valid(key) &&
			(len(errs) != 1 || errs[0].Detail != "body.apiKey is not valid UTF-8 text; an API key is a single line of printable text") {
			t.Fatalf("key %q is not valid UTF-8: errors %v", key, errs)
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
