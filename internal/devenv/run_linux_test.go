package devenv

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestClaimStopsLeftovers writes the pid file a killed run would leave and checks that
// Claim kills the control-plane process it lists, and only that one: never a process
// whose pid was reused (other start time, other binary), never the manager's line.
func TestClaimStopsLeftovers(t *testing.T) {
	assets := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	for _, name := range ControlPlaneBinaries {
		copyFile(t, sleep, filepath.Join(assets, name))
	}
	start := func(bin string) (*exec.Cmd, Process) {
		cmd := exec.Command(bin, "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		_, st, err := procStat(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return cmd, Process{Pid: cmd.Process.Pid, Start: st, Exe: bin}
	}
	leftover, etcd := start(filepath.Join(assets, "etcd"))
	etcd.Name = "etcd"
	_, reusedBy := start(sleep) // an unrelated process now has the recorded pid
	reusedBy.Name, reusedBy.Exe = "kube-apiserver", filepath.Join(assets, "kube-apiserver")
	_, restarted := start(filepath.Join(assets, "kube-apiserver")) // same binary, but started later
	restarted.Name, restarted.Start = "kube-apiserver", restarted.Start-1
	_, misnamed := start(sleep) // recorded under a name its binary does not have
	misnamed.Name = "etcd"
	self, err := selfProcess("manager") // the dead manager's line: this very test's pid
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "dev")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	var pids strings.Builder
	for _, p := range []Process{self, etcd, reusedBy, restarted, misnamed} {
		pids.WriteString(p.line())
	}
	pids.WriteString("garbage line\n")
	for name, data := range map[string]string{PidFile: pids.String(), "kubeconfig": "old", "manager.log": "old"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	run, killed, err := Claim(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = run.Remove() }()
	if len(killed) != 1 || killed[0] != etcd {
		t.Errorf("killed %v, want only %v", killed, etcd)
	}
	if err := leftover.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the leftover etcd exited with %v, want killed", err)
	}
	for _, p := range []Process{reusedBy, restarted, misnamed} {
		if err := syscall.Kill(p.Pid, 0); err != nil {
			t.Errorf("%v (%s) was killed: %v", p, p.Exe, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != PidFile {
		t.Errorf("%s holds %v after Claim, want only a new %s", dir, entries, PidFile)
	}
	procs, err := ReadPidFile(dir)
	if err != nil || len(procs) != 1 || procs[0].Name != "manager" || procs[0].Pid != os.Getpid() || !procs[0].Running() {
		t.Errorf("new pid file: %v, %v; want this process as the manager", procs, err)
	}
}

// TestClaimRefusesLiveRun checks that a run does not take the directory of a live one.
func TestClaimRefusesLiveRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	first, _, err := Claim(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Claim(dir); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("manager (pid %d) is running", os.Getpid())) {
		t.Errorf("second Claim of a live run's dir: %v, want refused", err)
	}
	if _, err := os.Stat(filepath.Join(dir, PidFile)); err != nil {
		t.Errorf("the live run's pid file: %v", err)
	}
	if err := first.Remove(); err != nil {
		t.Fatal(err)
	}
	second, _, err := Claim(dir)
	if err != nil {
		t.Fatalf("Claim after the first run ended: %v", err)
	}
	_ = second.Remove()
}

// TestClaimRefusesForeignDir checks that --dir pointing at a directory of other files
// never deletes them.
func TestClaimRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	precious := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(precious, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Claim(dir); err == nil {
		t.Error("Claim took a directory it did not make")
	}
	if _, err := os.Stat(precious); err != nil {
		t.Errorf("Claim removed a file it did not write: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
