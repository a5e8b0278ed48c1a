// Package scheme owns the runtime scheme every client of the operator uses: the built-in
// kinds and pipes.dev/v1alpha1. A package of its own, so the kubectl plugin gets it
// without linking the manager.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// New returns a scheme with the built-in kinds and pipes.dev/v1alpha1.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := pipesv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
