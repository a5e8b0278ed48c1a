//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/oauthtest"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// The suite's OAuth provider: an in-process authorization server on the node's address
// (pods reach it there), serving HTTPS with a certificate of the suite's own CA, which
// config/e2e makes the manager trust (--provider-ca-file, ConfigMap pipes-e2e-provider-ca).
var (
	providerCA  []byte
	providerTLS tls.Certificate
	nodeIP      string
)

// publicPort is the local port the suite forwards to Service pipes-public: config/e2e's
// --public-url is http://localhost:18082, where providers send the browser back.
const publicPort = "18082"

// prepareProvider makes the CA and the certificate before the operator is deployed, and
// leaves the CA where the manager reads it.
func prepareProvider() {
	nodeIP = strings.TrimSpace(kubectl("get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`))
	Expect(net.ParseIP(nodeIP)).NotTo(BeNil(), "the node's InternalIP %q", nodeIP)
	dir := GinkgoT().TempDir()
	var err error
	providerCA, err = devenv.WriteServingCerts(dir, nodeIP, "127.0.0.1")
	Expect(err).NotTo(HaveOccurred())
	providerTLS, err = tls.LoadX509KeyPair(filepath.Join(dir, devenv.CertFile), filepath.Join(dir, devenv.KeyFile))
	Expect(err).NotTo(HaveOccurred())
	_, _ = kubectlErr("create", "namespace", operatorNS) // config/e2e creates it too; it may exist
	kubectl("-n", operatorNS, "create", "configmap", "pipes-e2e-provider-ca", "--from-file=ca.crt="+filepath.Join(dir, devenv.CAFile))
}

// oauthSpecs run against the config/e2e deployment (before the Helm specs replace it).
func oauthSpecs() {
	It("connects a user, and the pod reads an access token the operator refreshes while it runs", func(ctx SpecContext) {
		const ttl = 20 * time.Second
		server := oauthtest.Start(GinkgoT(), oauthtest.Options{ClientID: "e2e-client", ClientSecret: "e2e-client-secret",
			RedirectURL: "http://localhost:" + publicPort + wire.OAuthCallbackPath, AccessTokenTTL: ttl, RotateRefreshTokens: true,
			RequirePKCE: true, TLS: &providerTLS, Listen: net.JoinHostPort(nodeIP, "0")})
		apply(`
apiVersion: v1
kind: Secret
metadata: {name: e2e-oauth-client, namespace: ` + appNS + `, labels: {pipes.dev/credential-source: "true"}}
stringData: {secret: e2e-client-secret}
---
apiVersion: pipes.dev/v1alpha1
kind: Provider
metadata: {name: gitlab, namespace: ` + appNS + `}
spec:
  method: OAuth
  displayName: GitLab
  oauth:
    authorizationURL: ` + server.AuthURL() + `
    tokenURL: ` + server.TokenURL() + `
    clientID: e2e-client
    clientSecretRef: {name: e2e-oauth-client, key: secret}
`)
		apply(serviceAccount(appNS, "oauth-backend", "pipes-backend"))
		token := saToken(ctx, appNS, "oauth-backend")

		By("the backend asks for the authorization URL")
		api, stop := backendAPI(ctx, token)
		defer stop()
		var authURL string
		Eventually(func() error {
			var err error
			authURL, err = api.Authorize(ctx, "gitlab", wire.AuthorizeRequest{UserID: "user_o"})
			return err
		}).Should(Succeed())

		By("the browser consents at the provider and comes back to the public listener")
		forward := kubectlCmd("-n", operatorNS, "port-forward", "svc/pipes-public", publicPort+":80")
		var out testenv.SyncBuffer
		forward.Stdout, forward.Stderr = &out, &out
		Expect(forward.Start()).To(Succeed())
		defer func() { _ = forward.Process.Kill(); _ = forward.Wait() }()
		Eventually(func() string { return string(out.Bytes()) }, 30*time.Second).Should(ContainSubstring("Forwarding from"))
		pool := x509.NewCertPool()
		Expect(pool.AppendCertsFromPEM(providerCA)).To(BeTrue())
		browser := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
		resp, err := browser.Get(authURL) // follows the redirect to the callback, which ends on its page
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(resp.Request.URL.Path).To(Equal(wire.OAuthCallbackPath))
		Expect(server.Stats().CodeExchanges).To(Equal(1))
		connected := time.Now()

		By("a pod reads the access token from the sidecar's file")
		apply(serviceAccount(appNS, "oauth-app", "pipes-vendor"))
		apply(appDeployment(appNS, "oauth-app", "oauth-app", "gitlab:user_o"))
		kubectl("-n", appNS, "rollout", "status", "deployment/oauth-app", "--timeout=3m")
		pod := podOf(ctx, appNS, "oauth-app")
		Expect(pod).NotTo(BeNil())
		read := func() string {
			out, err := inApp(appNS, pod.Name, "cat", "/var/run/pipes/gitlab/user_o/value")
			if err != nil {
				return ""
			}
			return strings.TrimSpace(out)
		}
		var first string
		Eventually(func() bool { first = read(); return server.ValidAccessToken(first) }).Should(BeTrue())

		By("the leader refreshes the token ahead of expiry; the file follows without a restart")
		seen := map[string]bool{first: true}
		for range 2 {
			Eventually(func() bool {
				v := read()
				if v == "" || seen[v] || !server.ValidAccessToken(v) {
					return false
				}
				seen[v] = true
				return true
			}, 3*ttl).Should(BeTrue(), "a refreshed token in the pod's file")
		}
		By("loopback HTTP answers the same token, with its expiry")
		Eventually(func() bool {
			out, err := inApp(appNS, pod.Name, "post", "http://127.0.0.1:8299/data-integrations/gitlab/token", `{"user_id":"user_o"}`)
			v := read()
			return err == nil && v != "" && strings.Contains(out, `"value":"`+v+`"`) && strings.Contains(out, `"expires_at"`)
		}).Should(BeTrue())
		pod = podOf(ctx, appNS, "oauth-app")
		for _, s := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
			Expect(s.RestartCount).To(BeZero(), "container %s restarted", s.Name)
		}
		stats := server.Stats()
		GinkgoWriter.Printf("provider saw %+v in %s\n", stats, time.Since(connected).Round(time.Second))
		Expect(stats.DoubleSpends).To(BeZero())
		// About one refresh per three quarters of a lifetime, not one per vend: sidecars
		// are woken by every refresh, and must not cause the next.
		Expect(stats.Refreshes).To(BeNumerically("<=", 2+int(time.Since(connected)/(ttl/2))), "refreshes")
	})
}
