package scale

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// measureWriteLimit creates the N source Secrets (before the manager starts and the clock
// of the first sync) as fast as the API server takes them: the run's Secret write limit.
func (h *harness) measureWriteLimit(ctx context.Context, t *testing.T) WriteLimit {
	start := time.Now()
	err := parallel(h.n, workers, func(i int) error {
		return h.env.Client.Create(ctx, h.source(i, 1))
	})
	must(t, err)
	d := time.Since(start)
	return WriteLimit{Secrets: h.n, Seconds: d.Seconds(), SecretWritesPerSecond: float64(h.n) / d.Seconds(),
		AccountCeilingPerSecond: float64(h.n) / d.Seconds() / 2}
}

func (h *harness) source(i, round int) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: sourceName(i),
			Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}},
		Data: map[string][]byte{"api-key": []byte(key(i, round, h.salt))},
	}
}

func (h *harness) account(i int) *pipesv1.ConnectedAccount {
	return &pipesv1.ConnectedAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: accountName(i)},
		Spec: pipesv1.ConnectedAccountSpec{
			ProviderRef: pipesv1.LocalObjectReference{Name: provider},
			UserID:      userID(i),
			APIKey:      &pipesv1.APIKeySource{SecretKeyRef: &pipesv1.SecretKeyReference{Name: sourceName(i), Key: "api-key"}},
		},
	}
}

// accountWatch records, per account, when it first satisfies done.
type accountWatch struct {
	mu   sync.Mutex
	seen map[string]time.Time
	all  chan struct{}
	want int
}

func (h *harness) watchAccounts(ctx context.Context, want int, done func(*pipesv1.ConnectedAccount) bool) *accountWatch {
	aw := &accountWatch{seen: map[string]time.Time{}, all: make(chan struct{}), want: want}
	record := func(obj any) {
		ca, ok := obj.(*pipesv1.ConnectedAccount)
		if !ok || !done(ca) {
			return
		}
		aw.mu.Lock()
		defer aw.mu.Unlock()
		if _, ok := aw.seen[ca.Name]; ok || len(aw.seen) == aw.want {
			return
		}
		aw.seen[ca.Name] = time.Now()
		if len(aw.seen) == aw.want {
			close(aw.all)
		}
	}
	reg, err := h.accounts.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    record,
		UpdateFunc: func(_, obj any) { record(obj) },
	})
	must(h.t, err)
	go func() {
		select {
		case <-aw.all:
		case <-ctx.Done():
		}
		_ = h.accounts.RemoveEventHandler(reg)
	}()
	// A new handler is first given every object in the informer's store.
	for !reg.HasSynced() {
		time.Sleep(10 * time.Millisecond)
	}
	return aw
}

func (aw *accountWatch) wait(ctx context.Context, t *testing.T, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-aw.all:
	case <-time.After(timeout):
		aw.mu.Lock()
		defer aw.mu.Unlock()
		t.Fatalf("%s: %d of %d accounts after %s", what, len(aw.seen), aw.want, timeout)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
}

func (aw *accountWatch) last() time.Time {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	var last time.Time
	for _, at := range aw.seen {
		if at.After(last) {
			last = at
		}
	}
	return last
}

func connected(ca *pipesv1.ConnectedAccount) bool {
	return ca.Status.State == pipesv1.StateConnected && ca.Status.ObservedGeneration == ca.Generation
}

// phaseSeconds is how long CPU profiles of a phase run: about the phase at 250
// accounts/s, so the profile shows the whole of it rather than its first seconds.
func (h *harness) phaseSeconds() int {
	return min(50, max(5, h.n/250)) // kube-apiserver ends requests at 60 s
}

// timeout for a phase that should take seconds: generous, so a slow machine reports a
// slow figure rather than a failure.
func (h *harness) timeout() time.Duration {
	return 2*time.Minute + time.Duration(h.n)*50*time.Millisecond
}

