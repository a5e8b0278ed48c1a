package validation

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation/field"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Limits on user input.
const (
	MaxDescriptionLength = 2048
	MaxAPIKeyLength      = 8192
	MaxIDLength          = 256
)

var (
	specPath   = field.NewPath("spec")
	methodPath = specPath.Child("method")
	oauthPath  = specPath.Child("oauth")
)

// problem builds a field.Error whose Detail is the full sentence shown to users.
func problem(t field.ErrorType, path *field.Path, value any, format string, args ...any) *field.Error {
	return &field.Error{Type: t, Field: path.String(), BadValue: value, Detail: fmt.Sprintf(format, args...)}
}

// Message joins the details of errs into one message for a user.
func Message(errs field.ErrorList) string {
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		msgs = append(msgs, e.Detail)
	}
	return strings.Join(msgs, "; ")
}

// Provider checks a Provider's spec on its own.
func Provider(p *pipesv1.Provider) field.ErrorList {
	var errs field.ErrorList
	s := &p.Spec
	switch s.Method {
	case pipesv1.AuthMethodAPIKey:
		if s.OAuth != nil {
			errs = append(errs, problem(field.ErrorTypeForbidden, oauthPath, nil,
				"spec.oauth is forbidden when spec.method is APIKey: API key providers take only description, displayName and enabled; each user supplies their own key when they connect"))
		}
	case pipesv1.AuthMethodOAuth:
		if s.OAuth == nil {
			errs = append(errs, problem(field.ErrorTypeRequired, oauthPath, nil,
				"spec.oauth is required when spec.method is OAuth: set its authorizationURL, tokenURL and client"))
		} else {
			errs = append(errs, oauth(s.OAuth)...)
		}
	default:
		errs = append(errs, problem(field.ErrorTypeNotSupported, methodPath, string(s.Method),
			"spec.method must be OAuth or APIKey, not %q", s.Method))
	}
	if n := utf8.RuneCountInString(s.Description); n > MaxDescriptionLength {
		errs = append(errs, problem(field.ErrorTypeTooLong, specPath.Child("description"), n,
			"spec.description is %d characters long; shorten it to at most %d", n, MaxDescriptionLength))
	}
	return errs
}

// reservedAuthorizationParams are set by the OAuth flow itself; overriding them would break it.
var reservedAuthorizationParams = []string{"client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method"}

func oauth(o *pipesv1.OAuthSpec) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, endpoint(oauthPath.Child("authorizationURL"), o.AuthorizationURL)...)
	errs = append(errs, endpoint(oauthPath.Child("tokenURL"), o.TokenURL)...)
	if o.CredentialsMode != pipesv1.OAuthCredentialsOrganization {
		if o.ClientID == "" {
			errs = append(errs, problem(field.ErrorTypeRequired, oauthPath.Child("clientID"), nil,
				"spec.oauth.clientID is required when credentialsMode is Application; with credentialsMode Organization each organization supplies its own client"))
		}
		if o.ClientSecretRef == nil {
			errs = append(errs, problem(field.ErrorTypeRequired, oauthPath.Child("clientSecretRef"), nil,
				"spec.oauth.clientSecretRef is required when credentialsMode is Application: name the Secret key holding the client secret"))
		}
	}
	errs = append(errs, scopeList(oauthPath.Child("scopes"), o.Scopes)...)
	for _, k := range sortedKeys(o.AuthorizationParams) {
		if slices.Contains(reservedAuthorizationParams, strings.ToLower(k)) {
			errs = append(errs, problem(field.ErrorTypeForbidden, oauthPath.Child("authorizationParams").Key(k), k,
				"spec.oauth.authorizationParams[%s] is set by the OAuth flow itself; remove it (scopes go in spec.oauth.scopes)", k))
		}
	}
	return errs
}

// endpoint accepts an absolute https URL, or http for loopback hosts (tests).
func endpoint(path *field.Path, raw string) field.ErrorList {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, raw, "%s must be an absolute URL such as https://provider.example/oauth/token", path)}
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && slices.Contains([]string{"localhost", "127.0.0.1", "::1"}, u.Hostname()):
	default:
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, raw, "%s must use https (plain http is accepted only for localhost, 127.0.0.1 and ::1)", path)}
	}
	return nil
}

func scopeList(path *field.Path, scopes []string) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, s := range scopes {
		switch {
		case strings.TrimSpace(s) == "" || strings.ContainsFunc(s, unicode.IsSpace):
			errs = append(errs, problem(field.ErrorTypeInvalid, path.Index(i), s, "%s must be a single non-empty scope without spaces", path.Index(i)))
		case seen[s]:
			errs = append(errs, problem(field.ErrorTypeDuplicate, path.Index(i), s, "%s repeats scope %q; list each scope once", path.Index(i), s))
		}
		seen[s] = true
	}
	return errs
}

