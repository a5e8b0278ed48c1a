package backendapi_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var (
	env     *testenv.Env
	apiHTTP *http.Client
)

func TestBackendAPI(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Backend API (envtest, real TokenReview and SubjectAccessReview)")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(20 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	var err error
	env, err = testenv.Start(testenv.Options{Webhooks: true, API: true, APIRateLimit: 20, LogTo: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	apiHTTP = httpClientTrusting(env.APICA())
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

func httpClientTrusting(ca []byte) *http.Client {
	path := filepath.Join(GinkgoT().TempDir(), "ca.crt")
	Expect(os.WriteFile(path, ca, 0o600)).To(Succeed())
	h, err := apiclient.HTTPClientWithCA(path, 30*time.Second)
	Expect(err).NotTo(HaveOccurred())
	return h
}

func newNamespace(ctx context.Context) string {
	ns := "api-" + rand.String(6)
	Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	return ns
}

// serviceAccountToken creates a ServiceAccount, binds it to clusterRole in bindNamespace
// (none if clusterRole is empty) and mints a token for it with the TokenRequest API.
func serviceAccountToken(ctx context.Context, ns, name, clusterRole, bindNamespace string, audiences ...string) string {
	tok, err := env.ServiceAccountToken(ctx, ns, name, clusterRole, bindNamespace, audiences...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return tok
}

func token(ctx context.Context, ns, name string, audiences ...string) string {
	tok, err := env.Token(ctx, ns, name, audiences...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return tok
}

func bind(ctx context.Context, ns, name string, role rbacv1.RoleRef, saNamespace, sa string) {
	ExpectWithOffset(1, env.Bind(ctx, ns, name, role, saNamespace, sa)).To(Succeed())
}

// api returns a client for tok acting in namespace ns (through /namespaces/{ns}).
func api(tok, ns string) *apiclient.Client {
	opts := []apiclient.Option{apiclient.WithHTTPClient(apiHTTP), apiclient.WithToken(tok)}
	if ns != "" {
		opts = append(opts, apiclient.WithNamespace(ns))
	}
	return apiclient.New(env.APIURL(), opts...)
}

func apiKeyProvider(ns, name string) *pipesv1.Provider {
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, DisplayName: "OpenAI", Description: "completions on your behalf"},
	}
}

func oauthProvider(ns, name string) *pipesv1.Provider {
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, OAuth: &pipesv1.OAuthSpec{
			AuthorizationURL: "https://github.com/login/oauth/authorize", TokenURL: "https://github.com/login/oauth/access_token",
			ClientID: "id", ClientSecretRef: &pipesv1.SecretKeyReference{Name: "gh", Key: "secret"}, Scopes: []string{"repo"},
		}},
	}
}
