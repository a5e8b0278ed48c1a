package backendapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/vendspec"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Watch limits.
const (
	DefaultWatchTimeout = 30 * time.Second
	MaxWatchTimeout     = 60 * time.Second
)

// changes wakes long polls when anything that decides a vend changed (credential
// Secrets, accounts, providers, organization settings). Waiters take the current channel
// before computing a snapshot, so no change between snapshot and wait is missed.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

func newChanges() *changes { return &changes{ch: make(chan struct{})} }

func (c *changes) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}

func (c *changes) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.ch)
	c.ch = make(chan struct{})
}

// watchInformers subscribes to the cache's informers for everything a vend depends on.
func (s *Server) watchInformers(ctx context.Context, informers cache.Informers) error {
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.changes.notify() },
		UpdateFunc: func(any, any) { s.changes.notify() },
		DeleteFunc: func(any) { s.changes.notify() },
	}
	for _, obj := range []client.Object{&corev1.Secret{}, &pipesv1.ConnectedAccount{}, &pipesv1.Provider{}, &pipesv1.OrganizationProvider{}} {
		inf, err := informers.GetInformer(ctx, obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	return nil
}

// watchCredentials is the vend sidecar's long poll: it answers at once when the
// credentials differ from the caller's snapshot (ETag), else when one changes, else
// after the timeout with changed=false. Each credential needs "vend", as with /credentials.
func (s *Server) watchCredentials(c *call) error {
	var req wire.WatchRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if len(req.Credentials) == 0 || len(req.Credentials) > vendspec.MaxEntries {
		return errorf(http.StatusBadRequest, wire.CodeInvalidRequest, "credentials must list 1 to %d entries", vendspec.MaxEntries)
	}
	for _, ref := range req.Credentials {
		if err := identityErrors(ref.UserID, ref.OrganizationID); err != nil {
			return err
		}
	}
	timeout := DefaultWatchTimeout
	if req.TimeoutSeconds > 0 {
		timeout = min(time.Duration(req.TimeoutSeconds)*time.Second, MaxWatchTimeout)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		changed := s.changes.wait()
		snapshot, etag, err := s.snapshot(c, req.Credentials)
		if err != nil {
			return err
		}
		// The watch itself succeeded whatever each credential's state (which vend recorded
		// as the call's result): the audit line and metrics say "ok".
		if etag != req.ETag {
			c.result = "ok"
			return c.respond(wire.WatchResponse{ETag: etag, Changed: true, Credentials: snapshot})
		}
		select {
		case <-changed:
		case <-timer.C:
			c.result = "ok"
			return c.respond(wire.WatchResponse{ETag: etag, Changed: false})
		case <-c.ctx.Done():
			return nil
		}
	}
}

// snapshot vends every credential and names the result with an ETag derived from what
// decides it (state, version, and the identity of the account and Secret it came from:
// a re-created account starts again at version 1), never from the values. Every
// credential is authorized, whether its Provider exists or not.
func (s *Server) snapshot(c *call, refs []wire.CredentialRef) ([]wire.WatchedCredential, string, error) {
	out := make([]wire.WatchedCredential, 0, len(refs))
	h := sha256.New()
	for _, ref := range refs {
		ca, err := c.authorizedAccount("vend", ref.Provider, ref.UserID, ref.OrganizationID)
		if err != nil {
			return nil, "", err
		}
		resp, origin := wire.CredentialsResponse{Active: false, Error: wire.ErrorNotInstalled}, ""
		var rotatedAt time.Time
		p, err := c.provider(ref.Provider)
		switch {
		case err == nil:
			if resp, origin, rotatedAt, err = s.vendStored(c, p, ca, ref.OrganizationID); err != nil {
				return nil, "", err
			}
		case isNotFound(err):
			// A Provider created later is picked up by the next change.
		default:
			return nil, "", err
		}
		var version int64
		if resp.Credential != nil {
			version = resp.Credential.Version
		}
		_, _ = fmt.Fprintf(h, "%s\x00%t\x00%s\x00%s\x00%s\x00", ref, resp.Active, resp.Error, strconv.FormatInt(version, 10), origin)
		// rotated_at stays out of the ETag: it changes only with the version.
		out = append(out, wire.WatchedCredential{CredentialRef: ref, CredentialsResponse: resp, RotatedAt: rotatedAt.UTC()})
	}
	return out, hex.EncodeToString(h.Sum(nil)[:12]), nil
}

func isNotFound(err error) bool {
	ae, ok := err.(*apiError)
	return ok && ae.status == http.StatusNotFound
}