// firstSync creates N accounts at once and waits until every one is connected.
func (h *harness) firstSync(ctx context.Context, t *testing.T, limit WriteLimit) FirstSync {
	aw := h.watchAccounts(ctx, h.n, connected)
	before, cpuBefore, requestsBefore := h.apiWrites(ctx), h.cpuSeconds(), h.apiRequests(ctx)
	profiled := h.cpuProfile(ctx, "manager-cpu-first-sync.pprof", h.phaseSeconds())
	apiProfiled := h.apiServerCPUProfile(ctx, "kube-apiserver-cpu-first-sync.pprof", h.phaseSeconds())
	created := make([]time.Time, h.n)
	start := time.Now()
	must(t, parallel(h.n, workers, func(i int) error {
		created[i] = time.Now()
		return h.env.Client.Create(ctx, h.account(i))
	}))
	createdIn := time.Since(start)
	aw.wait(ctx, t, h.timeout(), "first sync")
	d := aw.last().Sub(start)
	writes, cpu := h.apiWrites(ctx).sub(before), cpuDelta(h.cpuSeconds(), cpuBefore)
	requests := perAccount(h.apiRequests(ctx), requestsBefore, h.n)
	<-profiled
	<-apiProfiled
	lat := make([]time.Duration, h.n)
	for i := range h.n {
		lat[i] = aw.seen[accountName(i)].Sub(created[i])
	}
	cur, peak := h.rss()
	// Every account is stored with its own key.
	h.checkStored(ctx, t, 1)
	return FirstSync{
		Accounts: h.n, Seconds: d.Seconds(), CreateSeconds: createdIn.Seconds(), PerSecond: float64(h.n) / d.Seconds(),
		LatencyP50Ms: ms(percentile(lat, 50)), LatencyP99Ms: ms(percentile(lat, 99)),
		ShareOfCeiling:   float64(h.n) / d.Seconds() / limit.AccountCeilingPerSecond,
		WritesPerAccount: writesPer(writes, h.n), RSSMiB: cur, PeakRSSMiB: peak, CPUSeconds: cpu, Cores: coreTime(cpu),
		RequestsPerAccount: requests,
	}
}

// checkStored checks every account's status shows the last four of the round's key,
// through the API server, and that no Secret or account in etcd holds a key in plaintext.
func (h *harness) checkStored(ctx context.Context, t *testing.T, round int) {
	var list pipesv1.ConnectedAccountList
	must(t, h.env.Client.List(ctx, &list, client.InNamespace(namespace)))
	for _, ca := range list.Items {
		var i int
		if _, err := fmt.Sscanf(ca.Name, "user-%06d", &i); err != nil || i >= h.n {
			continue
		}
		want := key(i, round, h.salt)
		if ca.Status.APIKeyLast4 != want[len(want)-4:] || ca.Status.State != pipesv1.StateConnected {
			t.Fatalf("account %s: state %s, last four %q, want connected with %q", ca.Name, ca.Status.State, ca.Status.APIKeyLast4, want[len(want)-4:])
		}
	}
	var secrets corev1.SecretList
	must(t, h.env.Client.List(ctx, &secrets, client.InNamespace(namespace),
		client.MatchingLabels{pipesv1.LabelComponent: pipesv1.ComponentCredential}))
	if len(secrets.Items) != h.n {
		t.Fatalf("%d credential Secrets for %d accounts", len(secrets.Items), h.n)
	}
	for _, s := range secrets.Items {
		for k, v := range s.Data {
			if bytes.Contains(v, []byte(keyPrefix)) {
				t.Fatalf("credential Secret %s key %s holds a plaintext key", s.Name, k)
			}
		}
	}
}

