package backendapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// sample reads one series of a collector: a counter's value, or a histogram's count.
func sample(t *testing.T, c prometheus.Collector, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
	series:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue series
				}
			}
			if m.GetHistogram() != nil {
				return float64(m.GetHistogram().GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// Results are a fixed set, whatever a handler records for the audit line.
func TestResultLabelIsBounded(t *testing.T) {
	for in, want := range map[string]string{
		"ok":                                 "ok",
		"":                                   "canceled",
		wire.ErrorNotInstalled:               "not_installed",
		"not_installed:ProviderDisabled":     "not_installed",
		wire.ErrorNeedsReauthorization:       "needs_reauthorization",
		wire.CodeForbidden:                   "forbidden",
		wire.CodeInternal:                    "internal_error",
		wire.CodeUnavailable:                 "unavailable",
		"user_123 did something unexpected":  "other",
		"sk-live-0123456789abcdefghijklmnop": "other",
	} {
		if got := resultLabel(in); got != want {
			t.Errorf("resultLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every request is counted once by action and result in wrap, with its duration; the
// token cache counts a miss when a TokenReview is needed and a hit when it is not.
func TestRequestAndTokenCacheMetrics(t *testing.T) {
	var goodReviews atomic.Int64
	tr := NewTokenReviewer(acceptOnly("good", &goodReviews), time.Minute)
	s := &Server{Authn: tr, Log: logr.Discard(), Options: Options{RateLimit: 1000, PreAuthRateLimit: 1000}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	post := func(token, body string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/namespaces/ns/data-integrations/openai/credentials", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	vend := func(result string) map[string]string { return map[string]string{"action": "vend", "result": result} }
	token := func(result string) map[string]string { return map[string]string{"review": "token", "result": result} }
	series := []struct {
		name   string
		c      prometheus.Collector
		labels map[string]string
		want   float64 // increase
		before float64
	}{
		{name: "requests unauthorized", c: requestsTotal, labels: vend("unauthorized"), want: 3},
		{name: "requests invalid_request", c: requestsTotal, labels: vend("invalid_request"), want: 3},
		{name: "durations", c: requestDuration, labels: map[string]string{"action": "vend"}, want: 6},
		{name: "token hits", c: authCacheTotal, labels: token("hit"), want: 3},
		{name: "token misses", c: authCacheTotal, labels: token("miss"), want: 2},
	}
	for i := range series {
		series[i].before = sample(t, series[i].c, series[i].labels)
	}

	if code := post("", `{"user_id":"u"}`); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code := post("bad", `{"user_id":"u"}`); code != http.StatusUnauthorized { // reviewed: a miss
		t.Fatalf("bad token: %d", code)
	}
	if code := post("bad", `{"user_id":"u"}`); code != http.StatusUnauthorized { // the rejection is cached: a hit
		t.Fatalf("bad token again: %d", code)
	}
	for range 3 { // reviewed once (a miss), then known (two hits)
		if code := post("good", `not json`); code != http.StatusBadRequest {
			t.Fatalf("malformed body: %d", code)
		}
	}

	for _, s := range series {
		if got := sample(t, s.c, s.labels) - s.before; got != s.want {
			t.Errorf("%s: +%v, want +%v", s.name, got, s.want)
		}
	}
	if n := goodReviews.Load(); n != 1 {
		t.Errorf("the good token was reviewed %d times, want 1", n)
	}
}

// The access cache counts a miss for each SubjectAccessReview sent and a hit otherwise.
func TestAccessCacheMetrics(t *testing.T) {
	ar := NewAccessReviewer(reviews{create: func(obj client.Object) error {
		obj.(*authzv1.SubjectAccessReview).Status.Allowed = true
		return nil
	}}, time.Minute)
	access := func(result string) map[string]string { return map[string]string{"review": "access", "result": result} }
	hits, misses := sample(t, authCacheTotal, access("hit")), sample(t, authCacheTotal, access("miss"))
	id := &Identity{User: authnv1.UserInfo{Username: "system:serviceaccount:ns:app"}}
	for _, name := range []string{"a", "a", "a", "b"} {
		if _, _, err := ar.Authorize(context.Background(), id, "vend", "connectedaccounts", "ns", name); err != nil {
			t.Fatal(err)
		}
	}
	if got := sample(t, authCacheTotal, access("hit")) - hits; got != 2 {
		t.Errorf("access hits +%v, want +2", got)
	}
	if got := sample(t, authCacheTotal, access("miss")) - misses; got != 2 {
		t.Errorf("access misses +%v, want +2", got)
	}
}
