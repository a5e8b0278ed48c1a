package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// TestCommands runs every command as a user would, in order (later cases see what
// earlier ones did): flags, output formats, the backend API round trip and the errors,
// each a single "error: …" line with exit code 1.
func TestCommands(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	const ns = "plugin-cmds"
	createNamespace(t, ns)
	if err := env.Client.Create(ctx, &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openai"},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, DisplayName: "OpenAI"},
	}); err != nil {
		t.Fatal(err)
	}
	// The application's backend: a ServiceAccount bound to pipes-backend in ns; and one with no rights.
	if _, err := env.ServiceAccountToken(ctx, ns, "backend", "pipes-backend", ns); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ServiceAccountToken(ctx, ns, "nobody", "", ""); err != nil {
		t.Fatal(err)
	}
	backendToken, err := env.Token(ctx, ns, "backend", wire.Audience)
	if err != nil {
		t.Fatal(err)
	}
	tokenKube := tokenKubeconfig(t, backendToken)
	caFile := filepath.Join(t.TempDir(), "api-ca.crt")
	if err := os.WriteFile(caFile, env.APICA(), 0o600); err != nil {
		t.Fatal(err)
	}
	api := []string{"-n", ns, "--api-url", env.APIURL(), "--api-ca", caFile}
	asBackend := append([]string{"--as-serviceaccount", ns + "/backend"}, api...)
	const key1, key2 = "sk-plugin-test-abcdefgh1234", "sk-plugin-test-ijklmnop5678"
	u1 := credential.AccountName("openai", "user-1", "")
	u2 := credential.AccountName("openai", "user-2", "org-9")
	backup := filepath.Join(t.TempDir(), "pipes-keyset.json")
	sealingBackup := filepath.Join(t.TempDir(), "pipes-sealing-keyset.json")
	with := func(base []string, more ...string) []string { return append(append([]string{}, more...), base...) }

	cases := []struct {
		name       string
		kubeconfig string // default: admin
		stdin      string
		args       []string
		code       int
		stdout     []string // substrings, in order; "re:" prefixes a regular expression, matched anywhere
		stderr     string   // substring
		retry      bool     // until the operator's status catches up
		before     func(t *testing.T)
	}{
		{name: "help", args: []string{"--help"}, stdout: []string{"kubectl pipes", "set-key", "doctor", "--context", "--kubeconfig", "--namespace"}},
		{name: "help of a subcommand", args: []string{"set-key", "--help"}, stdout: []string{"never taken from an argument", "--as-serviceaccount"}},
		{name: "unknown command", args: []string{"bogus"}, code: 1, stderr: `error: unknown command "bogus" for "kubectl pipes"`},
		{name: "unknown flag", args: []string{"get", "--bogus"}, code: 1, stderr: "error: unknown flag: --bogus (see 'kubectl pipes get --help')\n"},
		{name: "no accounts yet", args: []string{"get", "-n", ns}, stderr: "No resources found in plugin-cmds namespace.\n"},
		{name: "set-key needs --user-id", args: with(asBackend, "set-key", "openai"), stdin: key1, code: 1, stderr: `error: required flag(s) "user-id" not set`},
		{name: "set-key never takes the key as an argument", args: with(asBackend, "set-key", "openai", key1, "--user-id", "user-1"), code: 1,
			stderr: "error: kubectl pipes set-key takes 1 argument (PROVIDER), got 2"},
		{name: "set-key with nothing on stdin", args: with(asBackend, "set-key", "openai", "--user-id", "user-1"), code: 1, stderr: "error: no key on standard input: pipe it in"},
		{name: "set-key as a ServiceAccount", args: with(asBackend, "set-key", "openai", "--user-id", "user-1"), stdin: key1 + "\n",
			stdout: []string{"connectedaccount/" + u1 + " key stored (••••1234): connected\n"}},
		{name: "set-key with an organization", args: with(asBackend, "set-key", "openai", "--user-id", "user-2", "--organization-id", "org-9"), stdin: key2,
			stdout: []string{"connectedaccount/" + u2 + " key stored (••••5678): connected\n"}},
		{name: "set-key for a missing provider", args: with(asBackend, "set-key", "anthropic", "--user-id", "user-1"), stdin: key1, code: 1,
			stderr: `error: backend API: 404 not_found: data integration "anthropic" not found`},
		{name: "set-key as a ServiceAccount without rights", args: with(api, "set-key", "openai", "--user-id", "user-1", "--as-serviceaccount", ns+"/nobody"), stdin: key1, code: 1,
			stderr: "error: backend API: 403 forbidden:"},
		{name: "set-key as a missing ServiceAccount", args: with(api, "set-key", "openai", "--user-id", "user-1", "--as-serviceaccount", ns+"/ghost"), stdin: key1, code: 1,
			stderr: "error: ServiceAccount plugin-cmds/ghost not found: create it and bind it to ClusterRole pipes-backend"},
		{name: "set-key with a bad --as-serviceaccount", args: with(api, "set-key", "openai", "--user-id", "user-1", "--as-serviceaccount", "backend"), stdin: key1, code: 1,
			stderr: `error: --as-serviceaccount "backend": want NAMESPACE/NAME`},
		{name: "set-key with a client-certificate kubeconfig", args: with(api, "set-key", "openai", "--user-id", "user-1"), stdin: key1, code: 1,
			stderr: "error: the kubeconfig has no bearer token, and the backend API accepts only tokens: pass --as-serviceaccount NAMESPACE/NAME"},
		{name: "set-key with the kubeconfig's token rotates the key", kubeconfig: tokenKube, args: with(api, "set-key", "openai", "--user-id", "user-1"), stdin: key2,
			stdout: []string{"connectedaccount/" + u1 + " key stored (••••5678): connected\n"}},
		{name: "set-key finds no CA without ConfigMap or webhook configuration", args: with([]string{"-n", ns, "--api-url", env.APIURL()}, "set-key", "openai", "--user-id", "user-1", "--as-serviceaccount", ns+"/backend"),
			stdin: key1, code: 1, stderr: "error: no CA bundle for the backend API: no ConfigMap pipes-api-ca in plugin-cmds or pipes-system"},
		{name: "set-key trusts the CA of ConfigMap pipes-api-ca", args: with([]string{"-n", ns, "--api-url", env.APIURL()}, "set-key", "openai", "--user-id", "user-1", "--as-serviceaccount", ns+"/backend"),
			stdin: key1, stdout: []string{"key stored (••••1234)"},
			before: func(t *testing.T) {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pipesv1.CABundleConfigMap},
					Data: map[string]string{pipesv1.CABundleKey: string(env.APICA())}}
				if err := env.Client.Create(context.Background(), cm); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "set-key without --api-url needs a ready manager pod", args: []string{"set-key", "openai", "--user-id", "user-1", "-n", ns, "--as-serviceaccount", ns + "/backend"},
			stdin: key1, code: 1, stderr: "error: no ready manager pod (control-plane=controller-manager) in namespace pipes-system to reach the backend API through: check kubectl pipes doctor, or pass --api-url\n"},
		{name: "set-key port-forwards to a ready manager pod", args: []string{"set-key", "openai", "--user-id", "user-1", "-n", ns, "--as-serviceaccount", ns + "/backend"},
			stdin: key1, code: 1, before: func(t *testing.T) { readyManagerPod(t) },
			// envtest has no kubelet: the API server cannot open the tunnel, and says why.
			stderr: "error: port-forwarding to pod pipes-system/pipes-controller-manager-test (you need create on pods/portforward there, or pass --api-url): "},
		{name: "get", args: []string{"get", "-n", ns}, retry: true,
			stdout: []string{`re:(?m)^NAME +PROVIDER +USER +ORG +STATE +KEY +VERSION +AGE$`,
				`re:(?m)^` + u1 + ` +openai +user-1 +<none> +connected +••••1234 +3 +\d+s$`,
				`re:(?m)^` + u2 + ` +openai +user-2 +org-9 +connected +••••5678 +1 +\d+s$`}},
		{name: "status is get", args: []string{"status", "-n", ns}, stdout: []string{u1, "••••1234"}},
		{name: "get -o wide", args: []string{"get", "-n", ns, "-o", "wide"}, retry: true,
			stdout: []string{`re:(?m)^NAME .* AGE +READY +REASON +KEY-ID +LAST-ROTATED +MESSAGE$`, `re:(?m)^` + u1 + ` .* True +\S+ +\d+ +\d+s ago +\S`}},
		{name: "get -A", args: []string{"get", "-A"}, stdout: []string{`re:(?m)^NAMESPACE +NAME +PROVIDER`, `re:(?m)^` + ns + ` +` + u1 + ` +openai`}},
		{name: "get NAME -o yaml", args: []string{"get", u1, "-n", ns, "-o", "yaml"}, stdout: []string{"apiVersion: pipes.dev/v1alpha1", "kind: ConnectedAccount", "name: " + u1, "apiKeyLast4: \"1234\""}},
		{name: "get -o json", args: []string{"get", "-n", ns, "-o", "json"}, stdout: []string{`"kind": "List"`, `"name": "` + u1 + `"`}},
		{name: "get -o name", args: []string{"get", "-n", ns, "-o", "name"}, stdout: []string{"connectedaccount.pipes.dev/" + u1 + "\n"}},
		{name: "get an unknown output format", args: []string{"get", "-o", "table"}, code: 1, stderr: `error: unknown output format "table": use wide, yaml, json or name`},
		{name: "get a missing account", args: []string{"get", "nope", "-n", ns}, code: 1, stderr: `error: connectedaccount "nope" not found in namespace "plugin-cmds"` + "\n"},
		{name: "get with a bad selector", args: []string{"get", "-n", ns, "-l", "a b"}, code: 1, stderr: "error: --selector:"},
		{name: "get as a user without rights", kubeconfig: "alice", args: []string{"get", "-n", ns}, code: 1,
			stderr: `error: connectedaccounts.pipes.dev is forbidden: User "alice" cannot list resource "connectedaccounts" in API group "pipes.dev" in the namespace "plugin-cmds"`},
		{name: "completion of account names", args: []string{"__complete", "get", "-n", ns, ""}, stdout: []string{u1, u2}},
		{name: "completion script", args: []string{"completion", "bash"}, stdout: []string{"bash completion"}},
		{name: "disconnect by provider and user", args: with(asBackend, "disconnect", "openai", "--user-id", "user-2", "--organization-id", "org-9"),
			stdout: []string{"connectedaccount/" + u2 + " disconnected\n"}},
		{name: "disconnect by name", args: with(asBackend, "disconnect", u1), stdout: []string{"connectedaccount/" + u1 + " disconnected\n"}},
		{name: "disconnect a missing account", args: with(asBackend, "disconnect", "nope"), code: 1,
			stderr: `error: connectedaccount "nope" not found in namespace "plugin-cmds" (to name a provider instead, add --user-id)`},
		{name: "disconnect an account never connected", args: with(asBackend, "disconnect", "openai", "--user-id", "user-3"), code: 1, stderr: "error: backend API: 404 not_found:"},
		{name: "accounts gone", args: []string{"get", "-n", ns}, retry: true, stderr: "No resources found in plugin-cmds namespace.\n"},
		{name: "keyset status", args: []string{"keyset", "status"}, stdout: []string{"keyset pipes-system/pipes-keyset: primary key", "primary", "credential(s) stored"}},
		{name: "keyset backup", args: []string{"keyset", "backup", "--file", backup}, stderr: "saved to " + backup + ": keep it offline",
			stdout: []string{}},
		{name: "keyset status after the backup", args: []string{"keyset", "status"}, stdout: []string{"last backup"}},
		{name: "rotate-keyset", args: []string{"rotate-keyset"}, stdout: []string{"new primary key", "back the keyset up again now"}},
		{name: "keyset status after a rotation", args: []string{"keyset", "status"}, stdout: []string{"does not hold primary key"}},
		{name: "prune", args: []string{"prune"}, retry: true, stdout: []string{"removed key(s)"}},
		{name: "keyset status --sealing", args: []string{"keyset", "status", "--sealing"},
			stdout: []string{"sealing keyset pipes-system/pipes-sealing-keyset: primary key", "primary", "sealed value(s) stored"}},
		{name: "keyset backup --sealing", args: []string{"keyset", "backup", "--sealing", "--file", sealingBackup},
			stderr: "sealing keyset pipes-system/pipes-sealing-keyset (keys ", stdout: []string{}},
		{name: "keyset status --sealing after the backup", args: []string{"keyset", "status", "--sealing"}, stdout: []string{"last backup"}},
		{name: "rotate-keyset --sealing", args: []string{"rotate-keyset", "--sealing"}, stdout: []string{"new primary sealing key", "back the sealing keyset up again now"}},
		{name: "keyset status --sealing after a rotation", args: []string{"keyset", "status", "--sealing"}, stdout: []string{"does not hold primary key", "keyset backup --sealing"}},
		{name: "prune --sealing", args: []string{"keyset", "prune", "--sealing"}, stdout: []string{"removed key(s)"}},
		{name: "keyset public", args: []string{"keyset", "public"}, retry: true, stdout: []string{`"primaryKeyId"`}},
		{name: "keyset of a missing Secret", args: []string{"keyset", "status", "--keyset-secret", "nope"}, code: 1,
			stderr: `error: reading keyset Secret pipes-system/nope: secrets "nope" not found` + "\n"},
		{name: "keyset as a user without rights", kubeconfig: "alice", args: []string{"keyset", "rotate"}, code: 1,
			stderr: `error: reading keyset Secret pipes-system/pipes-keyset: secrets "pipes-keyset" is forbidden: User "alice" cannot get resource "secrets"`},
	}
	alice, err := env.Env.AddUser(envtestUser("alice"), nil)
	if err != nil {
		t.Fatal(err)
	}
	aliceKube, err := writeKubeconfig(alice, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		kube := c.kubeconfig
		switch kube {
		case "":
			kube = adminKube
		case "alice":
			kube = aliceKube
		}
		if c.before != nil {
			c.before(t)
		}
		check := func() error {
			r := kubectlPipes(t, kube, c.stdin, c.args...)
			t.Logf("%s: exit %d %s", c.name, r.code, strings.TrimSpace(r.stderr))
			for _, k := range []string{key1, key2} {
				if strings.Contains(r.stdout+r.stderr, k) {
					return fmt.Errorf("%s: printed the key", c.name)
				}
			}
			if r.code != c.code {
				return fmt.Errorf("%s: exit code %d, want %d\nstdout: %s\nstderr: %s", c.name, r.code, c.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, c.stderr) {
				return fmt.Errorf("%s: stderr %q does not contain %q", c.name, r.stderr, c.stderr)
			}
			rest := r.stdout
			for _, want := range c.stdout {
				if re, ok := strings.CutPrefix(want, "re:"); ok {
					if !regexp.MustCompile(re).MatchString(r.stdout) {
						return fmt.Errorf("%s: stdout does not match %s\n%s", c.name, re, r.stdout)
					}
					continue
				}
				i := strings.Index(rest, want)
				if i < 0 {
					return fmt.Errorf("%s: stdout lacks %q (after what came before)\n%s", c.name, want, r.stdout)
				}
				rest = rest[i+len(want):]
			}
			return nil
		}
		if c.retry {
			eventually(t, check)
		} else if err := check(); err != nil {
			t.Fatal(err)
		}
	}

	// The backup is the Secret's keyset.json as it was, readable by its owner only.
	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v", err, fi.Mode())
	}
	saved, _ := os.ReadFile(backup)
	var s corev1.Secret
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "pipes-keyset"}, &s); err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.FromSecret(&corev1.Secret{Data: map[string][]byte{keyring.SecretKey: saved}}); err != nil {
		t.Fatalf("the backup does not parse as a keyset: %v", err)
	}
	if s.Annotations[pipesv1.AnnotationKeysetBackedUpAt] == "" {
		t.Fatal("the backup was not recorded on the Secret")
	}
	saved, _ = os.ReadFile(sealingBackup)
	if _, err := keyring.Sealing.FromSecret(&corev1.Secret{Data: map[string][]byte{keyring.SecretKey: saved}}); err != nil {
		t.Fatalf("the sealing backup does not parse as a sealing keyset: %v", err)
	}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: pipesv1.SealingKeysetSecret}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Annotations[pipesv1.AnnotationKeysetBackedUpAt] == "" {
		t.Fatal("the sealing backup was not recorded on the Secret")
	}
	var list pipesv1.ConnectedAccountList
	if err := env.Client.List(ctx, &list, inNamespace(ns)); err != nil || len(list.Items) != 0 {
		t.Fatalf("accounts left after disconnect: %v %v", err, list.Items)
	}
}

// readyManagerPod creates a manager pod reported running and ready, as a kubelet would.
func readyManagerPod(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: "pipes-controller-manager-test", Labels: map[string]string{"control-plane": "controller-manager"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "pipes-operator/manager:test",
			Ports: []corev1.ContainerPort{{Name: "api", ContainerPort: 8443}}}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := env.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pod) })
}

func envtestUser(name string) envtest.User { return envtest.User{Name: name} }

func inNamespace(ns string) client.InNamespace { return client.InNamespace(ns) }
