package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
)

// Helpers for the tests that run `manager dev` as a real process, as `make run` does.

const banner = "pipes-operator is running"

// TestMain makes this test process the subreaper of whatever its children leave behind,
// so the control planes of the managers the tests kill are reparented here (and can be
// reaped), not to an init that might never reap them.
func TestMain(m *testing.M) {
	_ = setChildSubreaper()
	code := m.Run()
	if devBinDir != "" {
		_ = os.RemoveAll(devBinDir)
	}
	os.Exit(code)
}

var (
	devBinOnce sync.Once
	devBinDir  string
	devBin     string
	devBinErr  error
)

// devManager builds the manager with -tags dev once per test binary.
func devManager(t *testing.T) (bin, root, assets string) {
	t.Helper()
	root, err := devenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	assets, err = devenv.Assets(root)
	if err != nil {
		t.Fatal(err)
	}
	devBinOnce.Do(func() {
		if devBinDir, devBinErr = os.MkdirTemp("", "pipes-dev-test-"); devBinErr != nil {
			return
		}
		devBin = filepath.Join(devBinDir, "manager-dev")
		if out, err := exec.Command("go", "build", "-tags", "dev", "-o", devBin, ".").CombinedOutput(); err != nil {
			devBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if devBinErr != nil {
		t.Fatal(devBinErr)
	}
	return devBin, root, assets
}

// freePort returns a free loopback port for --api-bind-address, so the tests do not
// collide with a `make run` on 8443. It is below the kernel's ephemeral range, from
// which envtest and the kernel pick the control plane's and webhooks' ports: a port
// just released there can be handed out again before the manager binds it.
func freePort(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(10000))) //nolint:gosec // G404: a port number, not a secret
		if l, err := net.Listen("tcp", addr); err == nil {
			_ = l.Close()
			return addr
		}
	}
	t.Fatal("no free port in 20000-29999")
	return ""
}

// line is one line a process printed, on which stream and when.
type line struct {
	stream string
	text   string
	at     time.Time
}

// terminal collects what a process prints on stdout and stderr, line by line.
type terminal struct {
	mu     sync.Mutex
	lines  []line
	banner chan struct{} // closed when the banner's first line is printed
	once   sync.Once
	wg     sync.WaitGroup
}

func newTerminal() *terminal { return &terminal{banner: make(chan struct{})} }

func (term *terminal) read(stream string, r io.Reader) {
	term.wg.Add(1)
	go func() {
		defer term.wg.Done()
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			term.mu.Lock()
			term.lines = append(term.lines, line{stream, s.Text(), time.Now()})
			term.mu.Unlock()
			if strings.Contains(s.Text(), banner) {
				term.once.Do(func() { close(term.banner) })
			}
		}
	}()
}

func (term *terminal) snapshot() []line {
	term.mu.Lock()
	defer term.mu.Unlock()
	return append([]line(nil), term.lines...)
}

func (term *terminal) String() string {
	var b strings.Builder
	for _, l := range term.snapshot() {
		fmt.Fprintf(&b, "%s %s| %s\n", l.at.Format("15:04:05.000"), l.stream, l.text)
	}
	return b.String()
}

// devRun is one `manager dev` process (or `make` running one).
type devRun struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	root   string // module root
	assets string
	api    string // backend API address
	public string // public listener (widget) address
	demo   string // widget demo page address
	term   *terminal
	// stdout and stderr are the read ends of the process's output pipes.
	stdout, stderr *os.File
	exited         chan struct{}
	waitErr        error
}

type devOptions struct {
	dir  string   // --dir; a new temporary one when empty
	env  []string // extra environment
	args []string // extra flags
	// make runs the manager as `make run` does: through make (a throwaway Makefile
	// whose recipe execs it), in a process group of its own.
	make bool
}

// startDev starts the dev manager with stdout and stderr on pipes the test reads.
func startDev(t *testing.T, o devOptions) *devRun {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the embedded control plane")
	}
	bin, root, assets := devManager(t)
	if o.dir == "" {
		o.dir = filepath.Join(t.TempDir(), "dev")
	}
	r := &devRun{t: t, dir: o.dir, root: root, assets: assets, api: freePort(t), public: freePort(t), demo: freePort(t), term: newTerminal(), exited: make(chan struct{})}
	args := append([]string{"dev", "--dir", o.dir, "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--api-bind-address=" + r.api, "--public-bind-address=" + r.public, "--demo-bind-address=" + r.demo}, o.args...)
	if o.make {
		makefile := filepath.Join(t.TempDir(), "Makefile")
		if err := os.WriteFile(makefile, []byte("run:\n\texec $(BIN) $(ARGS)\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r.cmd = exec.Command("make", "--no-print-directory", "-f", makefile, "run", "BIN="+bin, "ARGS="+strings.Join(args, " "))
	} else {
		r.cmd = exec.Command(bin, args...)
	}
	r.cmd.Dir = root
	r.cmd.Env = append(append(os.Environ(), "KUBEBUILDER_ASSETS="+assets), o.env...)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // like a shell's job: its own process group
	var outW, errW *os.File
	var err error
	if r.stdout, outW, err = os.Pipe(); err != nil {
		t.Fatal(err)
	}
	if r.stderr, errW, err = os.Pipe(); err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = outW, errW
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = outW.Close() // the child has them
	_ = errW.Close()
	r.term.read("out", r.stdout)
	r.term.read("err", r.stderr)
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.exited
		}
		_ = r.stdout.Close()
		_ = r.stderr.Close()
	})
	return r
}

