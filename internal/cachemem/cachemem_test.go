package cachemem

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// storedAccount is the account i as the API server sends it after its first sync.
func storedAccount(i int) []byte {
	now := metav1.NewTime(time.Date(2026, 11, 30, 14, 35, 16, 0, time.UTC))
	ca := &pipesv1.ConnectedAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "pipes.dev/v1alpha1", Kind: "ConnectedAccount"},
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("user-%06d", i), Namespace: "scale", UID: types.UID(fmt.Sprintf("a9340992-97de-4b89-a6c2-%012d", i)),
			ResourceVersion: fmt.Sprint(1000 + i), Generation: 1, CreationTimestamp: now,
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "manager", Operation: "Update", APIVersion: "pipes.dev/v1alpha1",
				FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:status":{"f:apiKeyLast4":{},"f:state":{}}}`), Subresource: "status"}},
		},
		Spec: pipesv1.ConnectedAccountSpec{
			ProviderRef: pipesv1.LocalObjectReference{Name: "openai"}, UserID: fmt.Sprintf("u%06d", i),
			APIKey: &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: fmt.Sprintf("src-%06d", i), Key: "api-key"}},
		},
		Status: pipesv1.ConnectedAccountStatus{
			ObservedGeneration: 1, State: pipesv1.StateConnected, APIKeyLast4: fmt.Sprintf("%04d", i%10000),
			CredentialSecretRef: &pipesv1.LocalObjectReference{Name: fmt.Sprintf("user-%06d-credential", i)},
			CredentialVersion:   1, LastRotatedTime: &now, EncryptionKeyID: 876771541,
			Conditions: []metav1.Condition{
				{Type: "Synced", Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: now, Reason: "Ready", Message: "the stored key matches spec.apiKey.secretKeyRef"},
				{Type: "Ready", Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: now, Reason: "Connected", Message: "the API key is stored encrypted and can be vended"},
			},
		},
	}
	raw, err := json.Marshal(ca)
	if err != nil {
		panic(err)
	}
	return raw
}

// storedSecret is account i's credential Secret as the API server sends it (protobuf).
func storedSecret(i int) []byte {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("user-%06d-credential", i), Namespace: "scale", UID: types.UID(fmt.Sprintf("a0d8b0a4-04ff-42e6-a5c7-%012d", i)),
			ResourceVersion: fmt.Sprint(1000 + i),
			Labels: map[string]string{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: pipesv1.ComponentCredential,
				pipesv1.LabelConnectedAccount: fmt.Sprintf("user-%06d", i), pipesv1.LabelProvider: "openai"},
			Annotations: map[string]string{pipesv1.AnnotationAPIKeyLast4: "53b9", pipesv1.AnnotationCredentialVersion: "1",
				pipesv1.AnnotationKeyID: "876771541", pipesv1.AnnotationRotatedAt: "2026-11-30T14:35:16.637756234Z",
				pipesv1.AnnotationSourceVersion: fmt.Sprintf("571389e2-4846-4751-ae87-%012d/232", i)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "pipes.dev/v1alpha1", Kind: "ConnectedAccount",
				Name: fmt.Sprintf("user-%06d", i), UID: types.UID(fmt.Sprintf("8fddd4dd-cc8b-4e79-8bce-%012d", i))}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "manager", Operation: "Update", APIVersion: "v1", FieldsType: "FieldsV1",
				FieldsV1: metav1.NewFieldsV1(`{"f:data":{".":{},"f:ciphertext":{}}}`)}},
		},
		Data: map[string][]byte{"ciphertext": make([]byte, 140)},
		Type: pipesv1.CredentialSecretType,
	}
	raw, err := s.Marshal()
	if err != nil {
		panic(err)
	}
	return raw
}

func decodeAccount(t testing.TB, raw []byte) *pipesv1.ConnectedAccount {
	var ca pipesv1.ConnectedAccount
	if err := json.Unmarshal(raw, &ca); err != nil {
		t.Fatal(err)
	}
	return &ca
}

func decodeSecret(t testing.TB, raw []byte) *corev1.Secret {
	var s corev1.Secret
	if err := s.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	return &s
}

// sameMemory says whether a and b are one copy in memory (their data pointers).
func sameMemory(a, b string) bool {
	return unsafe.StringData(a) == unsafe.StringData(b) //nolint:gosec // G103: compares addresses, reads nothing
}

func TestTransformKeepsContentAndSharesRepeats(t *testing.T) {
	a, b := decodeAccount(t, storedAccount(1)), decodeAccount(t, storedAccount(2))
	want := a.DeepCopy()
	want.ManagedFields = nil
	if _, err := Transform(a); err != nil {
		t.Fatal(err)
	}
	if _, err := Transform(b); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(a, want) {
		t.Fatalf("the transform changed the account:\n got %+v\nwant %+v", a, want)
	}
	for what, pair := range map[string][2]string{
		"namespace":         {a.Namespace, b.Namespace},
		"provider":          {a.Spec.ProviderRef.Name, b.Spec.ProviderRef.Name},
		"condition message": {a.Status.Conditions[1].Message, b.Status.Conditions[1].Message},
		"state":             {string(a.Status.State), string(b.Status.State)},
	} {
		if !sameMemory(pair[0], pair[1]) {
			t.Errorf("%s: two accounts keep two copies of %q", what, pair[0])
		}
	}
	if sameMemory(a.Spec.UserID, b.Spec.UserID) {
		t.Error("different user IDs share memory")
	}

	s1, s2 := decodeSecret(t, storedSecret(1)), decodeSecret(t, storedSecret(2))
	wantSecret := s1.DeepCopy()
	wantSecret.ManagedFields = nil
	for _, s := range []*corev1.Secret{s1, s2} {
		if _, err := Transform(s); err != nil {
			t.Fatal(err)
		}
	}
	if !equality.Semantic.DeepEqual(s1, wantSecret) {
		t.Fatalf("the transform changed the Secret:\n got %+v\nwant %+v", s1, wantSecret)
	}
	if !sameMemory(s1.Labels[pipesv1.LabelProvider], s2.Labels[pipesv1.LabelProvider]) {
		t.Error("the provider label's value is kept twice")
	}
	if !sameMemory(s1.OwnerReferences[0].Kind, s2.OwnerReferences[0].Kind) {
		t.Error("the owner's kind is kept twice")
	}
}

// BenchmarkCachedObject reports the heap each cached account and credential Secret keeps,
// decoded as the informers decode them, with Transform and with controller-runtime's
// TransformStripManagedFields alone.
func BenchmarkCachedObject(b *testing.B) {
	const n = 2000
	for _, kind := range []struct {
		name   string
		decode func(i int) any
	}{
		{"account", func(i int) any { return decodeAccount(b, storedAccount(i)) }},
		{"secret", func(i int) any { return decodeSecret(b, storedSecret(i)) }},
	} {
		for _, transform := range []struct {
			name string
			fn   toolscache.TransformFunc
		}{{"strip-managed-fields", cache.TransformStripManagedFields()}, {"cachemem", Transform}} {
			b.Run(kind.name+"/"+transform.name, func(b *testing.B) {
				var perObject float64
				for b.Loop() {
					kept := make([]any, n)
					before := liveHeap()
					for i := range kept {
						kept[i] = kind.decode(i)
						_, _ = transform.fn(kept[i])
					}
					perObject = (liveHeap() - before) / n
					runtime.KeepAlive(kept)
				}
				b.ReportMetric(perObject, "B/object")
			})
		}
	}
}

func liveHeap() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc)
}
