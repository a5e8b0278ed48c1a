package crypto

import (
	"encoding/binary"
	"strconv"
)

// adVersion tags the associated-data encoding so that a future change of
// format can never produce the same bytes as this one. v2 added Version.
const adVersion = "pipes.dev/v2"

// Binding is where a ciphertext belongs. It becomes Tink associated data, so a
// ciphertext copied to another object or field fails to decrypt.
//
// UID is included so that deleting and re-creating an object with the same
// name does not make the old ciphertext valid for the new object. Version is the
// credential's version: a ciphertext cannot claim a version other than the one it
// was sealed for, so restoring an older ciphertext is detectable by its version.
type Binding struct {
	Namespace string
	Name      string
	UID       string
	Field     string
	Version   int64
}

// AssociatedData returns the unambiguous encoding of b used as AEAD associated
// data: the version tag and then each field, every element preceded by its
// length as a uvarint. Length prefixes make the encoding injective, so
// {Namespace: "a", Name: "bc"} and {Namespace: "ab", Name: "c"} differ.
func (b Binding) AssociatedData() []byte {
	fields := [...]string{adVersion, b.Namespace, b.Name, b.UID, b.Field, strconv.FormatInt(b.Version, 10)}
	n := 0
	for _, f := range fields {
		n += binary.MaxVarintLen64 + len(f)
	}
	ad := make([]byte, 0, n)
	for _, f := range fields {
		ad = binary.AppendUvarint(ad, uint64(len(f)))
		ad = append(ad, f...)
	}
	return ad
}
