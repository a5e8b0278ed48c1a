package webhook_test

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/webhook"
)

// The ConnectedAccount validator's cross-object decisions, with a fake client (no
// control plane): what it reads, and the SubjectAccessReview it sends for a source
// Secret, answered by a stand-in for the API server's authorizer that lets alice read
// only the Secret "allowed".
func TestConnectedAccountValidatorDecisions(t *testing.T) {
	var asked []authzv1.SubjectAccessReviewSpec
	authorizer := interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		sar, ok := obj.(*authzv1.SubjectAccessReview)
		if !ok {
			return c.Create(ctx, obj, opts...)
		}
		asked = append(asked, sar.Spec)
		a := sar.Spec.ResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "alice" && a.Verb == "get" && a.Resource == "secrets" && a.Namespace == "ns" && a.Name == "allowed"
		return nil
	}}
	provider := &pipesv1.Provider{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey}}
	existing := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "first"},
		Spec: pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: "u"}}
	c := testenv.FakeClient(provider, existing).WithInterceptorFuncs(authorizer).Build()
	v := &webhook.ConnectedAccountValidator{Reader: c, Reviews: c}
	ctx := admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UserInfo: authnv1.UserInfo{Username: "alice", Groups: []string{"devs"}},
	}})
	account := func(name, provider, user, secret string) *pipesv1.ConnectedAccount {
		ca := &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: provider}, UserID: user}}
		if secret != "" {
			ca.Spec.APIKey = &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: secret, Key: "k"}}
		}
		return ca
	}
	for _, tt := range []struct {
		name string
		ca   *pipesv1.ConnectedAccount
		want string // "" for accepted
	}{
		{"a new identity", account("second", "openai", "v", ""), ""},
		{"the same identity again", account("second", "openai", "u", ""), `ConnectedAccount "first" already connects user "u"`},
		{"a Provider that does not exist", account("second", "nope", "v", ""), `Provider "nope" not found in namespace "ns"`},
		{"a source Secret the requester may not get", account("second", "openai", "v", "db-password"), `alice may not get Secret "db-password" in namespace "ns"`},
		{"a source Secret the requester may get", account("second", "openai", "v", "allowed"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.ValidateCreate(ctx, tt.ca)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}

	// A Provider the cache does not hold yet (applied in the same kubectl apply) is
	// looked up on the API server before the account is refused.
	lagging := &webhook.ConnectedAccountValidator{Reader: testenv.FakeClient().Build(), Live: c, Reviews: c}
	if _, err := lagging.ValidateCreate(ctx, account("third", "openai", "w", "")); err != nil {
		t.Fatalf("refused while the cache lags behind a Provider the API server has: %v", err)
	}
	if _, err := lagging.ValidateCreate(ctx, account("third", "nope", "w", "")); err == nil || !strings.Contains(err.Error(), `Provider "nope" not found`) {
		t.Fatalf("a Provider neither holds: %v, want not found", err)
	}

	// An update that keeps the reference does not ask again (the operator's own updates).
	oldCA := account("second", "openai", "v", "db-password")
	newCA := oldCA.DeepCopy()
	newCA.Labels = map[string]string{"team": "a"}
	before := len(asked)
	if _, err := v.ValidateUpdate(ctx, oldCA, newCA); err != nil {
		t.Fatalf("an update that keeps the source reference was refused: %v", err)
	}
	if len(asked) != before {
		t.Fatalf("an update that keeps the source reference asked the authorizer again")
	}
	if len(asked) != 2 || asked[0].User != "alice" || len(asked[0].Groups) != 1 || asked[0].Groups[0] != "devs" {
		t.Fatalf("reviews sent: %+v; want two, for alice with her groups", asked)
	}
}
