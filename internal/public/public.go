// Package public owns the operator's browser-facing listener, the one meant to be exposed
// through an Ingress or Gateway: the widget's script and the widget API (and later the
// OAuth callback). It answers nothing of the cluster-internal backend API, which keeps
// its own listener. It owns cross-origin access (explicitly allowed origins only) and the
// security headers of everything it serves.
package public

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-logr/logr"

	"github.com/pipes-dev/pipes-operator/internal/serve"
	"github.com/pipes-dev/pipes-operator/internal/widget"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// CodeOriginNotAllowed answers a browser request from an origin that is not allowed.
const CodeOriginNotAllowed = "origin_not_allowed"

// Options configure the listener.
type Options struct {
	Addr string
	// CertDir holds tls.crt and tls.key; "" serves plain HTTP (TLS ends at the Ingress).
	CertDir string
	// AllowedOrigins are the origins (scheme://host[:port]) whose pages may call the
	// widget API (--widget-allowed-origins). None by default: no page may.
	AllowedOrigins []string
}

// Server is the public listener. Every replica serves it.
type Server struct {
	Options Options
	// WidgetAPI serves the routes under backendapi.WidgetAPIPrefix.
	WidgetAPI http.Handler
	// OAuthCallback serves wire.OAuthCallbackPath, where providers send users back.
	OAuthCallback http.Handler
	Assets        *widget.Assets
	Log           logr.Logger
	serve.Bound
}

// ParseOrigins checks a list of origins: each exactly scheme://host[:port], http or
// https, with nothing after; "*" is refused (name the pages that embed the widget).
func ParseOrigins(list []string) ([]string, error) {
	var out []string
	for _, o := range list {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if o == "*" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("widget allowed origin %q: write it as scheme://host[:port], e.g. https://app.example.com, with no path and no wildcard", o)
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	return serve.Serve(ctx, serve.Options{Name: "public listener", Addr: s.Options.Addr, CertDir: s.Options.CertDir, Listening: func(ln net.Listener) {
		s.Set(ln)
		s.Log.Info("serving the widget", "addr", ln.Addr().String(), "script", s.Assets.ScriptPath(), "allowedOrigins", s.Options.AllowedOrigins)
	}}, s.Handler())
}

// Handler routes the public surface.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.Assets.Register(mux)
	mux.Handle("/widget/api/", s.cors(s.WidgetAPI))
	if s.OAuthCallback != nil {
		mux.Handle(wire.OAuthCallbackPath, s.OAuthCallback)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, fmt.Sprintf("no route %s %s on the public listener (it serves the widget; the backend API has its own, cluster-internal listener)", r.Method, r.URL.Path))
	})
	return securityHeaders(mux)
}

// securityHeaders are set on every answer: nothing here is meant to be sniffed, framed,
// or to leak its URL (which may hold a path with a slug) to other sites.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		next.ServeHTTP(w, r)
	})
}

// cors lets pages of the allowed origins call the widget API with a bearer token (never
// cookies: Access-Control-Allow-Credentials is not sent). A request naming any other
// origin is refused before it reaches the API, so a page elsewhere cannot even cause a
// write whose answer it could not read.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		h.Add("Vary", "Origin")
		if origin == "" {
			// Not a cross-origin browser request (curl, a server): the token is the only key.
			next.ServeHTTP(w, r)
			return
		}
		if !slices.Contains(s.Options.AllowedOrigins, strings.ToLower(origin)) {
			writeError(w, http.StatusForbidden, CodeOriginNotAllowed, fmt.Sprintf("pages on %s may not call the widget API: the operator's --widget-allowed-origins must list that origin (docs/widget.md)", origin))
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", "Retry-After")
		next.ServeHTTP(w, r)
	})
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(wire.ErrorResponse{Code: code, Message: message})
}
