// Package memlimit owns the Go runtime's memory settings of the operator's binaries: a
// garbage-collection target tighter than Go's default, and a soft memory limit derived
// from the container's memory limit, so the heap is collected harder as it nears the
// limit instead of the container being OOM-killed. GOGC and GOMEMLIMIT, when set, win.
package memlimit

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Fraction of the container's memory limit given to the Go heap as its soft limit; the
// rest is for what the runtime does not count (stacks in use, the binary, cgroup page
// cache).
const Fraction = 0.9

// cgroupFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// Apply sets the GC percentage (unless GOGC is set) and, unless GOMEMLIMIT is set, a
// soft memory limit of Fraction of the container's limit when there is one. It returns
// the limit set, 0 when none.
func Apply(gcPercent int) int64 {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit := containerLimit(cgroupFiles)
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * Fraction)
	debug.SetMemoryLimit(soft)
	return soft
}

// containerLimit reads the first limit found in files; 0 when unlimited or unknown.
func containerLimit(files []string) int64 {
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(raw))
		if v == "max" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		// cgroup v1 reports "unlimited" as a huge number near MaxInt64.
		if err != nil || n <= 0 || n > 1<<50 {
			return 0
		}
		return n
	}
	return 0
}
