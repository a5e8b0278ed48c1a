// Package backendapi owns the manager's HTTPS JSON API, wire-compatible with the hosted
// Pipes API: upsert an API key, vend credentials, list providers, disconnect, and
// organization settings. Callers authenticate with Kubernetes tokens (TokenReview) and
// are authorized per call with SubjectAccessReview against pipes.dev RBAC, including the
// custom verb "vend" on connectedaccounts.
package backendapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/serve"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// MaxBodyBytes caps request bodies.
const MaxBodyBytes = 64 << 10

// Options configure the server.
type Options struct {
	// Addr to listen on, e.g. ":8443" or "127.0.0.1:0".
	Addr string
	// CertDir holds tls.crt and tls.key (reloaded when they change).
	CertDir string
	// RateLimit is the sustained requests per second allowed per identity (burst: twice that).
	RateLimit float64
	// PreAuthRateLimit is the sustained requests per second allowed per source address
	// for requests whose token is not already verified (burst: twice that; default 20).
	PreAuthRateLimit float64
	// WaitFor, when not nil, delays serving until it is closed (the certificate exists).
	WaitFor <-chan struct{}
}

// Server serves the backend API. It runs on every replica (no leader election): it only
// reads through the cache and writes with optimistic concurrency.
type Server struct {
	Client    client.Client   // the manager's cached client
	Informers cache.Informers // the manager's cache, whose changes wake long polls
	APIReader client.Reader   // uncached, for read-your-writes after the cache lags
	Store     *credential.Store
	Recorder  events.EventRecorder
	Authn     Authenticator
	Authz     Authorizer
	// Widgets issues widget tokens (POST /widgets/token) and verifies them on the widget
	// API (WidgetHandler); nil disables both.
	Widgets *widgettoken.Tokens
	// OAuth runs OAuth providers' flows; nil answers them 501.
	OAuth   *OAuthFlow
	Log     logr.Logger
	Options Options

	identities *limiters // by username
	sources    *limiters // by remote IP, before authentication
	outage     outageLog
	changes    *changes
	once       sync.Once
	serve.Bound
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	s.init()
	if err := s.watchInformers(ctx, s.Informers); err != nil {
		return err
	}
	if s.Options.WaitFor != nil {
		select {
		case <-s.Options.WaitFor:
		case <-ctx.Done():
			return nil
		}
	}
	return serve.Serve(ctx, serve.Options{Name: "backend API", Addr: s.Options.Addr, CertDir: s.Options.CertDir, Listening: func(ln net.Listener) {
		s.Set(ln)
		s.Log.Info("serving backend API", "addr", ln.Addr().String())
	}}, s.Handler())
}

func (s *Server) init() {
	s.once.Do(func() {
		s.changes = newChanges()
		s.identities = newLimiters(s.Options.RateLimit, 50)
		s.sources = newLimiters(s.Options.PreAuthRateLimit, 20)
		s.outage.sometimes.Interval = outageLogInterval
	})
}

// Handler routes every endpoint, both in the caller's namespace and under /namespaces/{namespace}.
func (s *Server) Handler() http.Handler {
	s.init()
	mux := http.NewServeMux()
	routes := []route{
		{"PUT /data-integrations/{slug}/api-key", "upsert_api_key", s.upsertAPIKey},
		{"POST /data-integrations/{slug}/credentials", "vend", s.vendCredentials},
		{"POST /data-integrations/{slug}/token", "vend_token", s.vendToken},
		{"POST /credentials/watch", "watch", s.watchCredentials},
		{"GET /user_management/users/{user_id}/data_providers", "list_data_providers", s.listDataProviders},
		{"GET /user_management/users/{user_id}/connected_accounts/{slug}", "get_connected_account", s.getConnectedAccount},
		{"DELETE /user_management/users/{user_id}/connected_accounts/{slug}", "disconnect", s.disconnect},
		{"GET /organizations/{organization_id}/data_integration_configurations", "list_org_configs", s.listOrgConfigs},
		{"PUT /organizations/{organization_id}/data_integration_configurations/{slug}", "put_org_config", s.putOrgConfig},
		{"POST /widgets/token", "widget_token", s.issueWidgetToken},
		{"POST /data-integrations/{slug}/authorize", "authorize", s.authorizeOAuth},
		{"POST /user_management/users/{user_id}/connected_accounts/{slug}", "import_connected_account", s.importConnectedAccount},
	}
	s.register(mux, routes, s.authenticate, "", "/namespaces/{namespace}")
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, wire.ErrorResponse{Code: wire.CodeNotFound, Message: fmt.Sprintf("no route %s %s; see docs/api.md", r.Method, r.URL.Path)})
	})
	return mux
}