// rotationStorm changes every source key at once and waits until every account stores
// the new key and the watched accounts' watchers (sidecars' long polls) have seen it.
func (h *harness) rotationStorm(ctx context.Context, t *testing.T) Rotation {
	token := h.callerToken(ctx, t, "watcher")
	watched := min(*flagWatchers, h.n)
	seenBy := h.watchCredentials(ctx, t, token, watched, 2)
	aw := h.watchAccounts(ctx, h.n, func(ca *pipesv1.ConnectedAccount) bool {
		return ca.Status.CredentialVersion >= 2 && connected(ca)
	})
	before, cpuBefore, requestsBefore := h.apiWrites(ctx), h.cpuSeconds(), h.apiRequests(ctx)
	profiled := h.cpuProfile(ctx, "manager-cpu-rotation.pprof", h.phaseSeconds())
	start := time.Now()
	must(t, parallel(h.n, workers, func(i int) error {
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"data":{"api-key":%q}}`, base64.StdEncoding.EncodeToString([]byte(key(i, 2, h.salt)))))
		return h.env.Client.Patch(ctx, h.source(i, 2), patch)
	}))
	aw.wait(ctx, t, h.timeout(), "rotation storm")
	d := aw.last().Sub(start)
	var watchersDone time.Duration
	select {
	case at := <-seenBy:
		watchersDone = at.Sub(start)
	case <-time.After(h.timeout()):
		t.Fatalf("the watchers did not see every rotation")
	}
	writes, cpu := h.apiWrites(ctx).sub(before), cpuDelta(h.cpuSeconds(), cpuBefore)
	requests := perAccount(h.apiRequests(ctx), requestsBefore, h.n)
	<-profiled
	h.checkStored(ctx, t, 2)
	h.checkVends(ctx, t, token, min(h.n, 200), 2)
	return Rotation{Accounts: h.n, Seconds: d.Seconds(), PerSecond: float64(h.n) / d.Seconds(),
		WatchedAccounts: watched, WatchersSawAllSeconds: watchersDone.Seconds(), WritesPerAccount: writesPer(writes, h.n),
		CPUSeconds: cpu, Cores: coreTime(cpu), RequestsPerAccount: requests}
}

// callerToken makes a ServiceAccount in the benchmark namespace allowed to vend, and a
// token for it with the backend API's audience.
func (h *harness) callerToken(ctx context.Context, t *testing.T, name string) string {
	tok, err := h.env.ServiceAccountToken(ctx, namespace, name, "pipes-vendor", namespace, "pipes.dev")
	must(t, err)
	return tok
}

func (h *harness) apiClient(t *testing.T, token string, timeout time.Duration) *apiclient.Client {
	hc, err := apiclient.HTTPClientWithCAData(h.env.APICA(), timeout)
	must(t, err)
	return apiclient.New("https://"+h.ports.api, apiclient.WithHTTPClient(hc), apiclient.WithToken(token), apiclient.WithNamespace(namespace))
}

// watchCredentials long-polls the watch route for the first `accounts` accounts, 32 per
// watcher as a sidecar would, and reports when every one has reached version.
func (h *harness) watchCredentials(ctx context.Context, t *testing.T, token string, accounts int, version int64) <-chan time.Time {
	done := make(chan time.Time, 1)
	c := h.apiClient(t, token, 90*time.Second)
	var wg sync.WaitGroup
	started := make(chan struct{}, accounts/32+1)
	for first := 0; first < accounts; first += 32 {
		var refs []wire.CredentialRef
		for i := first; i < min(first+32, accounts); i++ {
			refs = append(refs, wire.CredentialRef{Provider: provider, UserID: userID(i)})
		}
		wg.Go(func() {
			etag := ""
			for {
				resp, err := c.Watch(ctx, wire.WatchRequest{Credentials: refs, ETag: etag, TimeoutSeconds: 30})
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					t.Errorf("watch: %v", err)
					return
				}
				if etag == "" {
					started <- struct{}{}
				}
				etag = resp.ETag
				if !resp.Changed {
					continue
				}
				all := len(resp.Credentials) == len(refs)
				for _, cr := range resp.Credentials {
					if !cr.Active || cr.Credential == nil || cr.Credential.Version < version {
						all = false
					}
				}
				if all {
					return
				}
			}
		})
	}
	for range (accounts + 31) / 32 {
		<-started
	}
	go func() { wg.Wait(); done <- time.Now() }()
	return done
}

// checkVends vends the first n accounts and checks each returns the round's key.
func (h *harness) checkVends(ctx context.Context, t *testing.T, token string, n, round int) {
	c := h.apiClient(t, token, 10*time.Second)
	for i := range n {
		resp, err := c.Credentials(ctx, provider, wire.CredentialsRequest{UserID: userID(i)})
		if err != nil {
			t.Fatalf("vending %s: %v", userID(i), err)
		}
		if !resp.Active || resp.Credential == nil || resp.Credential.Value != key(i, round, h.salt) {
			t.Fatalf("vending %s: active %v, not the round-%d key", userID(i), resp.Active, round)
		}
	}
}

// keysetRotation rotates the key-encryption keyset and waits until every credential is
// re-encrypted under the new primary key, while a user connects a new key.
func (h *harness) keysetRotation(ctx context.Context, t *testing.T) KeysetRotation {
	keysetKey := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "pipes-keyset"}
	before := h.apiWrites(ctx)
	start := time.Now()
	_, newID, err := keyring.RotateSecret(ctx, h.env.Client, keysetKey)
	must(t, err)
	// N accounts, and the one a user connects meanwhile.
	reencrypted := h.watchAccounts(ctx, h.n+1, func(ca *pipesv1.ConnectedAccount) bool {
		return ca.Status.EncryptionKeyID == int64(newID) && connected(ca)
	})
	// A user connects while the operator re-encrypts: the new key must not wait behind it.
	time.Sleep(min(time.Second, time.Duration(h.n)*100*time.Microsecond))
	late := h.n
	lateDone := h.watchAccounts(ctx, 1, func(ca *pipesv1.ConnectedAccount) bool { return ca.Name == accountName(late) && connected(ca) })
	must(t, h.env.Client.Create(ctx, h.source(late, 1)))
	lateStart := time.Now()
	must(t, h.env.Client.Create(ctx, h.account(late)))
	lateDone.wait(ctx, t, h.timeout(), "new account during re-encryption")
	lateLatency := lateDone.last().Sub(lateStart)
	reencrypted.wait(ctx, t, h.timeout(), "keyset re-encryption")
	d := reencrypted.last().Sub(start)
	writes := h.apiWrites(ctx).sub(before)
	// Back to N accounts for the phases after this one.
	must(t, h.env.Client.Delete(ctx, h.account(late)))
	must(t, h.env.Client.Delete(ctx, h.source(late, 1)))
	return KeysetRotation{Accounts: h.n, Seconds: d.Seconds(), PerSecond: float64(h.n) / d.Seconds(),
		NewAccountDuringItSeconds: lateLatency.Seconds(), WritesPerAccount: writesPer(writes, h.n+1)}
}

// memory adds unrelated big Secrets and namespaces the operator must not hold, and
// reports the manager's RSS before and after, with a heap profile.
func (h *harness) memory(ctx context.Context, t *testing.T, bigSecrets, namespaces int) Memory {
	h.waitIdle(ctx, 2*time.Second)
	m := Memory{Accounts: h.n, UnrelatedSecrets: bigSecrets, UnrelatedNamespaces: namespaces}
	m.RSSBeforeMiB, _ = h.rss()
	m.HeapInuseBeforeMiB = h.managerMetric("go_memstats_heap_inuse_bytes", nil) / (1 << 20)
	must(t, testenv.AddUnrelated(ctx, h.env.Client, bigSecrets, namespaces))
	// Let any informer that would list them do so.
	time.Sleep(5 * time.Second)
	h.waitIdle(ctx, 2*time.Second)
	m.RSSAfterMiB, m.PeakRSSMiB = h.rss()
	m.HeapInuseAfterMiB = h.managerMetric("go_memstats_heap_inuse_bytes", nil) / (1 << 20)
	m.AddedMiB = m.RSSAfterMiB - m.RSSBeforeMiB
	if path := h.heapProfile(ctx, t, "heap-after-unrelated.pprof"); path != "" {
		m.HeapProfile = path
	}
	m.Breakdown = h.rssBreakdown()
	return m
}

// rssBreakdown says what the manager's resident memory is made of, right after a
// collection (the heap profile forces one): the binary's pages, the live heap, heap
// pages Go holds but has not given back, stacks and the runtime's own.
func (h *harness) rssBreakdown() RSSBreakdown {
	status := h.memoryStatus()
	b := RSSBreakdown{AnonMiB: status["RssAnon"], FileMiB: status["RssFile"]}
	mib := func(name string) float64 { return h.managerMetric(name, nil) / (1 << 20) }
	b.LiveHeapMiB = mib("go_memstats_heap_alloc_bytes")
	b.HeapInuseMiB = mib("go_memstats_heap_inuse_bytes")
	b.HeapHeldMiB = mib("go_memstats_heap_idle_bytes") - mib("go_memstats_heap_released_bytes")
	b.StacksMiB = mib("go_memstats_stack_inuse_bytes")
	b.RuntimeMiB = mib("go_memstats_mspan_inuse_bytes") + mib("go_memstats_mcache_inuse_bytes") +
		mib("go_memstats_gc_sys_bytes") + mib("go_memstats_other_sys_bytes") + mib("go_memstats_buck_hash_sys_bytes")
	return b
}

// cpuProfile records the manager's CPU profile for the next seconds, in the background,
// next to the report (or in the temp dir); the channel closes when it is written.
func (h *harness) cpuProfile(ctx context.Context, name string, seconds int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.saveProfile(ctx, fmt.Sprintf("profile?seconds=%d", seconds), name)
	}()
	return done
}

// apiServerCPUProfile records kube-apiserver's CPU profile (its /debug/pprof, as the
// suite's admin) for the next seconds, in the background, like cpuProfile: where the
// control plane's CPU goes is what bounds the first sync on two cores.
func (h *harness) apiServerCPUProfile(ctx context.Context, name string, seconds int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := h.cs.RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", fmt.Sprint(seconds)).Timeout(time.Duration(seconds+30) * time.Second).DoRaw(ctx)
		if err != nil {
			h.t.Logf("kube-apiserver profile: %v", err)
			return
		}
		if err := os.WriteFile(filepath.Join(h.dir, name), raw, 0o644); err != nil {
			h.t.Logf("kube-apiserver profile: %v", err)
		}
	}()
	return done
}

// heapProfile saves the manager's heap profile next to the report (or in the temp dir).
func (h *harness) heapProfile(ctx context.Context, _ *testing.T, name string) string {
	return h.saveProfile(ctx, "heap?gc=1", name)
}

// saveProfile saves /debug/pprof/<what> of the manager as name; it returns the path, or
// "" (and logs why) when there is none.
func (h *harness) saveProfile(ctx context.Context, what, name string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.ports.pprof+"/debug/pprof/"+what, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Logf("profile %s: %v", what, err)
		return ""
	}
	defer func() { _ = resp.Body.Close() }()
	path := filepath.Join(h.dir, name)
	f, err := os.Create(path)
	if err != nil {
		h.t.Logf("profile %s: %v", what, err)
		return ""
	}
	defer func() { _ = f.Close() }()
	if _, err := io.Copy(f, resp.Body); err != nil {
		h.t.Logf("profile %s: %v", what, err)
		return ""
	}
	return path
}

// restart restarts the manager and measures how soon it is ready and vending, and how
// many writes it makes to state that was already correct.
func (h *harness) restart(ctx context.Context, t *testing.T) Restart {
	h.waitIdle(ctx, 2*time.Second)
	token := h.callerToken(ctx, t, "restart-probe")
	before := h.apiWrites(ctx)
	h.stopManager()
	start := time.Now()
	h.startManager(ctx, t)
	ready := time.Since(start)
	c := h.apiClient(t, token, 2*time.Second)
	for {
		resp, err := c.Credentials(ctx, provider, wire.CredentialsRequest{UserID: userID(0)})
		if err == nil && resp.Active {
			break
		}
		if time.Since(start) > h.timeout() {
			t.Fatalf("not vending %s after restart: %v", h.timeout(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	vending := time.Since(start)
	h.waitIdle(ctx, 3*time.Second)
	writes := h.apiWrites(ctx).sub(before)
	if writes.Secrets != 0 || writes.Accounts != 0 || writes.AccountStatus != 0 {
		t.Errorf("a restart over correct state wrote %v Secrets, %v accounts and %v account statuses; want none", writes.Secrets, writes.Accounts, writes.AccountStatus)
	}
	return Restart{Accounts: h.n, ReadySeconds: ready.Seconds(), VendingSeconds: vending.Seconds(), Writes: writes}
}

func writesPer(w writeCounts, n int) map[string]float64 {
	f := float64(n)
	return map[string]float64{"secrets": w.Secrets / f, "accounts": w.Accounts / f, "accountStatus": w.AccountStatus / f, "events": w.Events / f}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
