//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	keyKustomize = "sk-e2e-before-helm-0123456789abcdefDDDD"
	keyHelm      = "sk-e2e-under-helm-0123456789abcdefEEEE"
)

// helmSpecs run last in the ordered suite: they replace the kustomize deployment the
// specs before them ran against by a Helm release of config/helm/pipes-operator, then
// upgrade that release to another image tag, and check after each step that every
// stored credential is still vended.
func helmSpecs() {
	var helmBin, chart, token string
	// The e2e values: config/e2e's local images (imported, never pulled).
	values := []string{"--set", "image.repository=pipes.local/manager,image.tag=e2e,image.pullPolicy=Never",
		"--set", "vend.image.repository=pipes.local/vend,vend.image.tag=e2e"}

	helm := func(args ...string) string {
		cmd := exec.Command(helmBin, append([]string{"--kubeconfig", kubeconfig, "-n", operatorNS}, args...)...)
		out, err := cmd.CombinedOutput()
		ExpectWithOffset(1, err).NotTo(HaveOccurred(), "helm %s\n%s", strings.Join(args, " "), out)
		return string(out)
	}

	BeforeAll(func() {
		chart = filepath.Join(root, "config", "helm", "pipes-operator")
		// make e2e builds the helm CLI pinned in config/helm/go.mod; build it when run alone.
		if helmBin = os.Getenv("E2E_HELM"); helmBin == "" {
			helmBin = filepath.Join(GinkgoT().TempDir(), "helm")
			out, err := exec.Command("go", "-C", filepath.Join(root, "config", "helm"), "build", "-o", helmBin, "helm.sh/helm/v4/cmd/helm").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "%s", out)
		}
	})

	It("stores a key while the operator runs from config/e2e", func(ctx SpecContext) {
		// Applied again so that these specs also run alone (-ginkgo.focus=Helm).
		apply(`
apiVersion: pipes.dev/v1alpha1
kind: Provider
metadata: {name: openai, namespace: ` + appNS + `}
spec: {method: APIKey, displayName: OpenAI}
`)
		apply(serviceAccount(appNS, "backend", "pipes-backend"))
		token = saToken(ctx, appNS, "backend")
		upsertAs(ctx, token, "user_kustomize", keyKustomize)
	})

	It("installs from the Helm chart after make undeploy; the key stored before is still vended", func(ctx SpecContext) {
		By("make undeploy: everything but the namespace (with the keyset), the CRDs and the accounts")
		kubectl("delete", "--ignore-not-found", "--wait=true", "-k", filepath.Join(root, "config", "undeploy"))
		var keyset corev1.Secret
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "pipes-keyset"}, &keyset)).To(Succeed(), "undeploy keeps the keyset")

		By("helm install")
		start := time.Now()
		helm(append([]string{"install", "pipes", chart, "--wait", "--timeout=5m"}, values...)...)
		GinkgoWriter.Printf("helm install ready after %s\n", time.Since(start).Round(time.Millisecond))
		waitForWebhooks()
		GinkgoWriter.Printf("webhooks answer %s after helm install began\n", time.Since(start).Round(time.Millisecond))
		Expect(kubectl("-n", operatorNS, "get", "deployment", "pipes-controller-manager",
			"-o", "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}/{.metadata.annotations.meta\\.helm\\.sh/release-name}")).
			To(Equal("Helm/pipes"))

		Expect(vendAs(ctx, token, "user_kustomize")).To(Equal(keyKustomize), "the keyset survived the move to Helm")
		upsertAs(ctx, token, "user_helm", keyHelm)
	})

	It("upgrades to another image tag; the certificate is kept and every key is still vended", func(ctx SpecContext) {
		caBefore := webhookCA(ctx)
		start := time.Now()
		helm("upgrade", "pipes", chart, "--reuse-values", "--set", "image.tag=e2e-next,vend.image.tag=e2e-next", "--wait", "--timeout=5m")
		kubectl("-n", operatorNS, "rollout", "status", "deployment/pipes-controller-manager", "--timeout=3m")
		GinkgoWriter.Printf("helm upgrade rolled out after %s\n", time.Since(start).Round(time.Millisecond))

		var pods corev1.PodList
		Expect(k8s.List(ctx, &pods, client.InNamespace(operatorNS), client.MatchingLabels{"control-plane": "controller-manager"})).To(Succeed())
		running := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				Expect(p.Spec.Containers[0].Image).To(Equal("pipes.local/manager:e2e-next"), p.Name)
				running++
			}
		}
		Expect(running).To(Equal(2))
		Expect(webhookCA(ctx)).To(Equal(caBefore), "an upgrade keeps cert-controller's certificate (and the sidecars' trust in it)")

		Expect(vendAs(ctx, token, "user_kustomize")).To(Equal(keyKustomize))
		Expect(vendAs(ctx, token, "user_helm")).To(Equal(keyHelm))

		By("pods injected from now on get the new sidecar image")
		out, err := kubectlApplyErr(`
apiVersion: v1
kind: Pod
metadata: {name: probe-next, namespace: `+appNS+`, labels: {pipes.dev/inject: "true"}, annotations: {pipes.dev/credentials: "openai:user_helm"}}
spec:
  serviceAccountName: backend
  containers: [{name: app, image: pipes.local/kit:e2e, imagePullPolicy: Never, args: [pause]}]
`, "--dry-run=server", "-o", "jsonpath={.spec.initContainers[0].image}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("pipes.local/vend:e2e-next"))
	})
}

func webhookCA(ctx context.Context) []byte {
	var s corev1.Secret
	ExpectWithOffset(1, k8s.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "pipes-webhook-cert"}, &s)).To(Succeed())
	ExpectWithOffset(1, s.Data["ca.crt"]).NotTo(BeEmpty())
	return s.Data["ca.crt"]
}

func upsertAs(ctx context.Context, token, user, key string) {
	api, stop := backendAPI(ctx, token)
	defer stop()
	acct, err := api.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: user, Secret: key})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	ExpectWithOffset(1, acct.APIKeyLast4).To(Equal(key[len(key)-4:]))
}

// vendAs returns the credential the backend API vends for a user. Retried: right after a
// rollout, kubectl port-forward may pick a pod that is terminating.
func vendAs(ctx context.Context, token, user string) string {
	var value string
	EventuallyWithOffset(1, func(g Gomega) {
		api, stop := backendAPI(ctx, token)
		defer stop()
		resp, err := api.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: user})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(resp.Active).To(BeTrue(), "error %q", resp.Error)
		value = resp.Credential.Value
	}, 30*time.Second).Should(Succeed())
	return value
}
