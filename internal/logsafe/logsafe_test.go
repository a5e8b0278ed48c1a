package logsafe

import (
	"bytes"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestCapDropsVerboseMessagesAtAnyDepth(t *testing.T) {
	var out bytes.Buffer
	base := funcr.New(func(prefix, args string) { out.WriteString(prefix + args + "\n") }, funcr.Options{Verbosity: 10})
	l := Cap(base).WithName("x").WithValues("k", "v")

	l.V(MaxVerbosity).Info("kept")
	l.V(8).Info("Response Body", "body", "secret-body")
	if l.V(8).Enabled() {
		t.Fatal("V(8) must be disabled")
	}
	if !bytes.Contains(out.Bytes(), []byte("kept")) {
		t.Fatalf("message at MaxVerbosity was dropped: %q", out.String())
	}
	if bytes.Contains(out.Bytes(), []byte("secret-body")) {
		t.Fatalf("verbose message leaked: %q", out.String())
	}
}