// route is one endpoint: its pattern, its audit action, its handler.
type route struct {
	pattern string
	action  string
	fn      func(*call) error
}

// register adds routes to mux under each of prefixes, authenticated by authenticate.
func (s *Server) register(mux *http.ServeMux, routes []route, authenticate func(*call) error, prefixes ...string) {
	for _, r := range routes {
		method, path, _ := strings.Cut(r.pattern, " ")
		for _, prefix := range prefixes {
			mux.Handle(method+" "+prefix+path, s.wrap(r.action, authenticate, r.fn))
		}
	}
}

// apiError is an error with its HTTP status and code.
type apiError struct {
	status  int
	code    string
	message string
	header  http.Header
}

func (e *apiError) Error() string { return e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// call is one authenticated request.
type call struct {
	w         http.ResponseWriter
	r         *http.Request
	ctx       context.Context
	id        *Identity
	namespace string
	s         *Server
	// session is the widget token's binding on the widget API (nil on the backend API):
	// it replaces RBAC, and the handlers act on its user's connections only.
	session *widgettoken.Claims
	// audit fields, logged once the call ends
	auditAccount string
	result       string
}

func (s *Server) wrap(action string, authenticate func(*call) error, fn func(*call) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c := &call{w: w, r: r, ctx: r.Context(), s: s}
		err := authenticate(c)
		if err == nil {
			c.r.Body = http.MaxBytesReader(c.w, c.r.Body, MaxBodyBytes)
			err = fn(c)
		}
		var (
			ae          *apiError
			unavailable errReviewUnavailable
		)
		switch {
		case err == nil:
		case errors.As(err, &ae):
			for k, v := range ae.header {
				w.Header()[k] = v
			}
			writeJSON(w, ae.status, wire.ErrorResponse{Code: ae.code, Message: ae.message})
			c.result = ae.code
		case errors.As(err, &unavailable) || errors.Is(err, context.DeadlineExceeded):
			// A dependency (the API server) failed or is slow: retryable, and never an
			// answer made without the review it stood for.
			s.outage.failed(s.Log, err, action, r.URL.Path)
			w.Header().Set("Retry-After", "2")
			writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Code: wire.CodeUnavailable, Message: unavailableMessage(err)})
			c.result = wire.CodeUnavailable
		default:
			s.Log.Error(err, "backend API request failed", "action", action, "path", r.URL.Path)
			writeJSON(w, http.StatusInternalServerError, wire.ErrorResponse{Code: wire.CodeInternal, Message: "internal error; the operator's log has details"})
			c.result = wire.CodeInternal
		}
		user := ""
		if c.id != nil {
			user = c.id.User.Username
		}
		elapsed := time.Since(start)
		// Audit line: who did what to which account, and the outcome; never a secret.
		s.Log.Info("audit", "action", action, "user", user, "namespace", c.namespace, "slug", r.PathValue("slug"),
			"account", c.auditAccount, "result", c.result, "duration", elapsed.String())
		// Metrics: the same outcome, without who or which (see metrics.go).
		requestsTotal.WithLabelValues(action, resultLabel(c.result)).Inc()
		requestDuration.WithLabelValues(action).Observe(elapsed.Seconds())
	})
}

