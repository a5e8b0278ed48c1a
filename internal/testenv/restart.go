package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Control-plane process names, as StopControlPlane takes them.
const (
	Etcd          = "etcd"
	KubeAPIServer = "kube-apiserver"
)

// StopControlPlane stops one of the control plane's processes (Etcd or KubeAPIServer)
// as a kubelet restarting it does: SIGTERM, then SIGKILL if it is still running after
// grace (killed says so), and waits until it has exited. start runs
// it again with the same arguments, hence the same ports, certificates and data
// directory, and returns once it is healthy; output, when not nil, receives its log.
//
// envtest cannot do this itself: its Stop deletes the temporary data and certificate
// directories, and its Start allocates new ones. The restarted process is this Env's to
// stop (Stop does, before the rest of the control plane).
func (e *Env) StopControlPlane(name string, grace time.Duration, output io.Writer) (start func(context.Context) error, killed bool, err error) {
	pid, args, err := e.controlPlanePid(name)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil, false, fmt.Errorf("stopping %s: %w", name, err)
	}
	if waitGone(pid, grace) != nil {
		killed = true
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if err := waitGone(pid, 10*time.Second); err != nil {
			return nil, true, fmt.Errorf("killing %s: %w", name, err)
		}
	}
	return func(ctx context.Context) error { return e.startControlPlane(ctx, name, args, output) }, killed, nil
}

// controlPlanePid finds the running process of name among this process's children: the
// one envtest started, or the one StopControlPlane's start started last.
func (e *Env) controlPlanePid(name string) (int, []string, error) {
	if p, ok := e.restarted[name]; ok {
		return p.Process.Pid, p.Args[1:], nil
	}
	// The directory only this Env's process is given.
	dir := e.Env.ControlPlane.Etcd.DataDir
	if name == KubeAPIServer {
		dir = e.Env.ControlPlane.APIServer.CertDir
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil || parentPid(pid) != os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(argv) == 0 || !strings.HasSuffix(argv[0], "/"+name) || !strings.Contains(string(raw), dir) {
			continue
		}
		return pid, argv[1:], nil
	}
	return 0, nil, fmt.Errorf("no running %s of this control plane", name)
}

func (e *Env) startControlPlane(ctx context.Context, name string, args []string, output io.Writer) error {
	path := e.Env.ControlPlane.Etcd.Path
	if name == KubeAPIServer {
		path = e.Env.ControlPlane.APIServer.Path
	}
	if output == nil {
		output = io.Discard
	}
	cmd := exec.Command(path, args...) //nolint:gosec // G204: envtest's own binary, with the arguments it was started with
	cmd.Stdout, cmd.Stderr = output, output
	// Its own process group, as envtest starts it; killed if this process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if e.restarted == nil {
		e.restarted = map[string]*exec.Cmd{}
	}
	e.restarted[name], e.restartedExited = cmd, append(e.restartedExited, exited)
	for {
		if err := e.healthy(ctx, name); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited while starting again", name)
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy again: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// healthy asks etcd's /health or the API server's /readyz.
func (e *Env) healthy(ctx context.Context, name string) error {
	if name == KubeAPIServer {
		cs, err := kubernetes.NewForConfig(e.Config)
		if err != nil {
			return err
		}
		_, err = cs.RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}
	u := *e.Env.ControlPlane.Etcd.URL
	u.Path = "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd /health: %s", resp.Status)
	}
	return nil
}

// stopRestarted stops the processes StopControlPlane's start started, the API server first.
func (e *Env) stopRestarted() error {
	var errs []error
	for _, name := range []string{KubeAPIServer, Etcd} {
		cmd, ok := e.restarted[name]
		if !ok {
			continue
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, err)
		}
		if err := waitGone(cmd.Process.Pid, 30*time.Second); err != nil {
			_ = cmd.Process.Kill()
			errs = append(errs, fmt.Errorf("stopping the restarted %s: %w", name, err))
		}
	}
	for _, exited := range e.restartedExited {
		<-exited
	}
	return errors.Join(errs...)
}

// waitGone waits until pid has exited and been reaped (by envtest's or our own Wait).
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still running after %s", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// parentPid is the parent of pid, from /proc/PID/stat (whose second field may hold spaces).
func parentPid(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	end := strings.LastIndex(s, ")")
	if end < 0 {
		return 0
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
