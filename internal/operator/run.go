package operator

import (
	"context"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
)

// Run assembles the manager and runs it until ctx ends.
//
// A leader that cannot renew its lease within the renew deadline (10 s), as when
// kube-apiserver or etcd restarts, loses leadership, and controller-runtime's manager
// then stops for good; most operators exit and wait for the kubelet to restart them.
// Run does not end the process for that: the stopped manager's contexts are cancelled,
// so its leader-only work ends at once (and no other replica can take the lease before
// it expires, 5 s after the renew deadline), and Run assembles a fresh manager in the
// same process, which serves again as soon as the API server answers and campaigns for
// the lease like any replica. The pod is not restarted: no restart count that looks
// like a crash, no CrashLoopBackOff delay. A manager started again this way that fails
// (a port of the stopped one not yet released, the API server still away) is retried
// with backoff; any other error ends Run, as does a first start that fails.
func Run(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	op, err := New(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	again, backoff := false, time.Second
	for {
		log.Info("starting manager", "namespace", o.Namespace)
		err := op.Manager.Start(ctx)
		switch {
		case ctx.Err() != nil:
			return err
		case err != nil && strings.Contains(err.Error(), leadershipLost):
			log.Info("leadership lost while the API server could not be reached; starting the manager again in this process, as a candidate for the lease")
			backoff = time.Second
		case again && err != nil:
			log.Error(err, "the manager started again in this process failed; retrying", "retryIn", backoff.String())
			backoff = min(2*backoff, 30*time.Second)
		default:
			return err
		}
		again = true
		// Controllers' names are process-wide: the next manager reuses them.
		o.SkipNameValidation = true
		// Let the stopped manager's listeners close before the next one binds them.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		if op = newWhenReachable(ctx, cfg, o, log); op == nil {
			return nil
		}
	}
}

// newWhenReachable assembles a manager, retrying while that fails (New reads the
// keysets from the API server, and binds the probe port), until ctx ends (nil).
func newWhenReachable(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) *Operator {
	backoff := 500 * time.Millisecond
	for {
		op, err := New(ctx, cfg, o, log)
		if err == nil {
			return op
		}
		log.Info("assembling the manager again failed; retrying", "error", err.Error(), "retryIn", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}
