package testenv

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

// fakeScheme is built once: fuzz targets build a fake client per input, and a scheme is
// read-only once built.
var fakeScheme = operator.Scheme()

// FakeClient is a fake client builder with the operator's scheme, objs and the field
// indexes the reconcilers, webhooks and backend API query, for unit tests and fuzz
// targets that need no control plane.
func FakeClient(objs ...client.Object) *fake.ClientBuilder {
	b := fake.NewClientBuilder().WithScheme(fakeScheme).WithObjects(objs...)
	if err := index.Register(context.Background(), builderIndexer{b}); err != nil {
		panic(err) // only WithIndex is called, which cannot fail
	}
	return b
}

// builderIndexer registers indexes on a fake client builder.
type builderIndexer struct{ b *fake.ClientBuilder }

func (i builderIndexer) IndexField(_ context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	i.b.WithIndex(obj, field, fn)
	return nil
}
