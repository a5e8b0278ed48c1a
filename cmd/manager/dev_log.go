//go:build dev

package main

import (
	"io"
	"os"

	"github.com/go-logr/logr"
	uzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/pipes-dev/pipes-operator/internal/logsafe"
)

// devLogger writes the whole log (as the --zap-* flags configure it) to file and, on the
// terminal (stderr), only warnings and errors, or everything with verbose (-v): a
// terminal full of INFO lines hides the banner that says how to use the dev environment.
func devLogger(zo zap.Options, file io.Writer, verbose bool) logr.Logger {
	term := zo
	term.DestWriter = os.Stderr
	termCore := zap.NewRaw(zap.UseFlagOptions(&term)).Core()
	if !verbose {
		if c, err := zapcore.NewIncreaseLevelCore(termCore, zapcore.WarnLevel); err == nil {
			termCore = c
		} // else the log level is above warnings already
		termCore = withoutStacks{termCore}
	}
	zo.DestWriter = file
	zo.ZapOpts = append(zo.ZapOpts[:len(zo.ZapOpts):len(zo.ZapOpts)],
		uzap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewTee(c, termCore) }))
	return logsafe.Cap(zap.New(zap.UseFlagOptions(&zo)))
}

// withoutStacks leaves stack traces out: on the terminal an error is one line; its stack
// is in the log file.
type withoutStacks struct{ zapcore.Core }

func (c withoutStacks) With(fields []zapcore.Field) zapcore.Core {
	return withoutStacks{c.Core.With(fields)}
}

func (c withoutStacks) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c withoutStacks) Write(e zapcore.Entry, fields []zapcore.Field) error {
	e.Stack = ""
	return c.Core.Write(e, fields)
}
