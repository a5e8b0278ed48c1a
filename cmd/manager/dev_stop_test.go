package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevStops stops `manager dev` every way a terminal, a pipeline or a process
// supervisor does, and checks that nothing is left: no etcd, no kube-apiserver, no --dir.
func TestDevStops(t *testing.T) {
	t.Run("SIGTERM to make run's process group", func(t *testing.T) {
		// make forwards SIGTERM to the recipe it runs, so the manager gets it twice.
		r := startDev(t, devOptions{make: true})
		r.waitBanner()
		cp := r.controlPlane()
		if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = r.wait(time.Minute) // make reports the signal as its failure
		assertNothingLeft(t, cp, r.dir)
		if t.Failed() {
			t.Logf("terminal:\n%s", r.term)
		}
	})

	t.Run("SIGHUP (terminal closed), with -v", func(t *testing.T) {
		r := startDev(t, devOptions{args: []string{"-v"}})
		r.waitBanner()
		cp := r.controlPlane()
		if !strings.Contains(r.term.String(), "\tINFO\t") {
			t.Errorf("-v: no INFO log lines on the terminal:\n%s", r.term)
		}
		if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		_ = r.wait(time.Minute)
		assertNothingLeft(t, cp, r.dir)
	})

	// A second Ctrl-C forces the stop (SIGKILL to the control plane) while the orderly
	// one waits: here, for the control plane's start to finish, which cannot be cut short.
	t.Run("Ctrl-C twice while starting", func(t *testing.T) {
		r := startDev(t, devOptions{})
		cp := r.waitControlPlane(time.Minute)
		if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(r.term.String(), "stopping the manager") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(time.Minute); err == nil {
			t.Error("a forced stop exited 0")
		}
		assertNothingLeft(t, cp, r.dir)
		if !strings.Contains(r.term.String(), "forced stop") {
			t.Errorf("a second Ctrl-C did not force the stop:\n%s", r.term)
		}
	})

	t.Run("output pipe closed (make run | tee, tee gone)", func(t *testing.T) {
		r := startDev(t, devOptions{})
		r.waitBanner()
		cp := r.controlPlane()
		_ = r.stdout.Close()
		_ = r.stderr.Close()
		_ = r.wait(time.Minute)
		assertNothingLeft(t, cp, r.dir)
	})
}

// TestDevAfterSIGKILL kills the manager outright, which no handler sees, then runs
// `manager dev` again on the same directory, as `make run` would be.
func TestDevAfterSIGKILL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")

	// Without the parent-death signal the control plane outlives a killed manager (as
	// it did before); the next run must find it from bin/dev and stop it.
	first := startDev(t, devOptions{dir: dir, env: []string{"PIPES_DEV_NO_PDEATHSIG=1"}})
	first.waitBanner()
	orphans := first.controlPlane()
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.wait(time.Minute)
	time.Sleep(time.Second)
	for _, p := range orphans {
		if !alive(p) {
			t.Logf("%v died with the manager", p)
		}
	}

	second := startDev(t, devOptions{dir: dir})
	second.waitBanner()
	if survivors := waitGone(orphans, 10*time.Second); len(survivors) > 0 {
		t.Errorf("the first run's control plane is still running after the second started: %v", survivors)
	}
	cp := second.controlPlane()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if out, err := exec.Command(filepath.Join(second.assets, "kubectl"), "--kubeconfig", kubeconfig, "get", "crd", "providers.pipes.dev").CombinedOutput(); err != nil {
		t.Errorf("second run: kubectl get crd: %v\n%s", err, out)
	}

	// With it (the default), a killed manager takes its control plane along at once.
	if err := second.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = second.wait(time.Minute)
	if survivors := waitGone(cp, 10*time.Second); len(survivors) > 0 {
		t.Errorf("SIGKILL of the manager left %v running", survivors)
	}
	_ = os.RemoveAll(dir)
}
