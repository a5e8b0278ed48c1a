package eventrec

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
	"github.com/pipes-dev/pipes-operator/internal/scheme"
)

// startAPIServer starts etcd and kube-apiserver; Events regard ConfigMaps here.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	env, err := devenv.Environment(false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startWriter(t *testing.T, c client.Client) *Writer {
	t.Helper()
	w := New(c, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return w
}

func waitEvents(t *testing.T, c client.Client, want func([]eventsv1.Event) bool) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err := c.List(t.Context(), &list, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		if want(list.Items) {
			return list.Items
		}
		if time.Now().After(deadline) {
			t.Fatalf("Events never got there; last seen: %d", len(list.Items))
		}
	}
}

func TestWriterCreatesEventsAndCountsRepeatsIntoSeries(t *testing.T) {
	c := startAPIServer(t)
	w := startWriter(t, c)
	rec := w.Recorder(scheme.New(), "pipes-test")
	objects := make([]*corev1.ConfigMap, 3)
	for i := range objects {
		objects[i] = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("cm-%d", i)}}
		if err := c.Create(t.Context(), objects[i]); err != nil {
			t.Fatal(err)
		}
	}
	rec.Eventf(objects[0], nil, corev1.EventTypeNormal, "Connected", "Connect", "stored (version %d)", 1)
	rec.Eventf(objects[1], nil, corev1.EventTypeWarning, "Failed", "Sync", "no source")
	for v := 2; v <= 4; v++ { // repeats: one Event, counted
		rec.Eventf(objects[2], nil, corev1.EventTypeNormal, "Rotated", "Rotate", "replaced (version %d)", v)
	}
	evs := waitEvents(t, c, func(evs []eventsv1.Event) bool {
		for _, ev := range evs {
			if ev.Reason == "Rotated" && ev.Series != nil && ev.Series.Count == 3 {
				return len(evs) == 3
			}
		}
		return false
	})
	for _, ev := range evs {
		if ev.ReportingController != "pipes-test" || ev.Action == "" || ev.Regarding.Kind != "ConfigMap" || ev.Regarding.UID == "" {
			t.Errorf("Event %s lacks what its recorder set: %+v", ev.Name, ev)
		}
		switch ev.Reason {
		case "Connected":
			if ev.Note != "stored (version 1)" || ev.Type != corev1.EventTypeNormal || ev.Regarding.Name != "cm-0" {
				t.Errorf("Connected: %+v", ev)
			}
		case "Failed":
			if ev.Type != corev1.EventTypeWarning || ev.Series != nil {
				t.Errorf("Failed: %+v", ev)
			}
		case "Rotated":
			if ev.Note != "replaced (version 2)" {
				t.Errorf("a series keeps its first note, as client-go's does: %q", ev.Note)
			}
		}
	}
	if w.Dropped() != 0 {
		t.Errorf("%d Events dropped", w.Dropped())
	}
}

// TestWriterMemoryIsBounded records an Event for each of 6,000 objects at 600/s (a first
// sync of 10,000 accounts records about 250/s) and checks that every one is written and
// that what the Writer keeps stays bounded: client-go's writer kept each Event whole,
// about 1.8 KB each (37 MB after connecting and rotating 10,000 accounts).
func TestWriterMemoryIsBounded(t *testing.T) {
	c := startAPIServer(t)
	w := startWriter(t, c)
	rec := w.Recorder(scheme.New(), "pipes-test")
	const n = 6000
	before := heap()
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("account-%05d", i), UID: "u"}}
		rec.Eventf(cm, nil, corev1.EventTypeNormal, "Connected", "Connect", "API key stored encrypted (version 1, ending …%04d)", i)
		if i%60 == 59 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitEvents(t, c, func(evs []eventsv1.Event) bool { return int64(len(evs))+w.Dropped() >= n })
	grown := float64(heap()-before) / (1 << 20)
	t.Logf("%d Events recorded, %d dropped; the Writer's series entries: %d; heap grew by %.1f MiB", n, w.Dropped(), len(w.series.Keys()), grown)
	if len(w.series.Keys()) > maxSeries {
		t.Errorf("%d series remembered, more than %d", len(w.series.Keys()), maxSeries)
	}
	if w.Dropped() > 0 {
		t.Errorf("%d Events dropped at 600/s", w.Dropped())
	}
	if grown > 4 {
		t.Errorf("the heap grew by %.1f MiB after %d Events: the Writer keeps too much", grown, n)
	}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestFullQueueWaitsThenDrops checks the back-pressure: a recorder finding its queue
// full waits for room, and drops its Event only after maxWait.
func TestFullQueueWaitsThenDrops(t *testing.T) {
	w := New(nil, logr.Discard()) // not started: nothing drains the queue
	rec := w.Recorder(scheme.New(), "pipes-test")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cm", UID: "u"}}
	record := func() { rec.Eventf(cm, nil, corev1.EventTypeNormal, "Connected", "Connect", "stored") }
	record()
	var q chan *eventsv1.Event // the queue cm's Events go to
	for i := range w.queues {
		if len(w.queues[i]) == 1 {
			q = w.queues[i]
		}
	}
	for len(q) < cap(q) {
		record()
	}
	done := make(chan time.Duration)
	go func() {
		start := time.Now()
		record()
		done <- time.Since(start)
	}()
	time.Sleep(200 * time.Millisecond)
	<-q // room: the waiting recorder gets in
	if waited := <-done; waited < 150*time.Millisecond || w.Dropped() != 0 {
		t.Fatalf("a recorder finding the queue full returned after %s with %d dropped; want it to wait for room", waited, w.Dropped())
	}
	start := time.Now()
	record() // full again, and nothing drains it
	if waited := time.Since(start); waited < maxWait || w.Dropped() != 1 {
		t.Fatalf("returned after %s with %d dropped; want a drop after %s", waited, w.Dropped(), maxWait)
	}
}
