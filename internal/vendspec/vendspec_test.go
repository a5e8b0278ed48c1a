package vendspec

import (
	"strings"
	"testing"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

func TestParse(t *testing.T) {
	got, err := Parse(" github:user_123, openai:user_123@org_9 ,slack:alice@example.com@ ")
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.CredentialRef{
		{Provider: "github", UserID: "user_123"},
		{Provider: "openai", UserID: "user_123", OrganizationID: "org_9"},
		{Provider: "slack", UserID: "alice@example.com"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v want %+v", i, got[i], want[i])
		}
	}
	if got[1].String() != "openai:user_123@org_9" {
		t.Errorf("String() = %q", got[1].String())
	}
}

func TestParseRejects(t *testing.T) {
	for in, wantMsg := range map[string]string{
		"":                       "no credentials listed",
		"github":                 `entry 1 ("github") is not PROVIDER:USER_ID`,
		"github:":                "has no user ID",
		"GitHub:u":               "is not a Provider name",
		"open..ai:u":             "is not a Provider name",
		"github:u,,openai:u":     "entry 2",
		"github:u, github:u":     "repeats",
		"github:u@ org":          "whitespace",
		strings.Repeat("a:u", 1): "",
	} {
		_, err := Parse(in)
		if wantMsg == "" {
			if err != nil {
				t.Errorf("Parse(%q): unexpected error %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, wantMsg)
		}
	}
	many := strings.TrimSuffix(strings.Repeat("p:u1,", 1), ",")
	for i := 2; i <= MaxEntries+1; i++ {
		many += ",p:u" + string(rune('a'+i%26)) + strings.Repeat("x", i)
	}
	if _, err := Parse(many); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("too many entries: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("github:user_123, openai:user_123@org_9")
	f.Add("a:b@c@d")
	f.Fuzz(func(t *testing.T, s string) {
		refs, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(joinRefs(refs))
		if err != nil || len(again) != len(refs) {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
		for i := range refs {
			if again[i] != refs[i] {
				t.Fatalf("round trip changed %+v into %+v", refs[i], again[i])
			}
		}
	})
}

func joinRefs(refs []wire.CredentialRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.String()
		if r.OrganizationID == "" && strings.Contains(r.UserID, "@") {
			parts[i] += "@"
		}
	}
	return strings.Join(parts, ",")
}
