package keyadmin_test

import (
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
)

// FuzzLastBackup reads arbitrary backup annotations of a keyset Secret (when, and which
// key ids), which decide whether `kubectl pipes keys` warns of keys never backed up: no
// panic; no time, no keys; every key reported covered is one the annotation lists.
func FuzzLastBackup(f *testing.F) {
	for _, seed := range []struct{ at, ids string }{
		{"2026-01-02T03:04:05Z", "1,2,3"}, {"2026-01-02T03:04:05Z", ""}, {"", "1"}, {"yesterday", "1"},
		{"2026-01-02T03:04:05Z", " 4294967295 , 4294967296, -1, 0x10, ,,"}, {"2026-01-02T03:04:05+99:00", "1"},
		{"2026-01-02T03:04:05Z", strings.Repeat("1,", 50_000)}, {"\xff", "\xfe"},
	} {
		f.Add(seed.at, seed.ids)
	}
	f.Fuzz(func(t *testing.T, at, ids string) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			pipesv1.AnnotationKeysetBackedUpAt: at, pipesv1.AnnotationKeysetBackedUpKeyIDs: ids}}}
		b := keyadmin.LastBackup(s)
		if b.At.IsZero() && len(b.KeyIDs) > 0 {
			t.Fatalf("keys %v covered by a backup at no time", b.KeyIDs)
		}
		for _, id := range b.KeyIDs {
			if !strings.Contains(ids, strconv.FormatUint(uint64(id), 10)) || !b.Covers(id) {
				t.Fatalf("key %d reported covered, not listed in %.200q", id, ids)
			}
		}
	})
}
