package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
)

// TestDevCommand runs what `make run` runs, as a user would: the built binary, then
// kubectl through the kubeconfig it prints, then Ctrl-C.
func TestDevCommand(t *testing.T) {
	root, err := devenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := devenv.Assets(root)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-tags", "dev", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "dev")
	cmd := exec.Command(bin, "dev", "--dir", dir, "--metrics-bind-address=0", "--health-probe-bind-address=0")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+assets)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()

	ready := make(chan struct{})
	var output bytes.Buffer
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			output.WriteString(s.Text() + "\n")
			if strings.Contains(s.Text(), "pipes-operator is running") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(2 * time.Minute):
		t.Fatalf("manager dev did not come up:\n%s", output.String())
	}

	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if !strings.Contains(string(env), "KUBECONFIG="+kubeconfig) {
		t.Fatalf("env file does not export the kubeconfig: %q", env)
	}
	kubectl := func(args ...string) string {
		out, err := exec.Command(filepath.Join(assets, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	crds := kubectl("get", "crd", "-o", "name")
	for _, want := range []string{"providers.pipes.dev", "organizationproviders.pipes.dev", "connectedaccounts.pipes.dev"} {
		if !strings.Contains(crds, want) {
			t.Errorf("kubectl get crd lacks %s:\n%s", want, crds)
		}
	}
	kubectl("apply", "-f", filepath.Join(root, "config", "samples"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		state := kubectl("get", "connectedaccount", "openai-user-123", "-o", "jsonpath={.status.state}/{.status.apiKeyLast4}")
		if state == "connected/7f3a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sample account not connected, state %q", state)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("manager dev exited with %v after Ctrl-C:\n%s", err, output.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("manager dev did not stop after Ctrl-C")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s was not removed on exit", dir)
	}
}
