// Package chaos is the resilience suite of issue #15 (make chaos). It owns the failure
// scenarios the operator must survive without losing or doubling a write: the leader
// killed with SIGKILL while accounts are created and keys rotated through the backend
// API (scenario 1), and kube-apiserver, then etcd, restarted under the same load while
// vend sidecars serve credentials (scenario 2). The manager runs as two separate
// processes with leader election, as deployed, against the project's envtest control
// plane; the sidecars are the vend binary. With the default small sizes it runs in make
// test as a smoke test that asserts correctness only, never timing; make chaos runs the
// full size, prints the figures and writes a JSON report.
package chaos

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var (
	flagAccounts  = flag.Int("chaos.accounts", 100, "ConnectedAccounts each scenario creates through the backend API (make chaos: 1000)")
	flagRotations = flag.Int("chaos.rotations", 20, "keys each scenario rotates through the backend API (make chaos: 200)")
	flagKills     = flag.Int("chaos.kills", 2, "times the leader is killed with SIGKILL in scenario 1 (make chaos: 5)")
	flagSidecars  = flag.Int("chaos.sidecars", 3, "vend sidecar processes in scenario 2")
	flagBig       = flag.Bool("chaos.big-cluster", false, "first add 300 unrelated 1 MiB Secrets and 1,000 namespaces (issue #15 scenario 8)")
	flagGrace     = flag.Duration("chaos.grace", 10*time.Second, "how long a restarted control-plane process may take to stop after SIGTERM before it is killed")
	flagReport    = flag.String("chaos.report", "", "write the JSON report here (and keep the processes' logs beside it)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(m.Run())
}

// TestChaos runs both scenarios in order against one control plane and one pair of
// manager processes.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane, two manager processes and vend sidecars")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	h := startHarness(ctx, t)
	r := &Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(),
		Accounts: *flagAccounts, Rotations: *flagRotations}
	if *flagBig {
		r.BigCluster = h.bigCluster(ctx, t)
	}
	if !t.Run("manager killed", func(t *testing.T) { r.Killed = h.managerKilled(ctx, t, *flagKills) }) {
		h.finish(t, r)
		return
	}
	t.Run("control plane restarted", func(t *testing.T) { r.Restarts = h.controlPlaneRestarts(ctx, t, *flagSidecars) })
	h.finish(t, r)
}

// finish checks the logs, prints the figures and writes the report.
func (h *harness) finish(t *testing.T, r *Report) {
	r.Logs = h.logSummary(t)
	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out)
	if *flagReport != "" {
		if err := os.MkdirAll(filepath.Dir(*flagReport), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*flagReport, out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println(r.Summary())
}
