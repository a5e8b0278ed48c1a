package operator

import (
	"context"

	"github.com/go-logr/logr"
)

// stopSequenceMessage and leadershipLost are what controller-runtime's manager logs, at
// error level, when its leader elector reports the end of leadership during shutdown:
// it does so on every voluntary stop of a leader (its error channel sometimes drains
// before the process exits), which turned each rolling update into an error in the log.
const (
	stopSequenceMessage = "error received after stop sequence was engaged"
	leadershipLost      = "leader election lost"
)

// voluntaryStepDown returns the manager's logger, reporting the end of leadership as
// information once ctx (the process's stop signal) is done. Leadership lost while the
// manager is still meant to run stays an error.
func voluntaryStepDown(ctx context.Context, l logr.Logger) logr.Logger {
	if l.GetSink() == nil {
		return l
	}
	return logr.New(stepDownSink{LogSink: l.GetSink(), stopping: ctx.Done()})
}

type stepDownSink struct {
	logr.LogSink
	stopping <-chan struct{}
}

func (s stepDownSink) Error(err error, msg string, kv ...any) {
	if msg == stopSequenceMessage && err != nil && err.Error() == leadershipLost && s.done() {
		s.Info(0, "leadership released on shutdown", kv...)
		return
	}
	s.LogSink.Error(err, msg, kv...)
}

func (s stepDownSink) done() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

func (s stepDownSink) WithValues(kv ...any) logr.LogSink {
	return stepDownSink{LogSink: s.LogSink.WithValues(kv...), stopping: s.stopping}
}

func (s stepDownSink) WithName(name string) logr.LogSink {
	return stepDownSink{LogSink: s.LogSink.WithName(name), stopping: s.stopping}
}

// WithCallDepth keeps caller information accurate through the wrapper.
func (s stepDownSink) WithCallDepth(depth int) logr.LogSink {
	if d, ok := s.LogSink.(logr.CallDepthLogSink); ok {
		return stepDownSink{LogSink: d.WithCallDepth(depth), stopping: s.stopping}
	}
	return s
}
