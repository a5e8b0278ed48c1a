package crypto

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
)

func TestNewKeyset(t *testing.T) {
	k := mustKeyset(t)
	if ids := k.KeyIDs(); len(ids) != 1 || ids[0] != k.PrimaryKeyID() {
		t.Fatalf("KeyIDs() = %v, want exactly the primary %d", ids, k.PrimaryKeyID())
	}
	// Independent keysets must not share keys.
	if other := mustKeyset(t); other.PrimaryKeyID() == k.PrimaryKeyID() {
		t.Errorf("two new keysets share key id %d", k.PrimaryKeyID())
	}
}

func TestKeyIDsReturnsCopy(t *testing.T) {
	k := mustKeyset(t)
	ids := k.KeyIDs()
	ids[0]++
	if k.KeyIDs()[0] != k.PrimaryKeyID() {
		t.Error("modifying the KeyIDs result changed the keyset")
	}
}

func TestRotate(t *testing.T) {
	k1 := mustKeyset(t)
	s1 := NewSealer(k1)
	old := mustSeal(t, s1, apiKey64, testBinding)

	k2 := mustRotate(t, k1)
	s2 := NewSealer(k2)

	if k2.PrimaryKeyID() == k1.PrimaryKeyID() {
		t.Fatalf("Rotate kept primary %d", k1.PrimaryKeyID())
	}
	if want := sortedIDs(k1.PrimaryKeyID(), k2.PrimaryKeyID()); !slices.Equal(k2.KeyIDs(), want) {
		t.Errorf("rotated KeyIDs() = %v, want %v", k2.KeyIDs(), want)
	}
	// Keysets are values: rotating must not touch the original.
	if ids := k1.KeyIDs(); len(ids) != 1 || ids[0] != k1.PrimaryKeyID() {
		t.Errorf("Rotate modified the original keyset: KeyIDs() = %v", ids)
	}

	if pt, err := s2.Open(old.Ciphertext, testBinding); err != nil || !bytes.Equal(pt, apiKey64) {
		t.Fatalf("old ciphertext after rotation: pt=%q err=%v", pt, err)
	}

	fresh := mustSeal(t, s2, apiKey64, testBinding)
	if fresh.KeyID != k2.PrimaryKeyID() || fresh.KeyID == k1.PrimaryKeyID() {
		t.Errorf("Sealed.KeyID = %d, want new primary %d (old %d)", fresh.KeyID, k2.PrimaryKeyID(), k1.PrimaryKeyID())
	}
	if got := wrappingKeyID(t, fresh.Ciphertext); got != k2.PrimaryKeyID() {
		t.Errorf("new data key wrapped by key %d, want new primary %d", got, k2.PrimaryKeyID())
	}
	if s2.PrimaryKeyID() != k2.PrimaryKeyID() {
		t.Errorf("Sealer.PrimaryKeyID() = %d, want %d", s2.PrimaryKeyID(), k2.PrimaryKeyID())
	}
	// The old keyset does not know the new key.
	if _, err := s1.Open(fresh.Ciphertext, testBinding); !errors.Is(err, ErrDecrypt) {
		t.Errorf("pre-rotation sealer opened a post-rotation ciphertext: err=%v", err)
	}
}

