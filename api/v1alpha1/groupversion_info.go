// Package v1alpha1 holds the pipes.dev/v1alpha1 API: Provider, OrganizationProvider and
// ConnectedAccount, with the labels, annotations, condition types and reasons that the
// operator, its webhooks and its backend API share.
//
// +kubebuilder:object:generate=true
// +groupName=pipes.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "pipes.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this package's kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
