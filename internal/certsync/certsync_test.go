package certsync

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if written, err := Write(dir, map[string][]byte{}); err != nil || len(written) != 0 {
		t.Fatalf("an unfilled Secret writes nothing: %v %v", written, err)
	}
	data := map[string][]byte{"ca.crt": []byte("ca"), "tls.key": []byte("key"), "tls.crt": []byte("crt"), "other": []byte("x")}
	written, err := Write(dir, data)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(written, Files) {
		t.Fatalf("wrote %v, want %v (certificate last)", written, Files)
	}
	for _, name := range Files {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil || string(b) != string(data[name]) {
			t.Fatalf("%s = %q, %v", name, b, err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v: the key must be readable by the manager only", name, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(Files) {
		t.Fatalf("dir holds %d entries, want only %v (no temporary files, no keys outside Files)", len(entries), Files)
	}

	if written, err := Write(dir, data); err != nil || len(written) != 0 {
		t.Fatalf("unchanged data rewrites %v (%v): each write makes the servers reload", written, err)
	}
	data["tls.crt"], data["tls.key"] = []byte("crt2"), []byte("key2")
	if written, err := Write(dir, data); err != nil || !slices.Equal(written, []string{"tls.key", "tls.crt"}) {
		t.Fatalf("after a rotation wrote %v (%v), want [tls.key tls.crt]", written, err)
	}

	_, err = Write(filepath.Join(dir, "missing"), data)
	if err == nil || !strings.Contains(err.Error(), "writable volume") {
		t.Fatalf("writing into a missing directory: %v, want an error saying the directory must be writable", err)
	}
}
