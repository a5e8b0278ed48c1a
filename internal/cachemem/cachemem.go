// Package cachemem owns what the manager's informer caches keep of each object: no
// managed fields, and one copy of each string that repeats across thousands of objects
// (namespaces, label and annotation keys, a Provider's name, condition reasons and
// messages). Decoding gives every object its own copy of every string; at 10,000
// accounts those copies are megabytes of the manager's heap.
package cachemem

import (
	"unique"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// sharedLabelValues are the labels whose values repeat across objects; other label
// values (an account's name) are unique, and storing them once would save nothing.
var sharedLabelValues = map[string]bool{
	pipesv1.LabelManagedBy:        true,
	pipesv1.LabelComponent:        true,
	pipesv1.LabelProvider:         true,
	pipesv1.LabelCredentialSource: true,
}

// Transform is a cache transform (cache.Options.DefaultTransform): it strips managed
// fields and interns repeated strings, in place. Objects keep every field the operator
// reads or patches from; only the memory behind equal strings is shared, and Go strings
// are immutable, so sharing it cannot be observed.
func Transform(in any) (any, error) {
	switch o := in.(type) {
	case *pipesv1.ConnectedAccount:
		account(o)
	case *corev1.Secret:
		o.Type = corev1.SecretType(intern(string(o.Type)))
	case *metav1.PartialObjectMetadata: // metadata-only caches keep the kind per object
		o.APIVersion, o.Kind = intern(o.APIVersion), intern(o.Kind)
	}
	if m, err := meta.Accessor(in); err == nil {
		objectMeta(m)
	}
	return in, nil
}

func objectMeta(m metav1.Object) {
	// A nil check first: setting nil on an object that has none would allocate (and
	// hits kubernetes/kubernetes#124337 for some types), as controller-runtime notes.
	if m.GetManagedFields() != nil {
		m.SetManagedFields(nil)
	}
	m.SetNamespace(intern(m.GetNamespace()))
	if l := m.GetLabels(); len(l) > 0 {
		shared := make(map[string]string, len(l))
		for k, v := range l {
			if sharedLabelValues[k] {
				v = intern(v)
			}
			shared[intern(k)] = v
		}
		m.SetLabels(shared)
	}
	if a := m.GetAnnotations(); len(a) > 0 {
		shared := make(map[string]string, len(a))
		for k, v := range a {
			shared[intern(k)] = v
		}
		m.SetAnnotations(shared)
	}
	if refs := m.GetOwnerReferences(); len(refs) > 0 {
		for i := range refs {
			refs[i].APIVersion, refs[i].Kind = intern(refs[i].APIVersion), intern(refs[i].Kind)
		}
	}
}

func account(ca *pipesv1.ConnectedAccount) {
	s := &ca.Spec
	s.ProviderRef.Name = intern(s.ProviderRef.Name)
	s.OrganizationID = intern(s.OrganizationID)
	if s.APIKey != nil && s.APIKey.SecretKeyRef != nil {
		s.APIKey.SecretKeyRef.Key = intern(s.APIKey.SecretKeyRef.Key)
	}
	ca.Status.State = pipesv1.ConnectedAccountState(intern(string(ca.Status.State)))
	for i := range ca.Status.Conditions {
		c := &ca.Status.Conditions[i]
		c.Type, c.Reason, c.Message = intern(c.Type), intern(c.Reason), intern(c.Message)
		c.Status = metav1.ConditionStatus(intern(string(c.Status)))
	}
}

// intern returns the one copy of s kept while any object refers to it.
func intern(s string) string {
	if s == "" {
		return s
	}
	return unique.Make(s).Value()
}
