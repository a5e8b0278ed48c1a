package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// tracker holds, per account, the last round whose key the backend API acknowledged
// (200) and what the account's status says, from the informer.
type tracker struct {
	mu       sync.Mutex
	acked    map[int]int // account -> round
	version  map[int]int64
	statusL4 map[int]string
	salt     string
}

func newTracker() *tracker {
	return &tracker{acked: map[int]int{}, version: map[int]int64{}, statusL4: map[int]string{}}
}

func (tr *tracker) ack(i, round int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.acked[i] = round
}

func (tr *tracker) lastAcked(i int) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.acked[i]
}

func (tr *tracker) observe(obj any) {
	ca, ok := obj.(*pipesv1.ConnectedAccount)
	if !ok || !strings.HasPrefix(ca.Spec.UserID, "u") {
		return
	}
	i, err := strconv.Atoi(ca.Spec.UserID[1:])
	if err != nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if ca.Status.State == pipesv1.StateConnected {
		tr.version[i], tr.statusL4[i] = ca.Status.CredentialVersion, ca.Status.APIKeyLast4
	}
}

// backlog is how many acknowledged writes the accounts' status does not show yet: round
// r's key is version r, and a status past it counts too (a write applied twice).
func (tr *tracker) backlog() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for i, round := range tr.acked {
		if tr.version[i] != int64(round) || tr.statusL4[i] != last4(key(i, round, tr.salt)) {
			n++
		}
	}
	return n
}

// describe names up to n acknowledged writes the status does not show.
func (tr *tracker) describe(n int) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []string
	for i, round := range tr.acked {
		if len(out) == n {
			break
		}
		if tr.version[i] != int64(round) || tr.statusL4[i] != last4(key(i, round, tr.salt)) {
			out = append(out, fmt.Sprintf("%s acknowledged round %d, status version %d last four %q", userID(i), round, tr.version[i], tr.statusL4[i]))
		}
	}
	return strings.Join(out, "; ")
}

// op stores round's key of account i (round 1 creates the account).
type op struct{ i, round int }

// plan is n accounts from first created and rotations of them: each rotation comes
// after the creation of a few later accounts, so creations and rotations interleave.
func plan(first, n, rotations int) []op {
	ops := make([]op, 0, n+rotations)
	every := max(1, n/max(rotations, 1))
	rotated := 0
	for k := range n {
		ops = append(ops, op{i: first + k, round: 1})
		if rotations > 0 && (k+1)%every == 0 && rotated < rotations {
			ops = append(ops, op{i: first + k + 1 - every, round: 2})
			rotated++
		}
	}
	return ops
}

// load writes ops through the backend API, paced over a duration, alternating between
// the two managers: each write is retried (on the other manager) until it is
// acknowledged, as a client that was not answered does, with the same key.
type load struct {
	h        *harness
	t        *testing.T
	inFlight atomic.Int64
	retries  atomic.Int64
	acked    atomic.Int64
	errs     sync.Map // error text -> count, for the report
	done     chan struct{}
	seconds  float64
}

func (h *harness) startLoad(ctx context.Context, t *testing.T, ops []op, over time.Duration) *load {
	l := &load{h: h, t: t, done: make(chan struct{})}
	// An account's writes are made in the order planned, each once the one before it was
	// acknowledged (or given up): "the last acknowledged key" is then well defined.
	type task struct {
		op
		after, done chan struct{}
	}
	queue := make(chan task)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for w := range queue {
				if w.after != nil {
					<-w.after
				}
				l.write(ctx, w.op)
				close(w.done)
			}
		})
	}
	start := time.Now()
	go func() {
		last := map[int]chan struct{}{}
		for k, o := range ops {
			due := start.Add(time.Duration(k) * over / time.Duration(len(ops)))
			time.Sleep(time.Until(due))
			w := task{op: o, after: last[o.i], done: make(chan struct{})}
			last[o.i] = w.done
			select {
			case queue <- w:
			case <-ctx.Done():
			}
		}
		close(queue)
		wg.Wait()
		l.seconds = time.Since(start).Seconds()
		close(l.done)
	}()
	return l
}

