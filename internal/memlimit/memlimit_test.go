package memlimit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestContainerLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2 := write("memory.max", "268435456\n")
	unlimited := write("unlimited", "max\n")
	v1Unlimited := write("v1", "9223372036854771712\n")
	for _, tc := range []struct {
		name  string
		files []string
		want  int64
	}{
		{"cgroup v2 limit", []string{v2}, 256 << 20},
		{"no limit", []string{unlimited}, 0},
		{"cgroup v1 without a limit", []string{v1Unlimited}, 0},
		{"first existing file wins", []string{filepath.Join(dir, "absent"), v2}, 256 << 20},
		{"no cgroup files", []string{filepath.Join(dir, "absent")}, 0},
	} {
		if got := containerLimit(tc.files); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
