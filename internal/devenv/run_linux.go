package devenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// A dev run (`manager dev`, what `make run` runs) owns a directory, bin/dev. Its pid file
// lists the control-plane processes the run started, and stays locked (flock) for as long
// as the manager lives, so the next run can tell a live run from the leftovers of one
// that was killed, and stop those leftovers before it starts.

// PidFile is the name of the pid file in a dev run's directory.
const PidFile = "control-plane.pid"

// ControlPlaneBinaries are the processes a dev run starts, and the only ones a later run
// ever kills.
var ControlPlaneBinaries = []string{"etcd", "kube-apiserver"}

// Environment of the control-plane children, set by Run.Wrap and read by
// ExecControlPlaneChild.
const (
	envAssets  = "PIPES_DEV_ASSETS"  // directory of the real binaries
	envParent  = "PIPES_DEV_PARENT"  // the manager's pid
	envPidFile = "PIPES_DEV_PIDFILE" // where the child records itself
	// EnvNoPdeathsig, set to 1, starts the control plane without the parent-death signal,
	// so it outlives a killed manager as it would without it: for tests of the pid file.
	EnvNoPdeathsig = "PIPES_DEV_NO_PDEATHSIG"
)

// Process is one line of the pid file. Start (clock ticks after boot, from
// /proc/PID/stat) and Exe tell the process apart from a later one that reuses its pid.
type Process struct {
	Name  string // etcd, kube-apiserver, or manager
	Pid   int
	Start uint64
	Exe   string // absolute path of the binary
}

func (p Process) String() string { return fmt.Sprintf("%s (pid %d)", p.Name, p.Pid) }

func (p Process) line() string {
	return fmt.Sprintf("%s %d %d %s\n", p.Name, p.Pid, p.Start, p.Exe)
}

// Running reports whether p is still the process the pid file recorded: the same pid,
// start time and binary, and not a zombie.
func (p Process) Running() bool {
	state, start, err := procStat(p.Pid)
	if err != nil || start != p.Start || state == "Z" || state == "X" {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid))
	return err == nil && strings.TrimSuffix(exe, " (deleted)") == p.Exe
}

// isControlPlane reports whether p names one of ControlPlaneBinaries, run from a binary
// of that name: never the manager, never anything else.
func (p Process) isControlPlane() bool {
	return slices.Contains(ControlPlaneBinaries, p.Name) && filepath.Base(p.Exe) == p.Name && filepath.IsAbs(p.Exe)
}

// Run is a dev run's claim on its directory.
type Run struct {
	Dir  string // absolute
	lock *os.File
}

