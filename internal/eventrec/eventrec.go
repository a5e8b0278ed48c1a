// Package eventrec owns the operator's Kubernetes Events (events.k8s.io/v1): recording
// them and writing them with bounded memory. client-go's events broadcaster keeps a full
// copy of every Event of the last 6 to 12 minutes to merge repeats into a series (after
// 10,000 accounts connected and rotated that was 37 MB, a third of the manager's heap,
// growing with the Event rate without limit), and hands each Event to a goroutine of its
// own. Here repeats are merged through a bounded LRU of small entries, and Events wait in
// a bounded queue: a recorder finding it full waits (up to a second) for room, so an API
// server slower than the reconcilers slows them a little rather than losing Events.
package eventrec

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/tools/record/util"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// SeriesWindow is how long after its last occurrence a repeat of an Event (same
	// object, type, reason, action, reporter; the note aside) still counts into its
	// series rather than making a new Event: client-go's window.
	SeriesWindow = 6 * time.Minute
	// maxSeries bounds the repeats remembered: beyond it the least recently seen is
	// forgotten, and its next repeat makes a new Event instead of a count.
	maxSeries = 4096
	// queueLength bounds the Events waiting to be written.
	queueLength = 4096
	// maxWait is how long a recorder waits for room in a full queue before dropping
	// its Event: long enough to ride out a burst, short enough not to stall a reconcile.
	maxWait = time.Second
	// workers write Events concurrently; repeats of one Event always go to the same one.
	workers = 8
	// attempts per Event when the API server is unavailable.
	attempts = 3
)

// Writer receives the Events of every recorder it made and writes them. It runs on
// every replica (the backend API records Events too). The zero value is not usable; use New.
type Writer struct {
	client     client.Client
	log        logr.Logger
	instance   string // the reporting instance: this process
	queues     [workers]chan *eventsv1.Event
	series     *utilcache.LRUExpireCache
	dropped    atomic.Int64
	retryDelay time.Duration
}

// series is what is remembered of an Event to count its repeats.
type series struct {
	namespace, name string
	count           int32
}

// New returns a Writer that writes Events with c once started. Events recorded before
// then wait in its queue.
func New(c client.Client, log logr.Logger) *Writer {
	hostname, _ := os.Hostname()
	w := &Writer{client: c, log: log, instance: hostname, series: utilcache.NewLRUExpireCache(maxSeries), retryDelay: time.Second}
	for i := range w.queues {
		w.queues[i] = make(chan *eventsv1.Event, queueLength/workers)
	}
	return w
}

// Recorder returns a recorder whose Events name reportingController.
func (w *Writer) Recorder(scheme *runtime.Scheme, reportingController string) events.EventRecorder {
	return &recorder{w: w, scheme: scheme, controller: reportingController, instance: reportingController + "-" + w.instance}
}

type recorder struct {
	w                    *Writer
	scheme               *runtime.Scheme
	controller, instance string
}

// Eventf implements events.EventRecorder, building the Event as client-go's recorder does.
func (r *recorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	ref, err := reference.GetReference(r.scheme, regarding)
	if err != nil {
		r.w.log.Error(err, "no reference to record an Event about", "reason", reason)
		return
	}
	var relatedRef *corev1.ObjectReference
	if related != nil {
		relatedRef, _ = reference.GetReference(r.scheme, related)
	}
	if eventtype != corev1.EventTypeNormal && eventtype != corev1.EventTypeWarning {
		r.w.log.Error(nil, "unsupported Event type", "type", eventtype, "reason", reason)
		return
	}
	now := time.Now()
	namespace := ref.Namespace
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	r.w.enqueue(&eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: util.GenerateEventName(ref.Name, now.UnixNano()), Namespace: namespace},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.controller, ReportingInstance: r.instance,
		Action: action, Reason: reason, Type: eventtype,
		Regarding: *ref, Related: relatedRef,
		Note: fmt.Sprintf(note, args...),
	})
}

