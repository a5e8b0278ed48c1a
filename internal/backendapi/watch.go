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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/vendspec"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Watch limits.
const (
	DefaultWatchTimeout = 30 * time.Second
	MaxWatchTimeout     = 60 * time.Second
)

// changes wakes long polls when something that decides one of their vends changes: an
// account or its credential Secret wakes only the polls watching that account's identity
// (a rotation storm must not make every sidecar's poll vend all its credentials again), a
// Provider's or organization's settings wake every poll. A poll registers before it
// computes its snapshot, so no change between snapshot and wait is missed.
type changes struct {
	mu    sync.Mutex
	byKey map[string]map[*waiter]struct{}
	all   map[*waiter]struct{}
}

type waiter struct {
	ch   chan struct{}
	keys []string
	once sync.Once
}

func (w *waiter) wake() { w.once.Do(func() { close(w.ch) }) }

func newChanges() *changes {
	return &changes{byKey: map[string]map[*waiter]struct{}{}, all: map[*waiter]struct{}{}}
}

// watchKey names an account identity in a namespace.
func watchKey(namespace, accountKey string) string { return namespace + "\x00" + accountKey }

// wait registers a waiter for keys; its channel closes on the next change of any of
// them (or of everything). done must be called when the waiter is no longer needed.
func (c *changes) wait(keys []string) (changed <-chan struct{}, done func()) {
	w := &waiter{ch: make(chan struct{}), keys: keys}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all[w] = struct{}{}
	for _, k := range keys {
		if c.byKey[k] == nil {
			c.byKey[k] = map[*waiter]struct{}{}
		}
		c.byKey[k][w] = struct{}{}
	}
	return w.ch, func() { c.remove(w) }
}

func (c *changes) remove(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.all, w)
	for _, k := range w.keys {
		delete(c.byKey[k], w)
		if len(c.byKey[k]) == 0 {
			delete(c.byKey, k)
		}
	}
}

// notify wakes the waiters of key.
func (c *changes) notify(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.byKey[key] {
		w.wake()
	}
}

// notifyAll wakes every waiter.
func (c *changes) notifyAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.all {
		w.wake()
	}
}

// watchInformers subscribes to the cache's informers for everything a vend depends on.
func (s *Server) watchInformers(ctx context.Context, informers cache.Informers) error {
	account := func(obj any) {
		if ca, ok := unwrapDeleted(obj).(*pipesv1.ConnectedAccount); ok {
			s.changes.notify(watchKey(ca.Namespace, index.AccountKeyOf(ca)))
		}
	}
	secret := func(obj any) {
		sec, ok := unwrapDeleted(obj).(*corev1.Secret)
		if !ok {
			return
		}
		owner := metav1.GetControllerOf(sec)
		if owner == nil || owner.Kind != "ConnectedAccount" {
			return
		}
		var ca pipesv1.ConnectedAccount
		if err := s.Client.Get(ctx, types.NamespacedName{Namespace: sec.Namespace, Name: owner.Name}, &ca); err != nil {
			return // the account's own deletion event wakes its waiters
		}
		s.changes.notify(watchKey(ca.Namespace, index.AccountKeyOf(&ca)))
	}
	// Settings: only a spec change (or creation, deletion) can change a vend; the
	// Provider's status (its account count) changes with every connection.
	settings := toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.changes.notifyAll() },
		UpdateFunc: func(old, cur any) {
			if o, ok := old.(client.Object); !ok || o.GetGeneration() != cur.(client.Object).GetGeneration() {
				s.changes.notifyAll()
			}
		},
		DeleteFunc: func(any) { s.changes.notifyAll() },
	}
	handlers := []struct {
		obj     client.Object
		handler toolscache.ResourceEventHandler
	}{
		{&corev1.Secret{}, toolscache.ResourceEventHandlerFuncs{AddFunc: secret, UpdateFunc: func(_, o any) { secret(o) }, DeleteFunc: secret}},
		{&pipesv1.ConnectedAccount{}, toolscache.ResourceEventHandlerFuncs{AddFunc: account, UpdateFunc: func(_, o any) { account(o) }, DeleteFunc: account}},
		{&pipesv1.Provider{}, settings},
		{&pipesv1.OrganizationProvider{}, settings},
	}
	for _, h := range handlers {
		inf, err := informers.GetInformer(ctx, h.obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(h.handler); err != nil {
			return err
		}
	}
	return nil
}

// unwrapDeleted returns the object of a delete event whose final state was unknown.
func unwrapDeleted(obj any) any {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
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
	keys := make([]string, len(req.Credentials))
	for i, ref := range req.Credentials {
		keys[i] = watchKey(c.namespace, index.AccountKey(ref.Provider, ref.UserID, ref.OrganizationID))
	}
	for {
		answered, err := s.watchOnce(c, req, keys, timer.C)
		if answered || err != nil {
			return err
		}
	}
}

// watchOnce answers when the snapshot differs from the caller's or the timer fires, and
// otherwise waits for a change of the watched credentials (answered false).
func (s *Server) watchOnce(c *call, req wire.WatchRequest, keys []string, timeout <-chan time.Time) (answered bool, err error) {
	changed, done := s.changes.wait(keys)
	defer done()
	snapshot, etag, err := s.snapshot(c, req.Credentials)
	if err != nil {
		return true, err
	}
	// The watch itself succeeded whatever each credential's state (which vend recorded
	// as the call's result): the audit line and metrics say "ok".
	if etag != req.ETag {
		c.result = "ok"
		return true, c.respond(wire.WatchResponse{ETag: etag, Changed: true, Credentials: snapshot})
	}
	select {
	case <-changed:
		return false, nil
	case <-timeout:
		c.result = "ok"
		return true, c.respond(wire.WatchResponse{ETag: etag, Changed: false})
	case <-c.ctx.Done():
		return true, nil
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
