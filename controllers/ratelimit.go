package controllers

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"

	"golang.org/x/time/rate"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// rateLimiter retries each object with exponential backoff (50 ms doubling to 5 min) and
// caps all retries together at 20 per second (bursts of 200), so a failing API server
// or a mass rotation is not hammered.
func rateLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](50*time.Millisecond, 5*time.Minute),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(20), 200)},
	)
}

// requeueOnStaleCache turns the errors of acting on a cache that had not yet seen the
// latest writes (an optimistic-concurrency conflict, creating what was just created,
// writing what was just deleted) into a quiet retry with backoff: they are expected
// under load and resolve once the cache catches up, so they are not errors to log with
// a stack trace.
func requeueOnStaleCache(ctx context.Context, res ctrl.Result, err error) (ctrl.Result, error) {
	if err != nil && (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)) {
		ctrl.LoggerFrom(ctx).V(1).Info("retrying on a newer copy", "reason", err.Error())
		return ctrl.Result{Requeue: true}, nil //nolint:staticcheck // Requeue: a rate-limited retry, as an error would give
	}
	return res, err
}
