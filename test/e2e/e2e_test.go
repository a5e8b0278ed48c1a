//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	keyV1 = "sk-e2e-first-0123456789abcdefAAAA"
	keyV2 = "sk-e2e-second-0123456789abcdefBBBB"
	keyV3 = "sk-e2e-third-0123456789abcdefCCCC"
)

// appDeployment renders a Deployment of the test image, labelled for injection.
func appDeployment(ns, name, sa, credentials string) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {e2e: %[2]s}}
  template:
    metadata:
      labels: {e2e: %[2]s, pipes.dev/inject: "true"}
      annotations:
        pipes.dev/credentials: "%[4]s"
    spec:
      serviceAccountName: %[3]s
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: pipes.local/kit:e2e
        imagePullPolicy: Never
        args: ["pause"]
        securityContext: {runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true}
`, ns, name, sa, credentials)
}

func serviceAccount(ns, name, clusterRole string) string {
	y := fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: %s}\n", name, ns)
	if clusterRole != "" {
		y += fmt.Sprintf(`---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: %[1]s, namespace: %[2]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %[3]s}
subjects: [{kind: ServiceAccount, name: %[1]s, namespace: %[2]s}]
`, name, ns, clusterRole)
	}
	return y
}

// podOf returns the running pod of a Deployment's label.
func podOf(ctx context.Context, ns, app string) *corev1.Pod {
	var pods corev1.PodList
	ExpectWithOffset(1, k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"e2e": app})).To(Succeed())
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i]
		}
	}
	return nil
}

// inApp runs a command in the app container of a pod.
func inApp(ns, pod string, args ...string) (string, error) {
	return kubectlErr(append([]string{"-n", ns, "exec", pod, "-c", "app", "--", "/kit"}, args...)...)
}

const credentialFile = "/var/run/pipes/openai/user_a/value"

// readBoth reads the credential as the app does: the file ("" if absent) and loopback HTTP.
func readBoth(pod string) (file, http string) {
	if out, err := inApp(appNS, pod, "cat", credentialFile); err == nil {
		file = strings.TrimSpace(out)
	}
	http, _ = inApp(appNS, pod, "post", "http://127.0.0.1:8299/data-integrations/openai/credentials", `{"user_id":"user_a"}`)
	return file, http
}

var _ = Describe("pipes-operator on a real cluster", Ordered, func() {
	var backendToken string
	var appPod string

	upsert := func(ctx context.Context, key string) {
		api, stop := backendAPI(ctx, backendToken)
		defer stop()
		acct, err := api.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_a", Secret: key})
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		ExpectWithOffset(1, acct.APIKeyLast4).To(Equal(key[len(key)-4:]))
	}

	It("runs the manager from config/default with self-bootstrapped webhook certificates", func(ctx SpecContext) {
		apply(`
apiVersion: pipes.dev/v1alpha1
kind: Provider
metadata: {name: openai, namespace: ` + appNS + `}
spec: {method: APIKey, displayName: OpenAI}
`)
		By("the webhook answers in-cluster: a method change and an unknown provider are rejected")
		out, err := kubectlErr("-n", appNS, "patch", "provider", "openai", "--type=merge", "-p", `{"spec":{"method":"OAuth","oauth":{"authorizationURL":"https://a.example/auth","tokenURL":"https://a.example/token","clientID":"x","clientSecretRef":{"name":"s","key":"k"}}}}`)
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("spec.method is immutable (was APIKey, requested OAuth)"))
		Eventually(func() string {
			cmdOut, _ := kubectlApplyErr(`