// authenticate verifies the caller's Kubernetes token (TokenReview) and sets the call's
// namespace: the route's, or the caller's ServiceAccount's.
func (s *Server) authenticate(c *call) error {
	token, ok := strings.CutPrefix(c.r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return errorf(http.StatusUnauthorized, wire.CodeUnauthorized, "missing bearer token: send 'Authorization: Bearer <token>' with a Kubernetes ServiceAccount token")
	}
	id := s.Authn.Known(token)
	if id == nil {
		// Tokens not verified recently are limited per source address before they can cost
		// a TokenReview, so made-up tokens cannot turn into a flood of reviews; callers
		// whose token is cached never wait on this.
		source := remoteIP(c.r)
		if delay := s.sources.take(time.Now(), source); delay > 0 {
			return rateLimited(delay, "too many requests with tokens not yet verified from %s", source)
		}
		var err error
		id, err = s.Authn.Authenticate(c.ctx, token)
		var unauth errUnauthenticated
		switch {
		case errors.As(err, &unauth):
			return errorf(http.StatusUnauthorized, wire.CodeUnauthorized, "%s", unauth.reason)
		case errors.Is(err, errTokenReviewsBusy):
			e := errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "%s; retry in a second (callers whose token was verified recently are not affected)", err)
			e.header = http.Header{"Retry-After": {"1"}}
			return e
		case err != nil:
			return err
		}
	}
	c.id = id
	if delay := s.identities.take(time.Now(), id.User.Username); delay > 0 {
		return rateLimited(delay, "too many requests from %s", id.User.Username)
	}
	c.namespace = c.r.PathValue("namespace")
	if c.namespace == "" {
		c.namespace = id.Namespace
	}
	if c.namespace == "" {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "%s is not a ServiceAccount, so there is no default namespace: use /namespaces/{namespace}%s", id.User.Username, c.r.URL.Path)
	}
	return nil
}

// authorize checks verb on a pipes.dev resource in the call's namespace.
func (c *call) authorize(verb, resource, name string) error {
	if c.session != nil {
		return c.sessionAllows(verb, resource)
	}
	allowed, reason, err := c.s.Authz.Authorize(c.ctx, c.id, verb, resource, c.namespace, name)
	if err != nil {
		return err
	}
	if allowed {
		return nil
	}
	target := resource + ".pipes.dev"
	if name != "" {
		target += " " + strconv.Quote(name)
	}
	msg := fmt.Sprintf("%s may not %s %s in namespace %q", c.id.User.Username, verb, target, c.namespace)
	if hint := roleHint(verb, resource); hint != "" {
		msg += "; " + hint
	}
	if reason != "" {
		msg += " (" + reason + ")"
	}
	c.result = "forbidden"
	return errorf(http.StatusForbidden, wire.CodeForbidden, "%s", msg)
}

func roleHint(verb, resource string) string {
	switch {
	case resource == "connectedaccounts" && verb == "vend":
		return "bind the ClusterRole pipes-vendor (or pipes-backend) in that namespace"
	case resource == "connectedaccounts" || resource == "organizationproviders":
		return "bind the ClusterRole pipes-backend in that namespace"
	}
	return ""
}

// decode reads a JSON body strictly: unknown fields and trailing data are errors.
func (c *call) decode(v any) error {
	dec := json.NewDecoder(c.r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return errorf(http.StatusRequestEntityTooLarge, wire.CodeRequestTooLarge, "request body exceeds %d bytes", MaxBodyBytes)
		}
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "malformed JSON body: %s", jsonErrorText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "malformed JSON body: unexpected data after the JSON object")
	}
	return nil
}

// jsonErrorText describes a decoding error without quoting the input (which may hold a secret).
func jsonErrorText(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("syntax error at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ") + "; see docs/api.md for the accepted fields"
	case errors.Is(err, io.EOF):
		return "empty body; send a JSON object"
	}
	return "cannot parse the body as JSON"
}

// respond answers 200 with v; errors are answered by wrap.
func (c *call) respond(v any) error {
	if c.result == "" {
		c.result = "ok"
	}
	writeJSON(c.w, http.StatusOK, v)
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // messages quote <placeholders>
	_ = enc.Encode(v)
}

// outageLog logs the requests a dependency (the API server) could not complete: the
// first at once, then at most one line every outageLogInterval with how many failed
// since. During an outage every request fails alike, and each already has its audit
// line; an error line for each would bury the log (a thousand a second under load).
type outageLog struct {
	sometimes rate.Sometimes
	failures  atomic.Int64
}

const outageLogInterval = 10 * time.Second

func (o *outageLog) failed(log logr.Logger, err error, action, path string) {
	o.failures.Add(1)
	o.sometimes.Do(func() {
		log.Error(err, "backend API requests could not be completed", "action", action, "path", path,
			"failedSinceLastLine", o.failures.Swap(0), "nextLineAfter", outageLogInterval.String())
	})
}