func (l *load) wait(ctx context.Context, t *testing.T) {
	select {
	case <-l.done:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
}

// write stores o's key until the backend API acknowledges it.
func (l *load) write(ctx context.Context, o op) {
	l.inFlight.Add(1)
	defer l.inFlight.Add(-1)
	k := key(o.i, o.round, l.h.salt)
	slot := rand.IntN(2) //nolint:gosec // load pattern, not security
	backoff := 50 * time.Millisecond
	deadline := time.Now().Add(3 * time.Minute)
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := l.h.backend[slot].UpsertAPIKey(rctx, provider, wire.UpsertAPIKeyRequest{UserID: userID(o.i), Secret: k})
		cancel()
		if err == nil {
			if resp.APIKeyLast4 != last4(k) || resp.State != string(pipesv1.StateConnected) {
				l.t.Errorf("upsert of %s round %d answered 200 with state %q, last four %q; want connected, %q", userID(o.i), o.round, resp.State, resp.APIKeyLast4, last4(k))
			}
			l.h.tracker.ack(o.i, o.round)
			l.acked.Add(1)
			return
		}
		var ae *apiclient.Error
		if errors.As(err, &ae) && (ae.Status == http.StatusBadRequest || ae.Status == http.StatusNotFound || ae.Status == http.StatusUnprocessableEntity) {
			l.t.Errorf("upsert of %s round %d: %v", userID(o.i), o.round, err)
			return
		}
		l.countError(err)
		if time.Now().After(deadline) || ctx.Err() != nil {
			l.t.Errorf("upsert of %s round %d not acknowledged after 3 minutes of retries: %v", userID(o.i), o.round, err)
			return
		}
		l.retries.Add(1)
		slot = 1 - slot
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// countError keeps what a failed attempt ended with, shortened to its kind.
func (l *load) countError(err error) {
	kind := err.Error()
	var ae *apiclient.Error
	switch {
	case errors.As(err, &ae):
		kind = fmt.Sprintf("%d %s", ae.Status, ae.Code)
	case strings.Contains(kind, "connection refused"):
		kind = "connection refused"
	case strings.Contains(kind, "connection reset"), strings.Contains(kind, "EOF"):
		kind = "connection reset"
	case strings.Contains(kind, "deadline exceeded"), strings.Contains(kind, "Timeout"):
		kind = "timeout"
	}
	n, _ := l.errs.LoadOrStore(kind, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
}

func (l *load) figures() LoadFigures {
	f := LoadFigures{Writes: int(l.acked.Load()), Retries: int(l.retries.Load()), Seconds: l.seconds, FailedAttempts: map[string]int64{}}
	l.errs.Range(func(k, v any) bool {
		f.FailedAttempts[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return f
}

// waitConverged waits until every acknowledged write shows in the accounts' status and
// cond (if any) holds, and returns when that was first seen.
func (h *harness) waitConverged(ctx context.Context, t *testing.T, timeout time.Duration, what string, cond func() error) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var err error
		if cond != nil {
			err = cond()
		}
		if h.tracker.backlog() == 0 && err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not converged after %s: %d acknowledged writes not in the accounts' status (%s); %v", what, timeout, h.tracker.backlog(), h.tracker.describe(3), err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkAccounts checks, through the API server and the backend API, that every account
// the suite wrote holds the last key acknowledged for it, exactly once (its version is
// its number of keys), and that there is exactly one credential Secret per account and
// none without one.
func (h *harness) checkAccounts(ctx context.Context, t *testing.T) {
	t.Helper()
	h.tracker.mu.Lock()
	acked := make(map[int]int, len(h.tracker.acked))
	for i, r := range h.tracker.acked {
		acked[i] = r
	}
	h.tracker.mu.Unlock()

	var accounts pipesv1.ConnectedAccountList
	must(t, h.env.Client.List(ctx, &accounts, client.InNamespace(namespace)))
	byUID := map[string]*pipesv1.ConnectedAccount{}
	seen := map[string]int{}
	for k := range accounts.Items {
		ca := &accounts.Items[k]
		byUID[string(ca.UID)] = ca
		seen[ca.Spec.UserID]++
		i, err := strconv.Atoi(strings.TrimPrefix(ca.Spec.UserID, "u"))
		round, ok := acked[i]
		if err != nil || !ok {
			t.Errorf("account %s (user %s): no write of it was acknowledged", ca.Name, ca.Spec.UserID)
			continue
		}
		want := key(i, round, h.salt)
		if ca.Status.State != pipesv1.StateConnected || ca.Status.APIKeyLast4 != last4(want) || ca.Status.CredentialVersion != int64(round) {
			t.Errorf("account %s (user %s): state %s, last four %q, version %d; want connected, %q (round %d's key), version %d",
				ca.Name, ca.Spec.UserID, ca.Status.State, ca.Status.APIKeyLast4, ca.Status.CredentialVersion, last4(want), round, round)
		}
	}
	for user, n := range seen {
		if n != 1 {
			t.Errorf("%d accounts for user %s", n, user)
		}
	}
	if len(accounts.Items) != len(acked) {
		t.Errorf("%d accounts for %d users whose first key was acknowledged", len(accounts.Items), len(acked))
	}

	var secrets corev1.SecretList
	must(t, h.env.Client.List(ctx, &secrets, client.InNamespace(namespace), client.MatchingLabels{pipesv1.LabelComponent: pipesv1.ComponentCredential}))
	perAccount := map[string]int{}
	for _, s := range secrets.Items {
		owner := ownerUID(&s)
		if _, ok := byUID[owner]; !ok {
			t.Errorf("credential Secret %s belongs to no account (orphaned)", s.Name)
			continue
		}
		perAccount[owner]++
		for k, v := range s.Data {
			if strings.Contains(string(v), keyPrefix) {
				t.Errorf("credential Secret %s key %s holds a plaintext key", s.Name, k)
			}
		}
	}
	for uid, ca := range byUID {
		if perAccount[uid] != 1 {
			t.Errorf("account %s has %d credential Secrets; want exactly one", ca.Name, perAccount[uid])
		}
	}

	// Vend every key, the full value, alternately through each manager.
	must(t, testenv.InParallel(len(accounts.Items), 16, func(k int) error {
		ca := accounts.Items[k]
		i, _ := strconv.Atoi(strings.TrimPrefix(ca.Spec.UserID, "u"))
		round := acked[i]
		resp, err := h.backend[k%2].Credentials(ctx, provider, wire.CredentialsRequest{UserID: ca.Spec.UserID})
		if err != nil {
			return fmt.Errorf("vending %s: %w", ca.Spec.UserID, err)
		}
		if !resp.Active || resp.Credential == nil || resp.Credential.Value != key(i, round, h.salt) || resp.Credential.Version != int64(round) {
			version := int64(0)
			if resp.Credential != nil {
				version = resp.Credential.Version
			}
			t.Errorf("vending %s: active %v, version %d; want round %d's key, version %d", ca.Spec.UserID, resp.Active, version, round, round)
		}
		return nil
	}))
}

func ownerUID(s *corev1.Secret) string {
	for _, ref := range s.OwnerReferences {
		if ref.Controller != nil && *ref.Controller && ref.Kind == "ConnectedAccount" {
			return string(ref.UID)
		}
	}
	return ""
}
