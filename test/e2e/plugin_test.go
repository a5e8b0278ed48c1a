//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

const (
	keyPlugin = "sk-e2e-plugin-0123456789abcdefDDDD"
	keySealed = "sk-e2e-sealed-0123456789abcdefEEEE"
)

// pluginSpecs run kubectl pipes as a person does, against the real cluster: what envtest
// cannot show is set-key's port-forward to a manager pod (a kubelet streams it) and
// doctor finding a real installation healthy.
func pluginSpecs() {
	var plugin string
	// pipes runs the plugin with the suite's kubeconfig; stdin, when not "", is piped in.
	pipes := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(plugin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	BeforeAll(func() {
		// make e2e builds it; build it when the suite runs alone.
		if plugin = os.Getenv("E2E_PLUGIN"); plugin == "" {
			plugin = filepath.Join(GinkgoT().TempDir(), "kubectl-pipes")
			out, err := exec.Command("go", "-C", root, "build", "-o", plugin, "./cmd/kubectl-pipes").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "%s", out)
		}
		apply(`
apiVersion: pipes.dev/v1alpha1
kind: Provider
metadata: {name: openai, namespace: ` + appNS + `}
spec: {method: APIKey, displayName: OpenAI}
`)
		apply(serviceAccount(appNS, "backend", "pipes-backend"))
	})

	It("set-key reaches the backend API through a port-forward to a manager pod, as a ServiceAccount", func(_ SpecContext) {
		out, err := pipes(keyPlugin, "-n", appNS, "set-key", "openai", "--user-id", "user_plugin", "--as-serviceaccount", appNS+"/backend")
		Expect(err).NotTo(HaveOccurred(), "%s", out)
		Expect(out).To(ContainSubstring("DDDD"))
		Expect(out).NotTo(ContainSubstring(keyPlugin))
		Eventually(func() string {
			out, _ := pipes("", "-n", appNS, "get")
			return out
		}, 30*time.Second).Should(MatchRegexp(`user_plugin\s.*connected\s+••••DDDD`))
	})

	It("seals a key with the published public keyset; the applied account connects", func(_ SpecContext) {
		manifest, err := pipes(keySealed, "-n", appNS, "seal", "--provider", "openai", "--user-id", "user_sealed", "--name", "sealed-e2e")
		Expect(err).NotTo(HaveOccurred(), "%s", manifest)
		Expect(manifest).NotTo(ContainSubstring(keySealed))
		apply(manifest)
		Eventually(func() string {
			return kubectl("-n", appNS, "get", "connectedaccount", "sealed-e2e", "-o", "jsonpath={.status.state}/{.status.apiKeyLast4}")
		}, 60*time.Second).Should(Equal("connected/EEEE"))
	})

	It("doctor finds the installation healthy once both keysets are backed up", func(_ SpecContext) {
		dir := GinkgoT().TempDir()
		out, err := pipes("", "keyset", "backup", "--file", filepath.Join(dir, "keyset.json"))
		Expect(err).NotTo(HaveOccurred(), "%s", out)
		out, err = pipes("", "keyset", "backup", "--sealing", "--file", filepath.Join(dir, "sealing.json"))
		Expect(err).NotTo(HaveOccurred(), "%s", out)
		out, err = pipes("", "-n", appNS, "doctor")
		Expect(err).NotTo(HaveOccurred(), "doctor:\n%s", out)
		Expect(out).NotTo(MatchRegexp(`(?m)^(FAIL|WARN)`), "doctor:\n%s", out)
		for _, check := range []string{"operator", "webhooks", "certificate", "keyset", "keyset-backup", "seal-public"} {
			Expect(out).To(MatchRegexp(`(?m)^OK\s+`+check+`\s`), "doctor:\n%s", out)
		}
	})
}
