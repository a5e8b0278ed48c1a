package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

var env *testenv.Env

func TestControllers(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controllers (envtest)")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(20 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	var err error
	env, err = testenv.Start(testenv.Options{Webhooks: true, LogTo: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// newNamespace creates a namespace for one spec.
func newNamespace(ctx context.Context) string {
	ns := "t-" + rand.String(6)
	Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	return ns
}

func apiKeyProvider(ns, name string) *pipesv1.Provider {
	return &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, Description: "used to call " + name},
	}
}

func sourceSecret(ns, name, key string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}},
		Data:       map[string][]byte{"api-key": []byte(key)},
	}
}

func account(ns, name, provider, user, org, secretName string) *pipesv1.ConnectedAccount {
	ca := &pipesv1.ConnectedAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: provider}, UserID: user, OrganizationID: org},
	}
	if secretName != "" {
		ca.Spec.APIKey = &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: secretName, Key: "api-key"}}
	}
	return ca
}

// getAccount reads an account straight from the API server.
func getAccount(ctx context.Context, ca *pipesv1.ConnectedAccount) *pipesv1.ConnectedAccount {
	var got pipesv1.ConnectedAccount
	Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(ca), &got)).To(Succeed())
	return &got
}

// readyReason returns "Status/Reason" of the Ready condition.
func readyReason(ctx context.Context, ca *pipesv1.ConnectedAccount) string {
	return conditionOf(getAccount(ctx, ca), pipesv1.ConditionReady)
}

func conditionOf(ca *pipesv1.ConnectedAccount, condType string) string {
	for _, c := range ca.Status.Conditions {
		if c.Type == condType {
			return fmt.Sprintf("%s/%s", c.Status, c.Reason)
		}
	}
	return ""
}

// eventReasons lists the reasons of Events about an object, oldest first.
func eventReasons(ctx context.Context, obj client.Object) []string {
	var list eventsv1.EventList
	Expect(env.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace()))).To(Succeed())
	var reasons []string
	for _, e := range list.Items {
		if e.Regarding.Name == obj.GetName() && e.Regarding.Kind == "ConnectedAccount" {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

// update applies mutate to the latest version of obj, retrying on conflicts (the
// operator writes status concurrently).
func update[T client.Object](ctx context.Context, obj T, mutate func(T)) {
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return env.Client.Update(ctx, obj)
	})).To(Succeed())
}

// withoutWebhook removes the named webhook from the validating configuration for the rest
// of the spec, as if it were not installed yet, and puts it back afterwards.
func withoutWebhook(ctx context.Context, name string) {
	var vwc admissionv1.ValidatingWebhookConfiguration
	Expect(env.Client.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, &vwc)).To(Succeed())
	saved := vwc.DeepCopy()
	vwc.Webhooks = slices.DeleteFunc(vwc.Webhooks, func(w admissionv1.ValidatingWebhook) bool { return w.Name == name })
	Expect(vwc.Webhooks).To(HaveLen(len(saved.Webhooks)-1), "webhook %s is configured", name)
	Expect(env.Client.Update(ctx, &vwc)).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		update(ctx, &vwc, func(v *admissionv1.ValidatingWebhookConfiguration) { v.Webhooks = saved.Webhooks })
	})
}
