package crypto

import (
	"fmt"
	"slices"

	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
)

// Keys are what every keyset type of the operator (the key-encryption keyset, the sealing
// keyset, the widget signing keyset) tells about its keys: the primary key's id and the
// enabled keys' ids. Embedded in those types, it gives them PrimaryKeyID, KeyIDs and Has.
type Keys struct {
	primary uint32
	enabled []uint32 // sorted
}

// ReadKeys reads h's key ids, calling check on each key first, so that a keyset type
// refuses keys of another kind than its own (what names it in errors: "crypto", "sealing").
func ReadKeys(h *keyset.Handle, what string, check func(*keyset.Entry) error) (Keys, error) {
	primary, err := h.Primary()
	if err != nil {
		return Keys{}, fmt.Errorf("%s: keyset has no primary key: %w", what, err)
	}
	enabled := make([]uint32, 0, h.Len())
	for i := range h.Len() {
		e, err := h.Entry(i)
		if err != nil {
			return Keys{}, fmt.Errorf("%s: read keyset entry %d: %w", what, i, err)
		}
		if err := check(e); err != nil {
			return Keys{}, err
		}
		if e.KeyStatus() == keyset.Enabled {
			enabled = append(enabled, e.KeyID())
		}
	}
	slices.Sort(enabled)
	return Keys{primary: primary.KeyID(), enabled: enabled}, nil
}

// PrimaryKeyID is the id of the key that encrypts, seals or signs.
func (k Keys) PrimaryKeyID() uint32 { return k.primary }

// KeyIDs returns the ids of all enabled keys, sorted.
func (k Keys) KeyIDs() []uint32 { return slices.Clone(k.enabled) }

// Has reports whether id is an enabled key.
func (k Keys) Has(id uint32) bool {
	_, ok := slices.BinarySearch(k.enabled, id)
	return ok
}

// Rotated builds, with build, the keyset of h with a fresh key of template t made
// primary; the old keys stay. h is unchanged.
func Rotated[K any](h *keyset.Handle, t *tinkpb.KeyTemplate, build func(*keyset.Handle) (K, error)) (K, error) {
	next, err := AddPrimary(h, t)
	if err != nil {
		var zero K
		return zero, err
	}
	return build(next)
}

// Pruned builds, with build, the keyset of h without the non-primary keys inUse
// rejects, and returns it with their ids; with nothing removed, it returns current.
func Pruned[K any](current K, h *keyset.Handle, inUse func(keyID uint32) bool, build func(*keyset.Handle) (K, error)) (K, []uint32, error) {
	var zero K
	next, removed, err := PruneHandle(h, inUse)
	if err != nil {
		return zero, nil, err
	}
	if len(removed) == 0 {
		return current, nil, nil
	}
	pruned, err := build(next)
	if err != nil {
		return zero, nil, err
	}
	return pruned, removed, nil
}
