// Package serve runs the manager's HTTP listeners (the backend API, the public widget
// listener): TLS with a certificate reloaded when its files change, or plain HTTP behind a
// TLS-terminating Ingress, and a graceful shutdown when the manager stops.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// Options say where and how to listen.
type Options struct {
	// Name says what is served, in errors ("backend API").
	Name string
	Addr string
	// CertDir holds tls.crt and tls.key, watched for changes; "" serves plain HTTP.
	CertDir string
	// Listening, when set, is called with the listener once it accepts connections.
	Listening func(net.Listener)
}

// Serve serves h until ctx is done, then shuts down within 10 seconds.
func Serve(ctx context.Context, o Options, h http.Handler) error {
	var ln net.Listener
	var err error
	if o.CertDir == "" {
		ln, err = net.Listen("tcp", o.Addr)
	} else {
		var cw *certwatcher.CertWatcher
		cw, err = certwatcher.New(filepath.Join(o.CertDir, "tls.crt"), filepath.Join(o.CertDir, "tls.key"))
		if err != nil {
			return fmt.Errorf("%s certificate: %w", o.Name, err)
		}
		go func() { _ = cw.Start(ctx) }()
		ln, err = tls.Listen("tcp", o.Addr, &tls.Config{GetCertificate: cw.GetCertificate, MinVersion: tls.VersionTLS12})
	}
	if err != nil {
		return fmt.Errorf("%s listener: %w", o.Name, err)
	}
	if o.Listening != nil {
		o.Listening(ln)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		<-ctx.Done()
		// ctx is done: shut down within a deadline of its own, keeping ctx's values.
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Bound remembers the address a server listens on, once it does: embedded in a server,
// it gives it Addr, for readiness checks and tests.
type Bound struct {
	mu   sync.Mutex
	addr string
}

// Addr is the address the server listens on, or "" before it does.
func (b *Bound) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// Set records ln's address (an Options.Listening).
func (b *Bound) Set(ln net.Listener) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addr = ln.Addr().String()
}