func TestPrune(t *testing.T) {
	k1 := mustKeyset(t)
	c1 := mustSeal(t, NewSealer(k1), apiKey64, testBinding)
	k2 := mustRotate(t, k1)
	c2 := mustSeal(t, NewSealer(k2), apiKey64, testBinding)
	k3 := mustRotate(t, k2)
	c3 := mustSeal(t, NewSealer(k3), apiKey64, testBinding)
	id1, id2, id3 := c1.KeyID, c2.KeyID, c3.KeyID

	tests := []struct {
		name        string
		inUse       map[uint32]bool
		wantRemoved []uint32
	}{
		{"nothing in use removes all but primary", nil, sortedIDs(id1, id2)},
		{"keeps in-use old key", map[uint32]bool{id1: true}, []uint32{id2}},
		{"everything in use removes nothing", map[uint32]bool{id1: true, id2: true}, nil},
		{"primary reported unused is kept", map[uint32]bool{id1: true, id2: true, id3: false}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []uint32
			pruned, removed, err := k3.Prune(func(id uint32) bool {
				asked = append(asked, id)
				return tt.inUse[id]
			})
			if err != nil {
				t.Fatalf("Prune: %v", err)
			}
			if slices.Contains(asked, id3) {
				t.Errorf("Prune asked inUse about the primary %d", id3)
			}
			if !slices.Equal(removed, tt.wantRemoved) {
				t.Fatalf("removed = %v, want %v", removed, tt.wantRemoved)
			}
			if pruned.PrimaryKeyID() != id3 {
				t.Fatalf("primary after Prune = %d, want %d", pruned.PrimaryKeyID(), id3)
			}
			s := NewSealer(pruned)
			for _, c := range []Sealed{c1, c2, c3} {
				pt, err := s.Open(c.Ciphertext, testBinding)
				if slices.Contains(removed, c.KeyID) {
					if !errors.Is(err, ErrDecrypt) {
						t.Errorf("ciphertext under removed key %d: err=%v, want ErrDecrypt", c.KeyID, err)
					}
					if slices.Contains(pruned.KeyIDs(), c.KeyID) {
						t.Errorf("removed key %d still in KeyIDs %v", c.KeyID, pruned.KeyIDs())
					}
					continue
				}
				if err != nil || !bytes.Equal(pt, apiKey64) {
					t.Errorf("ciphertext under kept key %d: pt=%q err=%v", c.KeyID, pt, err)
				}
			}
			// Pruning must not touch the original.
			if !slices.Equal(k3.KeyIDs(), sortedIDs(id1, id2, id3)) {
				t.Errorf("Prune modified the original: KeyIDs() = %v", k3.KeyIDs())
			}
		})
	}
}

func TestPruneSingleKeyKeepsPrimary(t *testing.T) {
	k := mustKeyset(t)
	pruned, removed, err := k.Prune(func(uint32) bool { return false })
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if len(removed) != 0 || !slices.Equal(pruned.KeyIDs(), []uint32{k.PrimaryKeyID()}) {
		t.Errorf("Prune of a single-key keyset: removed=%v keys=%v", removed, pruned.KeyIDs())
	}
}

func TestPruneNilInUse(t *testing.T) {
	if _, _, err := mustKeyset(t).Prune(nil); err == nil {
		t.Error("Prune(nil) succeeded")
	}
}

func TestPruneRemovesDisabledKeys(t *testing.T) {
	k := mustRotate(t, mustKeyset(t))
	m := keyset.NewManagerFromHandle(k.handle)
	old := k.KeyIDs()[0]
	if old == k.PrimaryKeyID() {
		old = k.KeyIDs()[1]
	}
	if err := m.Disable(old); err != nil {
		t.Fatal(err)
	}
	h, err := m.Handle()
	if err != nil {
		t.Fatal(err)
	}
	withDisabled, err := newKeyset(h)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(withDisabled.KeyIDs(), []uint32{withDisabled.PrimaryKeyID()}) {
		t.Fatalf("KeyIDs() = %v, want only enabled primary", withDisabled.KeyIDs())
	}
	_, removed, err := withDisabled.Prune(func(uint32) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []uint32{old}) {
		t.Errorf("removed = %v, want disabled key %d", removed, old)
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	k := mustRotate(t, mustRotate(t, mustKeyset(t)))
	old := mustSeal(t, NewSealer(k), apiKey64, testBinding)

	js, err := k.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	if !json.Valid(js) {
		t.Fatalf("MarshalJSON output is not valid JSON")
	}
	// Through encoding/json too, since Keyset is a json.Marshaler.
	viaEncoding, err := json.Marshal(k)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}

	for name, in := range map[string][]byte{"MarshalJSON": js, "json.Marshal": viaEncoding} {
		t.Run(name, func(t *testing.T) {
			parsed, err := ParseKeyset(in)
			if err != nil {
				t.Fatalf("ParseKeyset: %v", err)
			}
			if parsed.PrimaryKeyID() != k.PrimaryKeyID() || !slices.Equal(parsed.KeyIDs(), k.KeyIDs()) {
				t.Errorf("parsed keyset ids %v primary %d, want %v primary %d",
					parsed.KeyIDs(), parsed.PrimaryKeyID(), k.KeyIDs(), k.PrimaryKeyID())
			}
			pt, err := NewSealer(parsed).Open(old.Ciphertext, testBinding)
			if err != nil || !bytes.Equal(pt, apiKey64) {
				t.Errorf("parsed keyset cannot open: pt=%q err=%v", pt, err)
			}
		})
	}
}

