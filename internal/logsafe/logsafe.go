// Package logsafe owns the one guard the manager's logger needs against leaking
// credentials: client-go dumps whole request and response bodies (Secrets included)
// at verbosity 8 and above, through whatever logger the context carries. Capping the
// verbosity keeps every other message while making that dump impossible, whatever
// --zap-log-level an operator picks while debugging.
package logsafe

import "github.com/go-logr/logr"

// MaxVerbosity is the highest V-level that reaches the log. client-go logs request
// URLs at 6, headers at 7 (with bearer tokens masked) and bodies at 8.
const MaxVerbosity = 5

// Cap returns a logger that drops messages more verbose than MaxVerbosity.
func Cap(l logr.Logger) logr.Logger {
	if l.GetSink() == nil {
		return l
	}
	return logr.New(capSink{l.GetSink()})
}

type capSink struct{ logr.LogSink }

func (s capSink) Enabled(level int) bool {
	return level <= MaxVerbosity && s.LogSink.Enabled(level)
}

func (s capSink) Info(level int, msg string, kv ...any) {
	if level <= MaxVerbosity {
		s.LogSink.Info(level, msg, kv...)
	}
}

func (s capSink) WithValues(kv ...any) logr.LogSink { return capSink{s.LogSink.WithValues(kv...)} }

func (s capSink) WithName(name string) logr.LogSink { return capSink{s.LogSink.WithName(name)} }

// WithCallDepth keeps caller information accurate through the wrapper.
func (s capSink) WithCallDepth(depth int) logr.LogSink {
	if d, ok := s.LogSink.(logr.CallDepthLogSink); ok {
		return capSink{d.WithCallDepth(depth)}
	}
	return s
}
