package controllers_test

import (
	"context"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/controllers"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

var _ = Describe("CA bundle ConfigMaps", func() {
	// Each spec runs a manager of its own with a CABundleReconciler for ConfigMaps of a
	// name of its own, so that the suite's manager (which keeps pipes-api-ca) stays out.
	var name string
	start := func(_ context.Context, r *controllers.CABundleReconciler) {
		managed := labels.SelectorFromSet(labels.Set{pipesv1.LabelManagedBy: pipesv1.ManagedByValue})
		mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
			Scheme: operator.Scheme(),
			Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
				&corev1.ConfigMap{}: {Label: managed}, &corev1.Secret{}: {Label: managed},
			}},
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
			Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		r.Client, r.Name = mgr.GetClient(), name
		Expect(r.SetupWithManager(mgr)).To(Succeed())
		mctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Start(mctx) }()
		DeferCleanup(func() { cancel(); Expect(<-done).To(Succeed()) })
	}
	bundle := func(ctx context.Context, ns, ca string) *corev1.ConfigMap {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{pipesv1.LabelManagedBy: pipesv1.ManagedByValue}},
			Data:       map[string]string{"ca.crt": ca},
		}
		Expect(env.Client.Create(ctx, cm)).To(Succeed())
		return cm
	}
	caOf := func(ctx context.Context, cm *corev1.ConfigMap) func() map[string]string {
		return func() map[string]string {
			var got corev1.ConfigMap
			Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(cm), &got)).To(Succeed())
			return got.Data
		}
	}
	BeforeEach(func() { name = "test-ca-" + rand.String(5) })

	It("follow the CA source, and are put back when edited", func(ctx SpecContext) {
		var current atomic.Value
		current.Store("CA-1")
		a, b := bundle(ctx, newNamespace(ctx), "stale"), bundle(ctx, newNamespace(ctx), "")
		start(ctx, &controllers.CABundleReconciler{
			CA:     func() ([]byte, error) { return []byte(current.Load().(string)), nil },
			Resync: 200 * time.Millisecond,
		})
		for _, cm := range []*corev1.ConfigMap{a, b} {
			Eventually(caOf(ctx, cm)).Should(Equal(map[string]string{"ca.crt": "CA-1"}))
		}

		By("a rotated CA reaches every bundle")
		current.Store("CA-2")
		for _, cm := range []*corev1.ConfigMap{a, b} {
			Eventually(caOf(ctx, cm), 5*time.Second).Should(Equal(map[string]string{"ca.crt": "CA-2"}))
		}

		By("an edited bundle is put back")
		edited := a.DeepCopy()
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(a), edited)).To(Succeed())
		edited.Data = map[string]string{"ca.crt": "an attacker's CA", "extra": "x"}
		Expect(env.Client.Update(ctx, edited)).To(Succeed())
		Eventually(caOf(ctx, a), 5*time.Second).Should(Equal(map[string]string{"ca.crt": "CA-2"}))

		By("ConfigMaps of that name the operator does not manage are left alone")
		foreign := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace(ctx), Name: name}, Data: map[string]string{"ca.crt": "theirs"}}
		Expect(env.Client.Create(ctx, foreign)).To(Succeed())
		Consistently(caOf(ctx, foreign), time.Second).Should(Equal(map[string]string{"ca.crt": "theirs"}))
	})

	It("follow cert-controller's Secret as soon as it changes", func(ctx SpecContext) {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace(ctx), Name: "webhook-cert"},
			Data:       map[string][]byte{"ca.crt": []byte("SECRET-CA-1"), "tls.key": []byte("k"), "tls.crt": []byte("c")},
		}
		Expect(env.Client.Create(ctx, secret)).To(Succeed())
		a := bundle(ctx, newNamespace(ctx), "stale")
		start(ctx, &controllers.CABundleReconciler{
			// The file the certificate is written to may lag behind the Secret: the Secret wins.
			CA:       func() ([]byte, error) { return []byte("FILE-CA"), nil },
			CASecret: &types.NamespacedName{Namespace: secret.Namespace, Name: secret.Name},
			Resync:   time.Hour, // so only the Secret's change can explain an update
		})
		Eventually(caOf(ctx, a)).Should(Equal(map[string]string{"ca.crt": "SECRET-CA-1"}))

		secret.Data["ca.crt"] = []byte("SECRET-CA-2")
		Expect(env.Client.Update(ctx, secret)).To(Succeed())
		Eventually(caOf(ctx, a), 5*time.Second).Should(Equal(map[string]string{"ca.crt": "SECRET-CA-2"}))
	})
})
