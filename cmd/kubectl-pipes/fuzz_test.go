package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipes-dev/pipes-operator/internal/sealing"
)

// FuzzReadAccountManifest reads arbitrary bytes as the ConnectedAccount file of
// `kubectl pipes seal --patch FILE` (YAML: aliases, anchors, many documents, any
// encoding), with arbitrary flags: no panic, no runaway alias expansion; an accepted
// file names the account the key is bound to, and agrees with every flag given.
func FuzzReadAccountManifest(f *testing.F) {
	account := "apiVersion: pipes.dev/v1alpha1\nkind: ConnectedAccount\nmetadata:\n  name: openai-alice\n  namespace: team-a\nspec:\n  providerRef:\n    name: openai\n  userID: alice\n"
	laughs := "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	for i, prev := 'b', "a"; i <= 'i'; i, prev = i+1, string(i) {
		laughs += string(i) + ": &" + string(i) + " [" + strings.Repeat("*"+prev+",", 8) + "*" + prev + "]\n"
	}
	for _, seed := range []struct{ file, name, user string }{
		{account, "", ""},
		{account, "openai-alice", "alice"},
		{account, "other", ""},
		{account + "---\n" + account, "", ""},
		{strings.Replace(account, "kind: ConnectedAccount", "kind: Secret", 1), "", ""},
		{strings.Replace(account, "  name: openai-alice\n", "", 1), "", ""},
		{account + "spec: {userID: bob}\n", "", ""},
		{laughs, "", ""},
		{strings.Repeat("[", 10_000), "", ""},
		{"\xff\xfe" + account, "", ""},
		{"apiVersion: pipes.dev/v1alpha1\nkind: ConnectedAccount\nmetadata: {name: &n x}\nspec: {userID: *n}\n", "", ""},
		{"", "", ""},
	} {
		f.Add(seed.file, seed.name, seed.user)
	}
	f.Fuzz(func(t *testing.T, file, name, user string) {
		path := filepath.Join(t.TempDir(), "account.yaml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		sc := sealing.Context{Name: name, User: user}
		doc, err := readAccountManifest(path, &sc)
		if err != nil {
			if doc != nil {
				t.Fatal("a document alongside an error")
			}
			return
		}
		if doc == nil || sc.Name == "" || (name != "" && sc.Name != name) || (user != "" && sc.User != user) {
			t.Fatalf("accepted %+v for flags name=%q user=%q", sc, name, user)
		}
	})
}
