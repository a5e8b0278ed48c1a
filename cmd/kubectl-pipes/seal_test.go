package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	sigsyaml "sigs.k8s.io/yaml"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

const manifest = `# user-123's OpenAI key, sealed: safe to commit
apiVersion: pipes.dev/v1alpha1
kind: ConnectedAccount
metadata:
  name: user-123-openai # chosen by the platform team
  labels:
    team: payments
spec:
  providerRef:
    name: openai
  userID: user-123
  apiKey:
    secretKeyRef:
      name: user-123-openai
      key: apiKey
`

// --patch keeps the manifest as written (comments, order, other fields), binds the key to
// the account the file declares, and replaces any other key source.
func TestSealPatchKeepsTheManifest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "account.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	var sc sealing.Context
	doc, err := readAccountManifest(path, &sc)
	if err != nil {
		t.Fatal(err)
	}
	if want := (sealing.Context{Name: "user-123-openai", Provider: "openai", User: "user-123"}); sc != want {
		t.Fatalf("context from the file: %+v, want %+v", sc, want)
	}
	setSealed(doc, "apps", "SEALED")
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"# user-123's OpenAI key, sealed: safe to commit\n", "name: user-123-openai # chosen by the platform team\n", "team: payments", "namespace: apps", "  apiKey:\n    sealed: SEALED\n"} {
		if !strings.Contains(got, want) {
			t.Fatalf("patched manifest lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "secretKeyRef") {
		t.Fatalf("the Secret source is still there beside the sealed key:\n%s", got)
	}

	sc = sealing.Context{User: "user-456"}
	if _, err := readAccountManifest(path, &sc); err == nil || !strings.Contains(err.Error(), `--user-id "user-456" disagrees with`) {
		t.Fatalf("a flag disagreeing with the file: %v", err)
	}
	other := filepath.Join(t.TempDir(), "provider.yaml")
	if err := os.WriteFile(other, []byte("apiVersion: pipes.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: openai\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readAccountManifest(other, &sealing.Context{}); err == nil || !strings.Contains(err.Error(), "is a pipes.dev/v1alpha1 Provider, not a pipes.dev/v1alpha1 ConnectedAccount") {
		t.Fatalf("patching a Provider: %v", err)
	}
}

// TestSeal runs seal as a user would: online (the operator's published public keyset) and
// offline (--public-keyset), printing a manifest and patching one; the printed manifest,
// applied, connects the account with the key sealed into it.
func TestSeal(t *testing.T) {
	needEnv(t)
	const key = "sk-plugin-sealed-abcdefgh4321"
	ctx := context.Background()
	const ns = "plugin-seal"
	createNamespace(t, ns)
	if err := env.Client.Create(ctx, &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openai"},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, DisplayName: "OpenAI"},
	}); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	eventually(t, func() error {
		return env.Client.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: pipesv1.SealingPublicKeysetConfigMap}, &cm)
	})

	// The public keyset for offline sealing: keyset public prints the published one.
	r := kubectlPipes(t, adminKube, "", "keyset", "public")
	if r.code != 0 || strings.TrimSpace(r.stdout) != strings.TrimSpace(cm.Data[pipesv1.SealingPublicKeysetKey]) {
		t.Fatalf("keyset public: %+v", r)
	}
	pub := filepath.Join(t.TempDir(), "public-keyset.json")
	if r := kubectlPipes(t, adminKube, "", "keyset", "public", "--file", pub); r.code != 0 || r.stderr != "public sealing keyset written to "+pub+"\n" {
		t.Fatalf("keyset public --file: %+v", r)
	}

	// Online: the public keyset from the cluster; the manifest on stdout.
	r = kubectlPipes(t, adminKube, key+"\n", "seal", "-n", ns, "--provider", "openai", "--user-id", "user-1")
	if r.code != 0 || strings.Contains(r.stdout+r.stderr, key) {
		t.Fatalf("seal: %+v", r)
	}
	var printed unstructured.Unstructured
	if err := sigsyaml.Unmarshal([]byte(r.stdout), &printed.Object); err != nil {
		t.Fatal(err)
	}
	sealed, _, _ := unstructured.NestedString(printed.Object, "spec", "apiKey", "sealed")
	if printed.GetKind() != "ConnectedAccount" || printed.GetNamespace() != ns || printed.GetName() != credential.AccountName("openai", "user-1", "") || sealed == "" {
		t.Fatalf("printed manifest:\n%s", r.stdout)
	}
	applyAndWaitConnected(t, &printed, "4321")

	// Offline: no cluster at all, the manifest patched in place.
	path := filepath.Join(t.TempDir(), "account.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	r = kubectlPipes(t, filepath.Join(t.TempDir(), "no-kubeconfig"), key, "seal", "-n", ns, "--public-keyset", pub, "--patch", path)
	if r.code != 0 || r.stderr != path+": spec.apiKey.sealed set for connectedaccount "+ns+"/user-123-openai\n" {
		t.Fatalf("seal --patch: %+v", r)
	}
	patched, _ := os.ReadFile(path)
	if !strings.Contains(string(patched), "sealed: ") || strings.Contains(string(patched), key) || !strings.HasPrefix(string(patched), "# user-123's OpenAI key") {
		t.Fatalf("patched file:\n%s", patched)
	}
	// The patched manifest, applied, connects the account it declares with that key.
	var fromFile unstructured.Unstructured
	if err := sigsyaml.Unmarshal(patched, &fromFile.Object); err != nil {
		t.Fatal(err)
	}
	applyAndWaitConnected(t, &fromFile, "4321")

	r = kubectlPipes(t, adminKube, key, "seal", "-n", ns, "--public-keyset", path, "--provider", "openai", "--user-id", "user-1")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "error: --public-keyset "+path+": ") {
		t.Fatalf("seal with a file that is no public keyset: %+v", r)
	}
	r = kubectlPipes(t, adminKube, key, "seal", "-n", ns, "--public-keyset", pub, "--patch", path, "--user-id", "user-456")
	if r.code != 1 || !strings.Contains(r.stderr, `--user-id "user-456" disagrees with`) {
		t.Fatalf("seal --patch with a disagreeing flag: %+v", r)
	}
	r = kubectlPipes(t, adminKube, "", "seal", "-n", ns, "--public-keyset", pub, "--provider", "openai", "--user-id", "user-1")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "error: no key on standard input") {
		t.Fatalf("seal with no key: %+v", r)
	}
}

