// Package vendspec owns the syntax that names the credentials a workload receives, shared
// by the pipes.dev/credentials pod annotation and the vend sidecar's --credentials flag:
// comma-separated PROVIDER:USER_ID[@ORGANIZATION_ID]. The last "@" separates the
// organization, so a user ID containing "@" (an email) needs an organization or a
// trailing "@" (`github:alice@example.com@`).
package vendspec

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// MaxEntries bounds how many credentials one workload may name.
const MaxEntries = 32

var providerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// IsProviderName reports whether s can be a Provider's name (a DNS subdomain: lowercase
// letters, digits, '-' and '.', at most 253, no empty label). Checked here rather than
// with apimachinery's validation, which the vend sidecar's binary does not link.
func IsProviderName(s string) bool {
	return providerName.MatchString(s) && len(s) <= 253 && !strings.Contains(s, "..")
}

// Parse reads a credentials list. Errors name the offending entry and the expected form.
func Parse(s string) ([]wire.CredentialRef, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("no credentials listed; expected comma-separated PROVIDER:USER_ID[@ORGANIZATION_ID], e.g. \"github:user_123, openai:user_123@org_9\"")
	}
	var refs []wire.CredentialRef
	seen := map[wire.CredentialRef]bool{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		provider, rest, ok := strings.Cut(entry, ":")
		if !ok || entry == "" {
			return nil, fmt.Errorf("entry %d (%q) is not PROVIDER:USER_ID[@ORGANIZATION_ID]", i+1, entry)
		}
		if !IsProviderName(provider) {
			return nil, fmt.Errorf("entry %d (%q): %q is not a Provider name (lowercase letters, digits, '-' and '.')", i+1, entry, provider)
		}
		user, org := rest, ""
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			user, org = rest[:at], rest[at+1:]
		}
		if user == "" {
			return nil, fmt.Errorf("entry %d (%q) has no user ID after %q", i+1, entry, provider+":")
		}
		if strings.TrimSpace(user) != user || strings.TrimSpace(org) != org || strings.ContainsAny(user+org, ",\n\r\t") {
			return nil, fmt.Errorf("entry %d (%q): user and organization IDs cannot contain whitespace or commas", i+1, entry)
		}
		ref := wire.CredentialRef{Provider: provider, UserID: user, OrganizationID: org}
		if seen[ref] {
			return nil, fmt.Errorf("entry %d (%q) repeats an earlier entry", i+1, entry)
		}
		seen[ref] = true
		refs = append(refs, ref)
	}
	if len(refs) > MaxEntries {
		return nil, fmt.Errorf("%d credentials listed; at most %d are allowed per workload", len(refs), MaxEntries)
	}
	return refs, nil
}
