// Package writetrack remembers the resourceVersion of this process's own last write of
// each object, so that code reading from an informer cache can tell a cached copy that
// has not yet caught up with that write (and wait for its watch event) from a current
// one. Acting on such a copy repeats the write: a second status patch, a create that
// fails with AlreadyExists, or a credential that looks rolled back.
package writetrack

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Expiry bounds how long a write is remembered: a cache is seconds behind at most, and
// an object deleted by someone else before the cache saw the write must not be waited
// for forever.
const Expiry = 30 * time.Second

// Tracker remembers writes of one kind of object. The zero value is ready to use.
type Tracker struct {
	writes sync.Map // types.NamespacedName -> write
	now    func() time.Time
}

type write struct {
	resourceVersion string
	at              time.Time
}

func (t *Tracker) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

// Wrote records obj, as the API server returned it from a create, update or patch.
func (t *Tracker) Wrote(obj client.Object) {
	t.writes.Store(client.ObjectKeyFromObject(obj), write{resourceVersion: obj.GetResourceVersion(), at: t.clock()})
}

// Forget drops what is remembered of key (after deleting it).
func (t *Tracker) Forget(key types.NamespacedName) { t.writes.Delete(key) }

// Behind reports whether cached, the cache's copy of the object at key (nil when the
// cache has none), predates this process's last write of it.
func (t *Tracker) Behind(key types.NamespacedName, cached client.Object) bool {
	v, ok := t.writes.Load(key)
	if !ok {
		return false
	}
	w := v.(write)
	if t.clock().Sub(w.at) > Expiry {
		t.writes.CompareAndDelete(key, v)
		return false
	}
	if cached == nil {
		return true
	}
	cmp, err := resourceversion.CompareResourceVersion(cached.GetResourceVersion(), w.resourceVersion)
	if err != nil || cmp >= 0 {
		// Caught up (or not comparable, when trusting the cache is all there is to do).
		t.writes.CompareAndDelete(key, v)
		return false
	}
	return true
}

// Len is how many writes are remembered (for tests).
func (t *Tracker) Len() int {
	n := 0
	t.writes.Range(func(any, any) bool { n++; return true })
	return n
}