// ProviderUpdate checks what may change between two versions of a Provider.
func ProviderUpdate(oldP, newP *pipesv1.Provider) field.ErrorList {
	errs := Provider(newP)
	if oldP.Spec.Method != newP.Spec.Method {
		errs = append(field.ErrorList{problem(field.ErrorTypeForbidden, methodPath, string(newP.Spec.Method),
			"spec.method is immutable (was %s, requested %s): a provider is either OAuth or API key, fixed when it is created; delete this Provider and create it again with the method you want",
			oldP.Spec.Method, newP.Spec.Method)}, errs...)
	}
	return errs
}

// APIKeyProviderOverrides is the message for scopes or credentials on an API key provider's OrganizationProvider.
const APIKeyProviderOverrides = "API key providers have no credentials or scopes to override: the key is supplied per user when they connect; only spec.enabled can be set"

// OrganizationProvider checks an OrganizationProvider against its Provider. provider is
// nil when it does not exist.
func OrganizationProvider(op *pipesv1.OrganizationProvider, provider *pipesv1.Provider) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, identifier(specPath.Child("organizationID"), op.Spec.OrganizationID, true)...)
	if provider == nil {
		return append(errs, providerNotFound(op.Namespace, op.Spec.ProviderRef.Name))
	}
	return append(errs, OrganizationSettings(provider, op.Spec.Scopes, op.Spec.Credentials != nil, specPath.Child("scopes"), specPath.Child("credentials"))...)
}

// OrganizationSettings checks an organization's scopes and OAuth client against its
// Provider; scopesPath and credentialsPath say where those fields live (spec for an
// OrganizationProvider, the request body for the backend API).
func OrganizationSettings(provider *pipesv1.Provider, scopes []string, hasCredentials bool, scopesPath, credentialsPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if provider.Spec.Method == pipesv1.AuthMethodAPIKey {
		if len(scopes) > 0 {
			errs = append(errs, problem(field.ErrorTypeForbidden, scopesPath, scopes, "%s: %s", scopesPath, APIKeyProviderOverrides))
		}
		if hasCredentials {
			errs = append(errs, problem(field.ErrorTypeForbidden, credentialsPath, nil, "%s: %s", credentialsPath, APIKeyProviderOverrides))
		}
		return errs
	}
	errs = append(errs, scopeList(scopesPath, scopes)...)
	var allowed []string
	if provider.Spec.OAuth != nil {
		allowed = provider.Spec.OAuth.Scopes
	}
	var extra []string
	for _, s := range scopes {
		if !slices.Contains(allowed, s) && !slices.Contains(extra, s) {
			extra = append(extra, s)
		}
	}
	if len(extra) > 0 {
		errs = append(errs, problem(field.ErrorTypeForbidden, scopesPath, extra,
			"%s may only narrow Provider %q's scopes; not allowed: %s (allowed: %s)",
			scopesPath, provider.Name, strings.Join(extra, ", "), orNone(allowed)))
	}
	if hasCredentials && (provider.Spec.OAuth == nil || provider.Spec.OAuth.CredentialsMode != pipesv1.OAuthCredentialsOrganization) {
		errs = append(errs, problem(field.ErrorTypeForbidden, credentialsPath, nil,
			"%s is allowed only when Provider %q has spec.oauth.credentialsMode Organization; this provider uses the application's OAuth client",
			credentialsPath, provider.Name))
	}
	return errs
}

// OrganizationProviderUpdate checks what may change between two versions.
func OrganizationProviderUpdate(oldOP, newOP *pipesv1.OrganizationProvider) field.ErrorList {
	var errs field.ErrorList
	if oldOP.Spec.ProviderRef != newOP.Spec.ProviderRef {
		errs = append(errs, problem(field.ErrorTypeForbidden, specPath.Child("providerRef"), newOP.Spec.ProviderRef.Name,
			"spec.providerRef is immutable (was %q): create another OrganizationProvider for another provider", oldOP.Spec.ProviderRef.Name))
	}
	if oldOP.Spec.OrganizationID != newOP.Spec.OrganizationID {
		errs = append(errs, problem(field.ErrorTypeForbidden, specPath.Child("organizationID"), newOP.Spec.OrganizationID,
			"spec.organizationID is immutable (was %q): create another OrganizationProvider for another organization", oldOP.Spec.OrganizationID))
	}
	return errs
}

// AuthMethodMismatchCode is the backend API's error code for a credential that does not fit the provider's method.
const AuthMethodMismatchCode = "auth_method_mismatch"