// tinkJSON serializes a keyset made from template, to feed ParseKeyset key
// types it must reject.
func tinkJSON(t *testing.T, template *tinkpb.KeyTemplate) []byte {
	t.Helper()
	h, err := keyset.NewHandle(template)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseKeysetErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		wantMsg string
	}{
		{"nil", nil, "empty"},
		{"empty", []byte{}, "empty"},
		{"whitespace", []byte(" \n\t"), "empty"},
		{"garbage", []byte("not json at all"), "not a valid Tink JSON keyset"},
		{"binary garbage", []byte{0x08, 0x01, 0x12, 0xff}, "not a valid Tink JSON keyset"},
		{"empty object", []byte("{}"), "not a valid Tink JSON keyset"},
		{"no keys", []byte(`{"primaryKeyId": 1, "key": []}`), "not a valid Tink JSON keyset"},
		{"truncated", []byte(`{"primaryKeyId": 1, "key": [{"keyData": {`), "not a valid Tink JSON keyset"},
		{"encrypted keyset", []byte(`{"encryptedKeyset": "AAAA", "keysetInfo": {"primaryKeyId": 1}}`), "encrypted"},
		{"AES-128-GCM", tinkJSON(t, aead.AES128GCMKeyTemplate()), "want AES-256-GCM"},
		{"XChaCha20-Poly1305", tinkJSON(t, aead.XChaCha20Poly1305KeyTemplate()), "want AES-256-GCM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKeyset(tt.in)
			if err == nil {
				t.Fatalf("ParseKeyset succeeded with %d key(s)", len(k.KeyIDs()))
			}
			if !strings.HasPrefix(err.Error(), "crypto: ") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q, want it to start with \"crypto: \" and mention %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), `"value"`) || (len(tt.in) > 16 && strings.Contains(err.Error(), string(tt.in))) {
				t.Errorf("error echoes the (secret) input: %q", err)
			}
		})
	}
}

func TestLoadKeysetFile(t *testing.T) {
	dir := t.TempDir()
	k := mustKeyset(t)
	js, err := k.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "keyset.json")
	bad := filepath.Join(dir, "garbage.json")
	missing := filepath.Join(dir, "does-not-exist.json")
	if err := os.WriteFile(good, js, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}

	loaded, err := LoadKeysetFile(good)
	if err != nil {
		t.Fatalf("LoadKeysetFile(%s): %v", good, err)
	}
	if loaded.PrimaryKeyID() != k.PrimaryKeyID() {
		t.Errorf("loaded primary %d, want %d", loaded.PrimaryKeyID(), k.PrimaryKeyID())
	}

	_, err = LoadKeysetFile(missing)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: err = %v, want it to name %s", err, missing)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want errors.Is fs.ErrNotExist", err)
	}

	_, err = LoadKeysetFile(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "not a valid Tink JSON keyset") {
		t.Errorf("garbage file: err = %v, want it to name %s and say why", err, bad)
	}
}

func sortedIDs(ids ...uint32) []uint32 {
	slices.Sort(ids)
	return ids
}
