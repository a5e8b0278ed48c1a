package controllers_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/controllers"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

// decide runs one reconcile of the account "acct" in namespace "ns" over objs (with a
// fake client: the reconciler's decisions alone, without a control plane) and returns the
// account afterwards, whether its credential Secret exists, and the events.
func decide(t *testing.T, objs ...client.Object) (*pipesv1.ConnectedAccount, bool, []string) {
	t.Helper()
	ctx := context.Background()
	c := testenv.FakeClient(objs...).WithStatusSubresource(&pipesv1.ConnectedAccount{}).Build()
	ks, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	rec := events.NewFakeRecorder(10)
	r := &controllers.ConnectedAccountReconciler{Client: c, APIReader: c, Store: credential.NewStore(c, keyring.New(ks)), Recorder: rec}
	key := types.NamespacedName{Namespace: "ns", Name: "acct"}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	var ca pipesv1.ConnectedAccount
	if err := c.Get(ctx, key, &ca); err != nil {
		t.Fatal(err)
	}
	err = c.Get(ctx, types.NamespacedName{Namespace: "ns", Name: credential.SecretName(&ca)}, &corev1.Secret{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	var got []string
	for len(rec.Events) > 0 {
		got = append(got, <-rec.Events)
	}
	return &ca, err == nil, got
}

func TestConnectedAccountDecisions(t *testing.T) {
	const key = "sk-decide-" + "0123456789abcdefghij" + "LAST"
	provider := &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}
	oauth := &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth}}
	source := func(optedIn bool) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "src", UID: "src-uid"}, Data: map[string][]byte{"api-key": []byte(key), "other": []byte("x")}}
		if optedIn {
			s.Labels = map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}
		}
		return s
	}
	acct := func(name string, ref *pipesv1.SecretKeyReference, created int64) *pipesv1.ConnectedAccount {
		ca := &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(name + "-uid"), CreationTimestamp: metav1.Unix(created, 0)},
			Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "u"},
		}
		if ref != nil {
			ca.Spec.APIKey = &pipesv1.APIKeySource{SecretKeyRef: ref}
		}
		return ca
	}
	ref := &pipesv1.SecretKeyReference{Name: "src", Key: "api-key"}

	for _, tt := range []struct {
		name       string
		objs       []client.Object
		wantReady  string // Status/Reason
		wantSecret bool
		wantEvent  string
		wantInMsg  string
	}{
		{"an opted-in source is copied, encrypted", []client.Object{provider, source(true), acct("acct", ref, 10)},
			"True/" + pipesv1.ReasonConnected, true, pipesv1.EventConnected, "can be vended"},
		{"a source without the opt-in label is not read", []client.Object{provider, source(false), acct("acct", ref, 10)},
			"False/" + pipesv1.ReasonSourceNotOptedIn, false, "", "pipes.dev/credential-source=true"},
		{"a missing key names only the key asked for", []client.Object{provider, source(true), acct("acct", &pipesv1.SecretKeyReference{Name: "src", Key: "nope"}, 10)},
			"False/" + pipesv1.ReasonSourceNotFound, false, "", `has no key "nope"`},
		{"no source and no key set: waiting for the backend API", []client.Object{provider, acct("acct", nil, 10)},
			"False/" + pipesv1.ReasonAwaitingCredential, false, "", "PUT /data-integrations/openai/api-key"},
		{"a missing Provider stores nothing new", []client.Object{source(true), acct("acct", ref, 10)},
			"False/" + pipesv1.ReasonProviderNotFound, false, "", "kept encrypted and not vended"},
		{"an OAuth Provider refuses an API key", []client.Object{oauth, source(true), acct("acct", ref, 10)},
			"False/" + pipesv1.ReasonAuthMethodMismatch, false, "", "remove spec.apiKey"},
		{"only the oldest account of an identity holds the credential", []client.Object{provider, source(true), acct("acct", ref, 20), acct("older", ref, 10)},
			"False/" + pipesv1.ReasonDuplicateAccount, false, "", `ConnectedAccount "older", created earlier`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca, hasSecret, evs := decide(t, tt.objs...)
			ready := apimeta.FindStatusCondition(ca.Status.Conditions, pipesv1.ConditionReady)
			if ready == nil || string(ready.Status)+"/"+ready.Reason != tt.wantReady {
				t.Fatalf("Ready = %+v, want %s", ready, tt.wantReady)
			}
			if !strings.Contains(ready.Message, tt.wantInMsg) {
				t.Errorf("Ready message %q does not say %q", ready.Message, tt.wantInMsg)
			}
			if ready.ObservedGeneration != ca.Generation || ca.Status.ObservedGeneration != ca.Generation {
				t.Errorf("observedGeneration %d/%d, generation %d", ready.ObservedGeneration, ca.Status.ObservedGeneration, ca.Generation)
			}
			if hasSecret != tt.wantSecret {
				t.Errorf("credential Secret stored: %t, want %t", hasSecret, tt.wantSecret)
			}
			if tt.wantEvent != "" && (len(evs) == 0 || !strings.Contains(evs[0], tt.wantEvent)) {
				t.Errorf("events %v, want %s", evs, tt.wantEvent)
			}
			for _, c := range ca.Status.Conditions {
				if strings.Contains(c.Message, key) || strings.Contains(c.Message, `"other"`) {
					t.Errorf("condition %s reveals the key or the Secret's other key names: %q", c.Type, c.Message)
				}
			}
			for _, e := range evs {
				if strings.Contains(e, key) {
					t.Errorf("event reveals the key: %q", e)
				}
			}
		})
	}
}
