package sealing

import "sync/atomic"

// Opener opens sealed values with the current sealing keyset, swapped atomically when
// the keyset is rotated or pruned. It is safe for concurrent use.
type Opener struct {
	current atomic.Pointer[Keyset]
}

// NewOpener returns an Opener holding ks.
func NewOpener(ks *Keyset) *Opener {
	o := &Opener{}
	o.current.Store(ks)
	return o
}

// Keyset is the current keyset.
func (o *Opener) Keyset() *Keyset { return o.current.Load() }

// Update replaces the keyset and reports whether the primary key changed.
func (o *Opener) Update(ks *Keyset) bool {
	return o.current.Swap(ks).PrimaryKeyID() != ks.PrimaryKeyID()
}

// Open opens value sealed for c with the current keyset (see [Keyset.Open]).
func (o *Opener) Open(value string, c Context) ([]byte, error) {
	return o.current.Load().Open(value, c)
}
