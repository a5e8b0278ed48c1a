package credential_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

// Among accounts of one identity, the oldest live one is the account, ties broken by
// name, whatever order the cache lists them in.
func TestFindAccountPicksTheOldestLiveAccount(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	acct := func(name, user string, created time.Time, deleting bool) *pipesv1.ConnectedAccount {
		ca := &pipesv1.ConnectedAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(created)},
			Spec:       pipesv1.ConnectedAccountSpec{ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: user},
		}
		if deleting {
			ca.DeletionTimestamp, ca.Finalizers = &metav1.Time{Time: created}, []string{pipesv1.FinalizerCredentialCleanup}
		}
		return ca
	}
	c := fake.NewClientBuilder().WithScheme(operator.Scheme()).
		WithIndex(&pipesv1.ConnectedAccount{}, index.AccountIdentity, func(o client.Object) []string {
			return []string{index.AccountKeyOf(o.(*pipesv1.ConnectedAccount))}
		}).
		WithObjects(
			acct("a-deleting", "u", t0, true),
			acct("z-same-second", "u", t0.Add(time.Second), false),
			acct("m-same-second", "u", t0.Add(time.Second), false),
			acct("b-newest", "u", t0.Add(time.Hour), false),
			acct("other-user", "v", t0, false),
		).Build()
	ctx := context.Background()
	for _, tc := range []struct{ user, want string }{{"u", "m-same-second"}, {"v", "other-user"}, {"nobody", ""}} {
		got, err := credential.FindAccount(ctx, c, "ns", "openai", tc.user, "")
		if err != nil {
			t.Fatal(err)
		}
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != tc.want {
			t.Errorf("FindAccount(user %q) = %q, want %q", tc.user, name, tc.want)
		}
	}
}
