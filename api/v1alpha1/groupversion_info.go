// Package v1alpha1 holds the pipes.dev/v1alpha1 API: Provider, OrganizationProvider and
// ConnectedAccount, with the labels, annotations, condition types and reasons that the
// operator, its webhooks and its backend API share.
//
// +kubebuilder:object:generate=true
// +groupName=pipes.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "pipes.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a scheme. It is apimachinery's, not
	// controller-runtime's scheme.Builder (deprecated for API packages), so that importing
	// this API does not import controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers every kind of this package (a new kind is added here).
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Provider{}, &ProviderList{},
		&OrganizationProvider{}, &OrganizationProviderList{},
		&ConnectedAccount{}, &ConnectedAccountList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
