//go:build e2e

// Package e2e proves on a real single-node cluster (hack/e2e-cluster.sh: kubelet,
// containerd, kube-proxy, CoreDNS, all built or installed locally) what envtest cannot:
// the operator deployed from config/default, webhook certificates bootstrapping
// themselves, and real Pods receiving vended credentials from the injected sidecar.
// Run with `make e2e`.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/operator"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

const (
	operatorNS = "pipes-system"
	appNS      = "e2e-app"
	otherNS    = "e2e-other"
)

var (
	kubeconfig string
	kubectlBin string
	root       string
	k8s        client.Client
	clientset  *kubernetes.Clientset
	touched    = []string{operatorNS, appNS, otherNS}
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "e2e on a real cluster")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(2 * time.Minute)
	SetDefaultEventuallyPollingInterval(500 * time.Millisecond)
	kubeconfig, kubectlBin = os.Getenv("E2E_KUBECONFIG"), os.Getenv("E2E_KUBECTL")
	Expect(kubeconfig).NotTo(BeEmpty(), "E2E_KUBECONFIG must name the cluster's kubeconfig (make e2e sets it)")
	if kubectlBin == "" {
		kubectlBin = "kubectl"
	}
	var err error
	root, err = devenv.Root()
	Expect(err).NotTo(HaveOccurred())
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: operator.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	clientset, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())

	defer func() {
		if CurrentSpecReport().Failed() {
			dumpClusterState()
		}
	}()
	By("making the OAuth provider's CA, which config/e2e has the manager trust")
	prepareProvider()
	By("deploying the operator with kubectl apply -k config/e2e (config/default with local images)")
	kubectl("apply", "--server-side", "-k", filepath.Join(root, "config", "e2e"))
	start := time.Now()
	kubectl("-n", operatorNS, "rollout", "status", "deployment/pipes-controller-manager", "--timeout=5m")
	GinkgoWriter.Printf("manager ready %s after the rollout began\n", time.Since(start).Round(time.Millisecond))
	for _, ns := range []string{appNS, otherNS} {
		kubectl("create", "namespace", ns)
	}
	waitForWebhooks()
	GinkgoWriter.Printf("webhooks answer %s after the rollout began\n", time.Since(start).Round(time.Millisecond))
})

// waitForWebhooks waits until a server-side dry run passes the validating webhook. Ready
// pods are not yet reachable: the Service's endpoints reach kube-proxy's rules a moment
// later, and until then the API server cannot call the webhooks.
func waitForWebhooks() {
	By("waiting until the API server reaches the webhooks through their Service")
	EventuallyWithOffset(1, func() string {
		out, _ := kubectlApplyErr("apiVersion: pipes.dev/v1alpha1\nkind: Provider\nmetadata: {name: reachable, namespace: "+appNS+"}\nspec: {method: APIKey}\n", "--dry-run=server")
		return out
	}).Should(ContainSubstring("created (server dry run)"))
}

var _ = AfterSuite(func() {
	if CurrentSpecReport().Failed() || os.Getenv("E2E_KEEP") != "" {
		return // keep the state for debugging; the harness tears the cluster down
	}
	for _, ns := range []string{appNS, otherNS} {
		_, _ = kubectlErr("delete", "namespace", ns, "--wait=false")
	}
})

// On failure, dump the logs of every component and pod the suite touched.
var _ = ReportAfterEach(func(report SpecReport) {
	if report.Failed() {
		dumpClusterState()
	}
})

func dumpClusterState() {
	var dump bytes.Buffer
	out, _ := kubectlErr("get", "pods", "-A", "-o", "wide")
	fmt.Fprintf(&dump, "\n===== pods =====\n%s", out)
	for _, ns := range touched {
		out, _ = kubectlErr("-n", ns, "get", "events", "--sort-by=.lastTimestamp")
		fmt.Fprintf(&dump, "\n===== events in %s =====\n%s", ns, out)
		out, _ = kubectlErr("-n", ns, "describe", "pods")
		fmt.Fprintf(&dump, "\n===== pods in %s =====\n%s", ns, out)
		out, _ = kubectlErr("-n", ns, "logs", "--all-containers", "--prefix", "--tail=200", "-l", "e2e in (app,noaccess,foreign)")
		fmt.Fprintf(&dump, "\n===== app logs in %s =====\n%s", ns, out)
	}
	out, _ = kubectlErr("-n", operatorNS, "logs", "--all-containers", "--prefix", "--tail=400", "-l", "control-plane=controller-manager")
	fmt.Fprintf(&dump, "\n===== manager logs =====\n%s", out)
	if dir := os.Getenv("E2E_LOG_DIR"); dir != "" {
		files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, f := range files {
			out, _ := exec.Command("tail", "-n", "60", f).CombinedOutput()
			fmt.Fprintf(&dump, "\n===== %s (last 60 lines) =====\n%s", f, out)
		}
	}
	AddReportEntry("cluster state at failure", dump.String())
	GinkgoWriter.Print(dump.String())
}

func kubectlCmd(args ...string) *exec.Cmd {
	return exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
}

func kubectlErr(args ...string) (string, error) {
	out, err := kubectlCmd(args...).CombinedOutput()
	return string(out), err
}

func kubectl(args ...string) string {
	out, err := kubectlErr(args...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "kubectl %s\n%s", strings.Join(args, " "), out)
	return out
}

// apply applies YAML.
func apply(yaml string) {
	out, err := kubectlApplyErr(yaml)
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "kubectl apply\n%s\n%s", yaml, out)
}

// saToken mints a token for a ServiceAccount, for the backend API's audience (it does
// not accept the API server's).
func saToken(ctx context.Context, ns, sa string) string {
	tr, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"pipes.dev"}},
	}, metav1.CreateOptions{})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return tr.Status.Token
}

var forwarding = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)

// backendAPI returns a client for the in-cluster backend API Service, reached through
// kubectl port-forward on loopback, trusting the CA cert-controller generated; stop ends the forward.
func backendAPI(ctx context.Context, token string) (c *apiclient.Client, stop func()) {
	var secret corev1.Secret
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "pipes-webhook-cert"}, &secret)).To(Succeed())
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(secret.Data["ca.crt"])).To(BeTrue())

	cmd := kubectlCmd("-n", operatorNS, "port-forward", "svc/pipes-api", "0:443")
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	Expect(cmd.Start()).To(Succeed())
	var port string
	Eventually(func() string {
		if m := forwarding.FindStringSubmatch(string(out.Bytes())); m != nil {
			port = m[1]
		}
		return port
	}, 30*time.Second).ShouldNot(BeEmpty(), "kubectl port-forward: %s", out.Bytes())
	h := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: "pipes-api." + operatorNS + ".svc", MinVersion: tls.VersionTLS12,
	}}}
	return apiclient.New("https://127.0.0.1:"+port, apiclient.WithHTTPClient(h), apiclient.WithToken(token), apiclient.WithNamespace(appNS)),
		func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}
