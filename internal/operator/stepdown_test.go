package operator

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestVoluntaryStepDownIsNotAnError(t *testing.T) {
	var out strings.Builder
	base := funcr.New(func(prefix, args string) { out.WriteString(prefix + args + "\n") }, funcr.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	l := voluntaryStepDown(ctx, base).WithName("manager")

	l.Error(errors.New(leadershipLost), stopSequenceMessage)
	if !strings.Contains(out.String(), `"error"="leader election lost"`) {
		t.Fatalf("leadership lost while running must stay an error; logged:\n%s", out.String())
	}

	out.Reset()
	cancel()
	l.Error(errors.New(leadershipLost), stopSequenceMessage)
	if got := out.String(); strings.Contains(got, `"error"`) || !strings.Contains(got, "leadership released on shutdown") {
		t.Fatalf("a voluntary step-down must be logged as information; logged:\n%s", got)
	}

	out.Reset()
	l.Error(errors.New("cache sync failed"), stopSequenceMessage)
	if !strings.Contains(out.String(), `"error"="cache sync failed"`) {
		t.Fatalf("other errors during shutdown must stay errors; logged:\n%s", out.String())
	}
}