// enqueue queues ev for writing, waiting up to maxWait for room.
func (w *Writer) enqueue(ev *eventsv1.Event) {
	q := w.queues[shard(key(ev))]
	select {
	case q <- ev:
		return
	default:
	}
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case q <- ev:
	case <-t.C:
		w.dropped.Add(1)
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica records.
func (w *Writer) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable: it writes Events until ctx is done.
func (w *Writer) Start(ctx context.Context) error {
	done := make(chan struct{})
	for _, q := range w.queues {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-q:
					w.write(ctx, ev)
				}
			}
		}()
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	var reported int64
	for {
		select {
		case <-ctx.Done():
			for range w.queues {
				<-done
			}
			return nil
		case <-tick.C:
			if n := w.dropped.Load(); n != reported {
				w.log.Info("Events dropped: more were recorded than the API server took", "dropped", n-reported)
				reported = n
			}
		}
	}
}

// Dropped is how many Events were dropped because the queue stayed full.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

// write creates ev, or counts it into the series of an earlier one.
func (w *Writer) write(ctx context.Context, ev *eventsv1.Event) {
	k := key(ev)
	if v, ok := w.series.Get(k); ok {
		s := v.(*series)
		s.count++
		w.series.Add(k, s, SeriesWindow)
		patch := fmt.Appendf(nil, `{"series":{"count":%d,"lastObservedTime":%q}}`, s.count, metav1.NowMicro().Format(metav1.RFC3339Micro))
		existing := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace, Name: s.name}}
		err := w.retry(ctx, func() error { return w.client.Patch(ctx, existing, client.RawPatch(types.MergePatchType, patch)) })
		if err == nil || !apierrors.IsNotFound(err) {
			w.report(err, ev)
			return
		}
		// The Event was deleted (its TTL in the API server): start again.
	}
	created := ev.DeepCopy()
	err := w.retry(ctx, func() error { return w.client.Create(ctx, created) })
	if err == nil || apierrors.IsAlreadyExists(err) {
		w.series.Add(k, &series{namespace: ev.Namespace, name: ev.Name, count: 1}, SeriesWindow)
		return
	}
	w.report(err, ev)
}

// retry calls write until it succeeds, fails for good, or attempts are spent.
func (w *Writer) retry(ctx context.Context, write func() error) error {
	var err error
	for i := range attempts {
		if err = write(); err == nil || !transient(err) || i == attempts-1 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w.retryDelay << i):
		}
	}
	return err
}

func transient(err error) bool {
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err) ||
		!isStatus(err)
}

func isStatus(err error) bool {
	_, ok := err.(apierrors.APIStatus) //nolint:errorlint // client errors are returned unwrapped
	return ok
}

func (w *Writer) report(err error, ev *eventsv1.Event) {
	if err != nil {
		// The note is left out: Events never carry secrets, but logs need not repeat them.
		w.log.Error(err, "writing an Event", "namespace", ev.Namespace, "regarding", ev.Regarding.Name, "reason", ev.Reason)
	}
}

// key identifies the repeats of an Event as client-go's writer does: its note aside, so
// that "version 3" after "version 2" counts as a repeat rather than a new Event.
func key(ev *eventsv1.Event) string {
	related := ""
	if ev.Related != nil {
		related = string(ev.Related.UID) + "/" + ev.Related.Kind + "/" + ev.Related.Namespace + "/" + ev.Related.Name
	}
	r := ev.Regarding
	return fmt.Sprintf("%s|%s|%s|%s|%s|%s/%s/%s/%s/%s|%s", ev.Type, ev.Action, ev.Reason, ev.ReportingController, ev.ReportingInstance,
		r.UID, r.APIVersion, r.Kind, r.Namespace, r.Name, related)
}

func shard(k string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(k))
	return int(h.Sum32() % workers)
}