// APIKeyNeedsOneSource is the rule that spec.apiKey names exactly one source (also the
// CRD's CEL message).
const APIKeyNeedsOneSource = "spec.apiKey needs exactly one source: set either spec.apiKey.secretKeyRef or spec.apiKey.sealed (made with kubectl pipes seal), not both; or remove spec.apiKey to set the key through the backend API" //nolint:gosec // G101: a rule sentence naming the field, not a credential

// SealedValue checks the structure of a sealed API key: what kubectl pipes seal writes.
// Whether it opens, and for which account, only the operator can tell (the reconciler
// says so in the account's conditions). The value is never quoted: it is not secret, but
// it is long and says nothing to a reader.
func SealedValue(path *field.Path, value string) field.ErrorList {
	switch {
	case len(value) > sealing.MaxSealedLength:
		return field.ErrorList{problem(field.ErrorTypeTooLong, path, nil,
			"%s is %d characters long; a sealed API key is at most %d: reseal the key with kubectl pipes seal", path, len(value), sealing.MaxSealedLength)}
	case !strings.HasPrefix(value, sealing.Prefix):
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil,
			"%s is not a sealed value: it must start with %q, as kubectl pipes seal writes it (to take a key from a Secret, use spec.apiKey.secretKeyRef)", path, sealing.Prefix)}
	case len(value) < sealing.MinSealedLength:
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil,
			"%s is %d characters long, too short for a sealed API key (at least %d): it was cut; reseal the key with kubectl pipes seal", path, len(value), sealing.MinSealedLength)}
	}
	if _, err := sealing.Parse(value); err != nil {
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil,
			"%s is not valid base64 after %q, or is not a sealed value: it was cut or edited; reseal the key with kubectl pipes seal", path, sealing.Prefix)}
	}
	return nil
}

// ConnectedAccount checks a ConnectedAccount against its Provider (nil when it does not exist).
func ConnectedAccount(ca *pipesv1.ConnectedAccount, provider *pipesv1.Provider) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, identifier(specPath.Child("userID"), ca.Spec.UserID, true)...)
	errs = append(errs, identifier(specPath.Child("organizationID"), ca.Spec.OrganizationID, false)...)
	if k := ca.Spec.APIKey; k != nil {
		if (k.SecretKeyRef != nil) == (k.Sealed != "") {
			errs = append(errs, problem(field.ErrorTypeRequired, specPath.Child("apiKey"), nil, "%s", APIKeyNeedsOneSource))
		}
		if k.Sealed != "" {
			errs = append(errs, SealedValue(specPath.Child("apiKey", "sealed"), k.Sealed)...)
		}
	}
	if provider == nil {
		return append(errs, providerNotFound(ca.Namespace, ca.Spec.ProviderRef.Name))
	}
	if provider.Spec.Method == pipesv1.AuthMethodOAuth && ca.Spec.APIKey != nil {
		errs = append(errs, problem(field.ErrorTypeForbidden, specPath.Child("apiKey"), nil,
			"spec.apiKey: %s: Provider %q uses OAuth, so its accounts connect through the OAuth flow, not with an API key; remove spec.apiKey",
			AuthMethodMismatchCode, provider.Name))
	}
	return errs
}

// ConnectedAccountUpdate checks what may change between two versions.
func ConnectedAccountUpdate(oldCA, newCA *pipesv1.ConnectedAccount) field.ErrorList {
	var errs field.ErrorList
	if oldCA.Spec.ProviderRef != newCA.Spec.ProviderRef {
		errs = append(errs, problem(field.ErrorTypeForbidden, specPath.Child("providerRef"), newCA.Spec.ProviderRef.Name,
			"spec.providerRef is immutable (was %q): create another ConnectedAccount for another provider", oldCA.Spec.ProviderRef.Name))
	}
	if oldCA.Spec.UserID != newCA.Spec.UserID {
		errs = append(errs, problem(field.ErrorTypeForbidden, specPath.Child("userID"), newCA.Spec.UserID,
			"spec.userID is immutable (was %q): create another ConnectedAccount for another user", oldCA.Spec.UserID))
	}
	if oldCA.Spec.OrganizationID != newCA.Spec.OrganizationID {
		errs = append(errs, problem(field.ErrorTypeForbidden, specPath.Child("organizationID"), newCA.Spec.OrganizationID,
			"spec.organizationID is immutable (was %q): create another ConnectedAccount for another organization", oldCA.Spec.OrganizationID))
	}
	return errs
}

// SourceSecretNotReadable is the rule that a ConnectedAccount may name only a Secret its
// author may read: otherwise the operator, which can read every Secret, would hand the
// author a value RBAC keeps from them.
func SourceSecretNotReadable(user, namespace, name string) *field.Error {
	return SecretNotReadable(specPath.Child("apiKey", "secretKeyRef", "name"), "ConnectedAccount", "a key source", user, namespace, name)
}