// applyAndWaitConnected creates the manifest seal wrote and waits for the operator to
// open the sealed key: connected, with last4 as the key's last four.
func applyAndWaitConnected(t *testing.T, manifest *unstructured.Unstructured, last4 string) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, manifest); err != nil {
		t.Fatalf("applying the sealed manifest: %v", err)
	}
	eventually(t, func() error {
		var ca pipesv1.ConnectedAccount
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: manifest.GetNamespace(), Name: manifest.GetName()}, &ca); err != nil {
			return err
		}
		if ca.Status.State != pipesv1.StateConnected || ca.Status.APIKeyLast4 != last4 {
			return fmt.Errorf("account %s from the sealed manifest: %+v", ca.Name, ca.Status)
		}
		return nil
	})
}

// The printed manifest declares exactly the account the key is sealed for: the operator
// opens it with credential.SealingContext of the applied account.
func TestSealedManifestIsBoundToItsAccount(t *testing.T) {
	sc := sealing.Context{Namespace: "apps", Name: "acme-openai", Provider: "openai", User: "user-1", Organization: "org-9"}
	raw, err := yaml.Marshal(accountManifest(sc, "SEALED"))
	if err != nil {
		t.Fatal(err)
	}
	var ca pipesv1.ConnectedAccount
	if err := sigsyaml.UnmarshalStrict(raw, &ca); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	if got := credential.SealingContext(&ca); got != sc || ca.Spec.APIKey == nil || ca.Spec.APIKey.Sealed != "SEALED" {
		t.Fatalf("manifest binds %+v, sealed for %+v:\n%s", got, sc, raw)
	}
}
