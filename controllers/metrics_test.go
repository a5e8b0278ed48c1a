package controllers_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/controllers"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

// The on-call view of accounts: every state is a series (0 included, so an alert on
// needs_reauthorization always has one), counted from the cache, labelled by state only.
func TestCredentialCollectorCountsAccountsByState(t *testing.T) {
	var objs []client.Object
	for i, state := range []pipesv1.ConnectedAccountState{
		pipesv1.StateConnected, pipesv1.StateConnected, pipesv1.StateNeedsReauthorization, "",
	} {
		ca := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "acct-" + string(rune('a'+i))},
			Spec: pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "user_secret_id"}}
		ca.Status.State = state
		objs = append(objs, ca)
	}
	ks, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(operator.Scheme()).WithObjects(objs...).WithStatusSubresource(objs...).Build()
	reg := prometheus.NewPedanticRegistry() // also checks help text and consistency
	reg.MustRegister(controllers.NewCredentialCollector(c, keyring.New(ks)))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetHelp() == "" {
			t.Errorf("%s has no help text", f.GetName())
		}
		if f.GetName() != "pipes_connected_accounts" {
			continue
		}
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "state" {
				t.Fatalf("pipes_connected_accounts must carry the state label alone, got %v", m.GetLabel())
			}
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{"connected": 2, "needs_reauthorization": 1, "disconnected": 0, "pending": 1}
	for state, n := range want {
		if v, ok := got[state]; !ok || v != n {
			t.Errorf("pipes_connected_accounts{state=%q} = %v (present %t), want %v", state, v, ok, n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("states %v, want exactly %v", got, want)
	}
	for _, f := range families {
		if strings.Contains(f.String(), "user_secret_id") {
			t.Errorf("%s carries a user ID", f.GetName())
		}
	}
}