// Claim prepares dir for a new dev run. When dir holds a previous run's pid file and no
// live run holds it, Claim kills the control-plane processes it lists that still run
// (Process.Running: same pid, start time and binary), removes dir and creates it afresh
// with a new, locked pid file. It returns what it killed. It refuses a dir that a live
// run holds, and one that a dev run did not make.
func Claim(dir string) (*Run, []Process, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	var killed []Process
	if prev, err := os.OpenFile(filepath.Join(abs, PidFile), os.O_RDWR, 0); err == nil {
		killed, err = stopPrevious(prev, abs)
		_ = prev.Close() // also releases the lock taken to check it
		if err != nil {
			return nil, killed, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	} else if err := checkOurs(abs); err != nil {
		return nil, nil, err
	}
	if err := os.RemoveAll(abs); err != nil {
		return nil, killed, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, killed, err
	}
	f, err := os.OpenFile(filepath.Join(abs, PidFile), os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, killed, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, killed, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	self, err := selfProcess("manager")
	if err == nil {
		_, err = f.WriteString(self.line())
	}
	if err != nil {
		_ = f.Close()
		return nil, killed, err
	}
	return &Run{Dir: abs, lock: f}, killed, nil
}

// stopPrevious kills what a previous run left, unless that run is still alive.
func stopPrevious(prev *os.File, dir string) ([]Process, error) {
	procs, err := parsePidFile(prev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prev.Name(), err)
	}
	if err := unix.Flock(int(prev.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := "another manager dev"
			for _, p := range procs {
				if p.Name == "manager" {
					who = p.String()
				}
			}
			return nil, fmt.Errorf("%s is running with %s; stop it first (or use --dir)", who, dir)
		}
		return nil, err
	}
	var killed []Process
	for _, p := range procs {
		if !p.isControlPlane() || !p.Running() {
			continue
		}
		if err := unix.Kill(p.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return killed, fmt.Errorf("stopping %v, left by a previous run: %w", p, err)
		}
		killed = append(killed, p)
	}
	if left := waitExited(killed, 10*time.Second); len(left) > 0 {
		return killed, fmt.Errorf("%v, left by a previous run, did not exit after SIGKILL", left)
	}
	return killed, nil
}

// devFiles are the names a dev run writes into its directory: an existing directory
// holding anything else was not made by one and is never removed.
var devFiles = []string{PidFile, "kubeconfig", "env", CAFile, CertFile, KeyFile, "manager.log", "etcd.log", "kube-apiserver.log", "bin", "tmp"}

func checkOurs(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	for _, e := range entries {
		if !slices.Contains(devFiles, e.Name()) {
			return fmt.Errorf("%s holds %s, which manager dev did not write: refusing to remove it (pick another --dir)", dir, e.Name())
		}
	}
	return nil
}

// waitExited waits until none of ps runs and returns those that still do.
func waitExited(ps []Process, timeout time.Duration) []Process {
	deadline := time.Now().Add(timeout)
	for {
		var left []Process
		for _, p := range ps {
			if p.Running() {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ReadPidFile returns the processes recorded in dir's pid file.
func ReadPidFile(dir string) ([]Process, error) {
	f, err := os.Open(filepath.Join(dir, PidFile))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return parsePidFile(f)
}

func parsePidFile(f *os.File) ([]Process, error) {
	var procs []Process
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.SplitN(strings.TrimSpace(s.Text()), " ", 4)
		if len(fields) != 4 {
			continue // a line being written, or not ours: never acted on
		}
		pid, err1 := strconv.Atoi(fields[1])
		start, err2 := strconv.ParseUint(fields[2], 10, 64)
		if err1 != nil || err2 != nil || pid <= 1 {
			continue
		}
		procs = append(procs, Process{Name: fields[0], Pid: pid, Start: start, Exe: fields[3]})
	}
	return procs, s.Err()
}

// Wrap has env start etcd and kube-apiserver through this executable (see
// ExecControlPlaneChild), which records each in the pid file and gives it the
// parent-death signal before it becomes the real binary from assets: killed, even with
// SIGKILL, the manager takes its control plane along.
//
// envtest starts the control plane itself, with a SysProcAttr of its own (Setpgid), so
// the parent-death signal cannot be set from here; hence the detour through this binary,
// whose init must call ExecControlPlaneChild.
func (r *Run) Wrap(env *envtest.Environment, assets string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return err
	}
	if assets, err = filepath.Abs(assets); err != nil {
		return err
	}
	binDir := filepath.Join(r.Dir, "bin")
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		return err
	}
	for _, name := range ControlPlaneBinaries {
		if err := os.Symlink(self, filepath.Join(binDir, name)); err != nil {
			return err
		}
	}
	if env.ControlPlane.Etcd == nil {
		env.ControlPlane.Etcd = &envtest.Etcd{}
	}
	env.ControlPlane.Etcd.Path = filepath.Join(binDir, "etcd")
	env.ControlPlane.GetAPIServer().Path = filepath.Join(binDir, "kube-apiserver")
	for k, v := range map[string]string{envAssets: assets, envParent: strconv.Itoa(os.Getpid()), envPidFile: r.lock.Name()} {
		if err := os.Setenv(k, v); err != nil {
			return err
		}
	}
	return nil
}

// ControlPlane returns the control-plane processes recorded in the pid file that still
// run.
func (r *Run) ControlPlane() []Process {
	procs, _ := ReadPidFile(r.Dir)
	var running []Process
	for _, p := range procs {
		if p.isControlPlane() && p.Running() {
			running = append(running, p)
		}
	}
	return running
}

// Kill SIGKILLs the control plane at once (a forced stop) and waits for it to exit.
func (r *Run) Kill() {
	cp := r.ControlPlane()
	for _, p := range cp {
		_ = unix.Kill(p.Pid, unix.SIGKILL)
	}
	waitExited(cp, 10*time.Second)
}

// Remove deletes the run's directory (and with it the pid file and its lock).
func (r *Run) Remove() error {
	err := os.RemoveAll(r.Dir)
	_ = r.lock.Close() // releases the lock; a second Remove finds it closed already
	return err
}

// ExecControlPlaneChild is the first thing a binary using Run.Wrap does (from init): when
// the process is a control-plane child started through Run.Wrap's links, it sets the
// parent-death signal, records itself in the pid file and execs the real binary; it
// returns only in any other process.
func ExecControlPlaneChild() {
	name := filepath.Base(os.Args[0])
	assets := os.Getenv(envAssets)
	if assets == "" || !slices.Contains(ControlPlaneBinaries, name) {
		return
	}
	// The parent-death signal belongs to this thread, which must be the one that execs.
	runtime.LockOSThread()
	bin := filepath.Join(assets, name)
	if os.Getenv(EnvNoPdeathsig) != "1" {
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			fail(name, err)
		}
		if strconv.Itoa(os.Getppid()) != os.Getenv(envParent) {
			os.Exit(1) // the manager died before the signal was set
		}
	}
	if !slices.Contains(os.Args[1:], "--help") { // envtest probes flags with --help
		self, err := selfProcess(name)
		if err != nil {
			fail(name, err)
		}
		self.Exe = bin
		f, err := os.OpenFile(os.Getenv(envPidFile), os.O_WRONLY|os.O_APPEND, 0) //nolint:gosec // G703: the pid file the parent manager created, named by it
		if err != nil {
			fail(name, err)
		}
		_, err = f.WriteString(self.line()) // one short O_APPEND write: lines never interleave
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			fail(name, err)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != envAssets && k != envParent && k != envPidFile && k != EnvNoPdeathsig {
			env = append(env, kv)
		}
	}
	fail(name, syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)) //nolint:gosec // G204: the control-plane binary of the asset directory the parent manager uses
}

func fail(name string, err error) {
	fmt.Fprintf(os.Stderr, "starting %s: %v\n", name, err)
	os.Exit(127)
}

func selfProcess(name string) (Process, error) {
	pid := os.Getpid()
	_, start, err := procStat(pid)
	if err != nil {
		return Process{}, err
	}
	exe, err := os.Executable()
	return Process{Name: name, Pid: pid, Start: start, Exe: exe}, err
}

// procStat returns the state and start time of pid, from /proc/PID/stat.
func procStat(pid int) (state string, start uint64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 || i+2 > len(s) {
		return "", 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(s[i+2:]) // fields from the 3rd, state, on; starttime is the 22nd
	if len(fields) < 20 {
		return "", 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return fields[0], start, err
}
