package writetrack

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func secret(rv string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", ResourceVersion: rv}}
}

func TestBehind(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "s"}
	now := time.Unix(1000, 0)
	tr := &Tracker{now: func() time.Time { return now }}
	if tr.Behind(key, secret("5")) {
		t.Fatal("an object never written is not behind")
	}
	tr.Wrote(secret("10"))
	if !tr.Behind(key, nil) {
		t.Error("a cache without the object just created is behind")
	}
	if !tr.Behind(key, secret("9")) {
		t.Error("resourceVersion 9 is behind our write at 10")
	}
	// Numeric order, not string order: "9" < "10".
	if tr.Behind(key, secret("10")) || tr.Len() != 0 {
		t.Errorf("the copy we wrote is current and the write is forgotten (remembered: %d)", tr.Len())
	}
	tr.Wrote(secret("20"))
	if tr.Behind(key, secret("21")) {
		t.Error("a later write by someone else is current")
	}
	tr.Wrote(secret("30"))
	now = now.Add(Expiry + time.Second)
	if tr.Behind(key, nil) || tr.Len() != 0 {
		t.Error("a write is not waited for after Expiry")
	}
	tr.Wrote(secret("40"))
	tr.Forget(key)
	if tr.Behind(key, nil) {
		t.Error("a forgotten write is not waited for")
	}
	tr.Wrote(secret("not-a-number"))
	if tr.Behind(key, secret("3")) {
		t.Error("resourceVersions that cannot be compared trust the cache")
	}
}
