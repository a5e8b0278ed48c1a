// Package scale is the scale benchmark (make bench-scale): the manager runs as a separate
// process, as in production, against the project's envtest control plane, and the suite
// measures first sync, a rotation storm, keyset re-encryption, memory with a big cluster,
// the backend API as a client sees it, a restart, and the leader refreshing OAuth tokens
// issued together ahead of expiry. With the default small N it runs in
// make test as a smoke test that asserts correctness only, never timing.
package scale

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

var (
	flagN           = flag.Int("scale.n", 100, "ConnectedAccounts to create (make bench-scale: 10000)")
	flagUnrelated   = flag.Int("scale.unrelated-secrets", 3, "unrelated 1 MiB Secrets added in the memory phase (bench: 300)")
	flagNamespaces  = flag.Int("scale.namespaces", 10, "unrelated namespaces added in the memory phase (bench: 1000)")
	flagCallers     = flag.Int("scale.callers", 10, "distinct backend API callers (bench: 100)")
	flagRate        = flag.Int("scale.rate", 200, "paced vend requests per second (bench: 1000)")
	flagVendFor     = flag.Duration("scale.vend-duration", 3*time.Second, "length of the paced vend run (bench: 20s)")
	flagWatchers    = flag.Int("scale.watched", 64, "accounts watched through the backend API's watch route during the rotation storm, 32 per watcher as a sidecar does (bench: 1000)")
	flagReport      = flag.String("scale.report", "", "write the JSON report here")
	flagLifetime    = flag.Duration("scale.token-lifetime", 20*time.Second, "lifetime of the OAuth access tokens of the OAuth refresh phase, all issued together (bench: 2m)")
	flagManagerEnv  = flag.String("scale.manager-env", "", "extra environment of the manager process only, e.g. GOGC=25 (tuning experiments)")
	flagManagerArgs = flag.String("scale.manager-args", "", "extra flags of the manager process, e.g. --account-workers=64 (tuning experiments)")
)

func TestMain(m *testing.M) {
	if os.Getenv(loadgenEnv) != "" {
		os.Exit(runLoadgen())
	}
	flag.Parse()
	// The suite's own informers log through controller-runtime; errors only, so a run's
	// output is its figures.
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	os.Exit(m.Run())
}

// TestScale runs every phase in order against one control plane and one manager process.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and the manager binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	h := startHarness(ctx, t, *flagN)

	r := &Report{Date: time.Now().UTC().Format(time.RFC3339), N: *flagN}
	r.Machine = machine()
	r.WriteLimit = h.measureWriteLimit(ctx, t)
	h.startManager(ctx, t)
	h.createProvider(ctx, t)
	r.FirstSync = h.firstSync(ctx, t, r.WriteLimit)
	r.Rotation = h.rotationStorm(ctx, t)
	r.KeysetRotation = h.keysetRotation(ctx, t)
	r.Memory = h.memory(ctx, t, *flagUnrelated, *flagNamespaces)
	r.API = h.backendAPI(ctx, t, *flagCallers, *flagRate, *flagVendFor)
	r.Restart = h.restart(ctx, t)
	// Last: its tokens go on being refreshed, which the restart's write count must not see.
	r.OAuthRefresh = h.oauthRefresh(ctx, t, *flagLifetime)
	r.ManagerLog = h.logSummary()

	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out)
	if *flagReport != "" {
		if err := os.MkdirAll(filepath.Dir(*flagReport), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*flagReport, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println(r.Summary())
}
