package backendapi

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Metrics of the backend API. Labels are bounded by construction: action is a route's
// fixed name, result one of resultValues; never a user, organization, slug, namespace or
// account, which are unbounded and may identify people (the audit log has those).
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pipes_api_requests_total",
		Help: "Backend API requests by action (route) and result: ok, a wire error code (forbidden, rate_limited, internal_error…), or the vend outcome (not_installed, needs_reauthorization).",
	}, []string{"action", "result"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "pipes_api_request_duration_seconds",
		Help: "Time to answer a backend API request, by action; action=\"watch\" is the sidecars' long poll, which waits up to its timeout by design.",
		// Vends take about a millisecond; the long poll waits up to 60 s.
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"action"})
	authCacheTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pipes_api_auth_cache_requests_total",
		Help: "Lookups in the backend API's caches of TokenReview (review=\"token\") and SubjectAccessReview (review=\"access\") answers; a miss costs a request to the Kubernetes API server.",
	}, []string{"review", "result"})
)

// Review kinds and outcomes of pipes_api_auth_cache_requests_total.
const (
	reviewToken  = "token"
	reviewAccess = "access"
	cacheHit     = "hit"
	cacheMiss    = "miss"
)

func init() {
	// Every series exists from the start, so rates and ratios have no gaps.
	for _, review := range []string{reviewToken, reviewAccess} {
		for _, result := range []string{cacheHit, cacheMiss} {
			authCacheTotal.WithLabelValues(review, result)
		}
	}
}

// Collectors are the backend API's metrics, for the manager's registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{requestsTotal, requestDuration, authCacheTotal}
}

// resultValues are the results metrics may carry; resultLabel maps anything else to "other".
var resultValues = map[string]bool{
	"ok": true, "canceled": true,
	wire.ErrorNotInstalled: true, wire.ErrorNeedsReauthorization: true,
	wire.CodeInvalidRequest: true, wire.CodeUnauthorized: true, wire.CodeForbidden: true, wire.CodeNotFound: true,
	wire.CodeConflict: true, wire.CodeAuthMethodMismatch: true, wire.CodeRequestTooLarge: true, wire.CodeRateLimited: true,
	wire.CodeNotImplemented: true, wire.CodeUnavailable: true, wire.CodeInternal: true,
	wire.CodeSessionExpired: true, wire.CodeProviderDisabled: true,
}

// resultLabel turns a call's audit result into a bounded label value. The audit line
// keeps the detail ("not_installed:ProviderDisabled"); the metric keeps the class.
// An empty result means the handler answered nothing: the caller went away.
func resultLabel(result string) string {
	if result == "" {
		return "canceled"
	}
	result, _, _ = strings.Cut(result, ":")
	if resultValues[result] {
		return result
	}
	return "other"
}

func recordAuthCache(review string, hit bool) {
	result := cacheMiss
	if hit {
		result = cacheHit
	}
	authCacheTotal.WithLabelValues(review, result).Inc()
}