apiVersion: pipes.dev/v1alpha1
kind: ConnectedAccount
metadata: {name: orphan, namespace: ` + appNS + `}
spec: {providerRef: {name: nope}, userID: u}
`)
			return cmdOut
		}).Should(ContainSubstring(`spec.providerRef.name: Provider "nope" not found in namespace "` + appNS + `"`))
		var cm corev1.Secret
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "pipes-webhook-cert"}, &cm)).To(Succeed())
		Expect(cm.Data).To(HaveKey("ca.crt"), "cert-controller filled the certificate Secret")
	})

	It("upserts a key through the in-cluster backend API Service", func(ctx SpecContext) {
		apply(serviceAccount(appNS, "backend", "pipes-backend"))
		backendToken = saToken(ctx, appNS, "backend")
		upsert(ctx, keyV1)
	})

	It("injects the sidecar; the app reads the key from the file and from loopback", func(ctx SpecContext) {
		apply(serviceAccount(appNS, "app", "pipes-vendor"))
		apply(appDeployment(appNS, "app", "app", "openai:user_a"))
		kubectl("-n", appNS, "rollout", "status", "deployment/app", "--timeout=3m")
		pod := podOf(ctx, appNS, "app")
		Expect(pod).NotTo(BeNil())
		appPod = pod.Name
		Expect(pod.Spec.InitContainers[0].Name).To(Equal("pipes-vend"))
		Expect(*pod.Spec.InitContainers[0].RestartPolicy).To(Equal(corev1.ContainerRestartPolicyAlways))
		Eventually(func() []string {
			file, http := readBoth(appPod)
			return []string{file, fmt.Sprint(strings.Contains(http, keyV1))}
		}).Should(Equal([]string{keyV1, "true"}))

		By("the sidecar trusts the CA from the namespace's pipes-api-ca ConfigMap, kept equal to cert-controller's")
		Expect(pod.Spec.InitContainers[0].Args).To(ContainElement("--ca-file=/var/run/secrets/pipes.dev/ca/ca.crt"))
		Expect(pod.Spec.InitContainers[0].Env).To(BeEmpty())
		var secret corev1.Secret
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "pipes-webhook-cert"}, &secret)).To(Succeed())
		caOf := func() string {
			var cm corev1.ConfigMap
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: appNS, Name: "pipes-api-ca"}, &cm); err != nil {
				return err.Error()
			}
			return cm.Data["ca.crt"]
		}
		Expect(caOf()).To(Equal(string(secret.Data["ca.crt"])))
		kubectl("-n", appNS, "patch", "configmap", "pipes-api-ca", "--type=merge", "-p", `{"data":{"ca.crt":"not the CA"}}`)
		Eventually(caOf, 10*time.Second).Should(Equal(string(secret.Data["ca.crt"])), "an edited bundle is put back")
	})

	It("injects only pods labelled pipes.dev/inject, and refuses host-network ones", func(_ SpecContext) {
		pod := func(labels, hostNetwork string) string {
			return fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: probe
  namespace: %s
  labels: {%s}
  annotations: {pipes.dev/inject: "true", pipes.dev/credentials: "openai:user_a"}
spec:
  hostNetwork: %s
  serviceAccountName: app
  containers: [{name: app, image: pipes.local/kit:e2e, imagePullPolicy: Never, args: [pause]}]
`, appNS, labels, hostNetwork)
		}
		out, err := kubectlApplyErr(pod(`e2e: probe`, "false"), "--dry-run=server", "-o", "jsonpath={.spec.initContainers[*].name}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).NotTo(ContainSubstring("pipes-vend"), "the annotation alone no longer opts in: the webhook never sees the pod")
		out, err = kubectlApplyErr(pod(`pipes.dev/inject: "true"`, "false"), "--dry-run=server", "-o", "jsonpath={.spec.initContainers[*].name}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("pipes-vend"))
		out, err = kubectlApplyErr(pod(`pipes.dev/inject: "true"`, "true"), "--dry-run=server")
		Expect(err).To(HaveOccurred())
		Expect(out).To(And(ContainSubstring("spec.hostNetwork"), ContainSubstring("run the pod without hostNetwork")))
	})

	It("sees a rotated key in file and HTTP within 5 s, without restarting", func(ctx SpecContext) {
		start := time.Now()
		upsert(ctx, keyV2)
		Eventually(func() []string {
			file, http := readBoth(appPod)
			return []string{file, fmt.Sprint(strings.Contains(http, keyV2))}
		}, 5*time.Second, 100*time.Millisecond).Should(Equal([]string{keyV2, "true"}))
		GinkgoWriter.Printf("rotation visible in the pod after %s\n", time.Since(start).Round(time.Millisecond))
		pod := podOf(ctx, appNS, "app")
		for _, s := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
			Expect(s.RestartCount).To(BeZero(), s.Name)
		}
	})

	It("gives nothing to a pod whose ServiceAccount may not vend, or to another namespace", func(ctx SpecContext) {
		apply(serviceAccount(appNS, "noaccess", ""))
		apply(appDeployment(appNS, "noaccess", "noaccess", "openai:user_a"))
		Eventually(func() string {
			p := podOf(ctx, appNS, "noaccess")
			if p == nil {
				return ""
			}
			out, _ := kubectlErr("-n", appNS, "exec", p.Name, "-c", "pipes-vend", "--", "/vend", "probe")
			return out
		}).Should(And(ContainSubstring("not ready"), ContainSubstring("may not vend")))
		p := podOf(ctx, appNS, "noaccess")
		out, _ := kubectlErr("-n", appNS, "exec", p.Name, "-c", "pipes-vend", "--", "/vend", "probe", "--path=/metrics")
		Expect(out).To(ContainSubstring("pipes_vend_ready 0"))

		apply(serviceAccount(otherNS, "app", "pipes-vendor"))
		apply(appDeployment(otherNS, "foreign", "app", "openai:user_a"))
		kubectl("-n", otherNS, "rollout", "status", "deployment/foreign", "--timeout=3m")
		foreign := podOf(ctx, otherNS, "foreign")
		out, err := kubectlErr("-n", otherNS, "exec", foreign.Name, "-c", "app", "--", "/kit", "post",
			"http://127.0.0.1:8299/data-integrations/openai/credentials", `{"user_id":"user_a"}`)
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring(`"error":"not_installed"`))
		Expect(out).NotTo(ContainSubstring(keyV2))
		_, err = kubectlErr("-n", otherNS, "exec", foreign.Name, "-c", "app", "--", "/kit", "cat", credentialFile)
		Expect(err).To(HaveOccurred(), "no file for a credential of another namespace")
	})

	It("keeps serving while the manager restarts, and the new leader takes over", func(ctx SpecContext) {
		var lease coordinationv1.Lease
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "pipes-operator.pipes.dev"}, &lease)).To(Succeed())
		leader, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_")
		kubectl("-n", operatorNS, "delete", "pod", leader, "--wait=false")

		file, http := readBoth(appPod)
		Expect(file).To(Equal(keyV2), "the sidecar serves its last good value while the manager restarts")
		Expect(http).To(ContainSubstring(keyV2))

		Eventually(func() string {
			var l coordinationv1.Lease
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "pipes-operator.pipes.dev"}, &l); err != nil || l.Spec.HolderIdentity == nil {
				return leader
			}
			holder, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
			return holder
		}).ShouldNot(Equal(leader))
		kubectl("-n", operatorNS, "rollout", "status", "deployment/pipes-controller-manager", "--timeout=3m")

		upsert(ctx, keyV3)
		Eventually(func() string { f, _ := readBoth(appPod); return f }, 30*time.Second).Should(Equal(keyV3))
		Eventually(func(g Gomega) {
			out, err := kubectlErr("-n", appNS, "get", "connectedaccount", "-o", "jsonpath={.items[0].status.credentialVersion}/{.items[0].status.apiKeyLast4}")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(out).To(Equal("3/CCCC"))
		}).Should(Succeed())
	})

	It("removes the file and answers not_installed after a disconnect", func(_ SpecContext) {
		kubectl("-n", appNS, "delete", "connectedaccount", "--all", "--wait=true", "--timeout=60s")
		Eventually(func() []string {
			file, http := readBoth(appPod)
			return []string{file, fmt.Sprint(strings.Contains(http, `"error":"not_installed"`))}
		}, 10*time.Second, 200*time.Millisecond).Should(Equal([]string{"", "true"}))
		_, err := inApp(appNS, appPod, "cat", credentialFile)
		Expect(err).To(HaveOccurred())
	})

	Context("kubectl pipes", Ordered, pluginSpecs)

	Context("OAuth", Ordered, oauthSpecs)

	// Last: these replace the config/e2e deployment every spec above runs against.
	Context("Helm: moved to the chart and upgraded", Ordered, helmSpecs)
})

func kubectlApplyErr(yaml string, flags ...string) (string, error) {
	cmd := kubectlCmd(append([]string{"apply", "-f", "-"}, flags...)...)
	cmd.Stdin = strings.NewReader(yaml)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