// SecretNotReadable is the rule that whoever names a Secret for the operator to read (at
// path, in a kind) may get it: the operator would otherwise read it on their behalf.
func SecretNotReadable(path *field.Path, kind, as, user, namespace, name string) *field.Error {
	return problem(field.ErrorTypeForbidden, path, name,
		"%s: %s may not get Secret %q in namespace %q, so it may not name it as %s: the operator would read the Secret on its behalf; "+
			"grant it get on secrets (resourceNames: [%s]) in that namespace, or have someone who may read the Secret create the %s",
		path, user, name, namespace, as, name, kind)
}

// DuplicateOrganizationProvider is the rule of at most one OrganizationProvider per
// provider and organization; existing is the one that already configures them.
func DuplicateOrganizationProvider(op *pipesv1.OrganizationProvider, existing string) *field.Error {
	return problem(field.ErrorTypeDuplicate, specPath.Child("organizationID"), op.Spec.OrganizationID,
		"spec.organizationID: OrganizationProvider %q already configures Provider %q for organization %q; edit that one instead",
		existing, op.Spec.ProviderRef.Name, op.Spec.OrganizationID)
}

// DuplicateConnectedAccount is the rule of one ConnectedAccount per provider, user and
// organization; existing is the one that already connects them.
func DuplicateConnectedAccount(ca *pipesv1.ConnectedAccount, existing string) *field.Error {
	return problem(field.ErrorTypeDuplicate, specPath.Child("userID"), ca.Spec.UserID,
		"spec.userID: ConnectedAccount %q already connects user %q%s to Provider %q; update that one instead (one account per provider, user and organization)",
		existing, ca.Spec.UserID, inOrganization(ca.Spec.OrganizationID), ca.Spec.ProviderRef.Name)
}

// inOrganization is " in organization %q", or nothing without one (as credential.InOrganization).
func inOrganization(organization string) string {
	if organization == "" {
		return ""
	}
	return fmt.Sprintf(" in organization %q", organization)
}

func providerNotFound(namespace, name string) *field.Error {
	return problem(field.ErrorTypeNotFound, specPath.Child("providerRef", "name"), name,
		"spec.providerRef.name: Provider %q not found in namespace %q; create the Provider first (kubectl get providers -n %s lists them)", name, namespace, namespace)
}

// identifier checks a user or organization ID: printable, no surrounding whitespace.
func identifier(path *field.Path, id string, required bool) field.ErrorList {
	switch {
	case id == "" && required:
		return field.ErrorList{problem(field.ErrorTypeRequired, path, nil, "%s is required", path)}
	case id == "":
		return nil
	case !utf8.ValidString(id):
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil, "%s is not valid UTF-8 text", path)}
	case utf8.RuneCountInString(id) > MaxIDLength:
		n := utf8.RuneCountInString(id)
		return field.ErrorList{problem(field.ErrorTypeTooLong, path, n, "%s is %d characters long; at most %d are allowed", path, n, MaxIDLength)}
	case strings.TrimSpace(id) != id:
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, id, "%s has leading or trailing whitespace; remove it", path)}
	case strings.IndexFunc(id, unprintable) >= 0:
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil, "%s contains control characters; use printable characters only", path)}
	}
	return nil
}

// UserID and OrganizationID check identifiers that arrive through the backend API.
func UserID(path *field.Path, id string) field.ErrorList { return identifier(path, id, true) }

// OrganizationID checks an optional organization identifier.
func OrganizationID(path *field.Path, id string) field.ErrorList { return identifier(path, id, false) }

// APIKey checks a key a user supplies. Its messages never contain the key.
func APIKey(path *field.Path, key []byte) field.ErrorList {
	switch {
	case len(key) == 0:
		return field.ErrorList{problem(field.ErrorTypeRequired, path, nil, "%s is empty; supply the API key issued by the provider", path)}
	case len(key) > MaxAPIKeyLength:
		return field.ErrorList{problem(field.ErrorTypeTooLong, path, nil, "%s is %d bytes long; API keys may be at most %d bytes", path, len(key), MaxAPIKeyLength)}
	case !utf8.Valid(key):
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil, "%s is not valid UTF-8 text; an API key is a single line of printable text", path)}
	case strings.TrimSpace(string(key)) != string(key):
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil, "%s has leading or trailing whitespace (often a trailing newline from `echo`); store the key without it, e.g. with `printf %%s`", path)}
	case strings.IndexFunc(string(key), unprintable) >= 0:
		return field.ErrorList{problem(field.ErrorTypeInvalid, path, nil, "%s contains control characters; an API key is a single line of printable text", path)}
	}
	return nil
}

// unprintable matches control characters and Unicode line and paragraph separators.
func unprintable(r rune) bool { return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' }

// Last4 is what may be shown of a key (see wire.Last4).
func Last4(key []byte) string { return wire.Last4(string(key)) }

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
