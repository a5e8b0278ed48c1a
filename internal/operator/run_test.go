package operator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/operator"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

// A leader that loses its lease because the API server is away for longer than the
// renew deadline (kube-apiserver restarted) stays the same process: Run starts a fresh
// manager, which leads and reconciles again once the API server is back. The process
// used to exit ("leader election lost") and wait for the kubelet (issue #15, scenario 2).
func TestRunOutlivesLostLeadership(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite: starts etcd and kube-apiserver; run without -short (make test)")
	}
	env, err := testenv.Start(testenv.Options{NoManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	logs := &testenv.SyncBuffer{}
	log := zap.New(zap.WriteTo(logs), zap.UseDevMode(true), zap.Level(zapcore.InfoLevel))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- operator.Run(ctx, env.Config, operator.Options{
			Namespace: testenv.OperatorNamespace, MetricsAddr: "0", ProbeAddr: "0", DisableWebhooks: true,
			SkipNameValidation: true, LeaderElection: true, LeaderElectionID: "run-test",
		}, log)
	}()
	holder := func() string {
		var lease coordinationv1.Lease
		err := env.Client.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "run-test"}, &lease)
		if err != nil || lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}
	waitFor(t, "the manager leads", func() error {
		if holder() == "" {
			return errors.New("no lease holder")
		}
		return nil
	})
	first := holder()

	start, _, err := env.StopControlPlane(testenv.KubeAPIServer, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Away for longer than the renew deadline (10 s): leadership is lost.
	waitFor(t, "leadership lost", func() error {
		select {
		case err := <-done:
			t.Fatalf("Run returned (%v): the process would have exited", err)
		default:
		}
		if !strings.Contains(string(logs.Bytes()), "leadership lost while the API server could not be reached") {
			return errors.New("not yet")
		}
		return nil
	})
	if err := start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the manager started again in the same process leads", func() error {
		if h := holder(); h == "" || h == first {
			return errors.New("the lease still names the stopped manager")
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v): the process would have exited", err)
	default:
	}
	// And reconciles: a Provider created now gets its status.
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "run"}}); err != nil {
		t.Fatal(err)
	}
	p := &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "run", Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Provider is reconciled", func() error {
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "run", Name: "openai"}, p); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(p.Status.Conditions, pipesv1.ConditionReady) {
			return errors.New("not Ready")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after its context ended: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its context ended")
	}
}