// waitBanner waits for the "running" banner and returns when it appeared.
func (r *devRun) waitBanner() time.Time {
	r.t.Helper()
	select {
	case <-r.term.banner:
	case <-r.exited:
		r.t.Fatalf("manager dev exited (%v) before it was running:\n%s", r.waitErr, r.term)
	case <-time.After(2 * time.Minute):
		r.t.Fatalf("manager dev did not come up:\n%s", r.term)
	}
	for _, l := range r.term.snapshot() {
		if strings.Contains(l.text, banner) {
			return l.at
		}
	}
	panic("unreachable")
}

// wait waits for the process to exit and returns its error.
func (r *devRun) wait(timeout time.Duration) error {
	r.t.Helper()
	select {
	case <-r.exited:
		return r.waitErr
	case <-time.After(timeout):
		r.t.Fatalf("manager dev did not stop within %v:\n%s", timeout, r.term)
		return nil
	}
}

// managerPid is the dev manager's pid: the process itself, or make's child.
func (r *devRun) managerPid() int {
	r.t.Helper()
	if filepath.Base(r.cmd.Path) != "make" {
		return r.cmd.Process.Pid
	}
	for _, p := range allProcs() {
		if p.ppid == r.cmd.Process.Pid && strings.HasSuffix(p.exe, "manager-dev") {
			return p.pid
		}
	}
	r.t.Fatalf("make has no manager-dev child")
	return 0
}

// controlPlane returns the etcd and kube-apiserver the manager started (its children
// running the binaries of the asset directory); it fails unless there are both.
func (r *devRun) controlPlane() []proc {
	r.t.Helper()
	found := r.children()
	if len(found) != 2 {
		r.t.Fatalf("want etcd and kube-apiserver as children of the manager, found %v", found)
	}
	r.t.Cleanup(func() { killAll(found) })
	return found
}

// waitControlPlane waits until the manager has started etcd and kube-apiserver.
func (r *devRun) waitControlPlane(timeout time.Duration) []proc {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for len(r.children()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return r.controlPlane()
}

func (r *devRun) children() []proc {
	manager := r.managerPid()
	var found []proc
	for _, p := range allProcs() {
		if p.ppid == manager && (p.exe == filepath.Join(r.assets, "etcd") || p.exe == filepath.Join(r.assets, "kube-apiserver")) {
			found = append(found, p)
		}
	}
	return found
}

// proc is a process as /proc shows it; start tells a reused pid apart.
type proc struct {
	pid, ppid int
	start     string
	state     string
	exe       string
}

func (p proc) String() string { return fmt.Sprintf("%s[%d]", filepath.Base(p.exe), p.pid) }

func readProc(pid int) (proc, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid, state: fields[0], start: fields[19]}
	p.ppid, _ = strconv.Atoi(fields[1])
	p.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return p, true
}

func allProcs() []proc {
	entries, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// alive reports whether p still runs (a zombie has exited; a pid with another start
// time is another process).
func alive(p proc) bool {
	now, ok := readProc(p.pid)
	return ok && now.start == p.start && now.state != "Z" && now.state != "X"
}

// reap collects p if it is a zombie child of this (subreaper) process.
func reap(p proc) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
}

// waitGone waits until none of ps is alive, reaping them, and reports the survivors.
func waitGone(ps []proc, timeout time.Duration) []proc {
	deadline := time.Now().Add(timeout)
	for {
		var survivors []proc
		for _, p := range ps {
			if alive(p) {
				survivors = append(survivors, p)
			} else {
				reap(p)
			}
		}
		if len(survivors) == 0 || time.Now().After(deadline) {
			return survivors
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killAll kills whichever of ps is still alive (test cleanup: never leave a control
// plane behind, whatever the test's outcome).
func killAll(ps []proc) {
	for _, p := range ps {
		if alive(p) {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	waitGone(ps, 10*time.Second)
}

// assertNothingLeft fails if any of the control plane survives or dir remains.
func assertNothingLeft(t *testing.T, cp []proc, dir string) {
	t.Helper()
	if survivors := waitGone(cp, 10*time.Second); len(survivors) > 0 {
		t.Errorf("the control plane outlived the manager: %v still running", survivors)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s was not removed", dir)
	}
}

// setChildSubreaper makes this process the reaper of its orphaned descendants
// (prctl PR_SET_CHILD_SUBREAPER).
func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}
