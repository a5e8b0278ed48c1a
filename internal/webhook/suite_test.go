package webhook_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

// env is the control plane with the CRDs (and their CEL rules), the validating webhook
// configurations served over real TLS by the real manager, whose cache the webhooks read.
var (
	env *testenv.Env
	ctx context.Context
)

func TestWebhooks(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "Webhook Suite")
}

var _ = BeforeSuite(func() {
	ctx = context.Background()
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)

	var err error
	env, err = testenv.Start(testenv.Options{Webhooks: true, LogTo: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
