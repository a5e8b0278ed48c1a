package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/sidecar"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// controlPlaneRestarts is scenario 2: kube-apiserver is restarted, then etcd, while
// accounts are created and keys rotated through the backend API and vend sidecars serve
// the first scenario's keys. The managers and sidecars must ride it out in the same
// processes, the sidecars serving the last good values throughout, and a key rotated
// afterwards must reach every sidecar.
func (h *harness) controlPlaneRestarts(ctx context.Context, t *testing.T, sidecars int) RestartFigures {
	var f RestartFigures
	managerPids := [2]int{h.managers[0].pid(), h.managers[1].pid()}
	cars := h.startSidecars(ctx, t, sidecars)
	for _, c := range cars {
		c.waitServing(ctx, t, h, 2*time.Minute)
	}
	sampler := h.sample(ctx, cars)

	ops := plan(*flagAccounts, *flagAccounts, *flagRotations)
	l := h.startLoad(ctx, t, ops, 30*time.Second)
	time.Sleep(3 * time.Second)
	for _, name := range []string{testenv.KubeAPIServer, testenv.Etcd} {
		f.Outages = append(f.Outages, h.restartControlPlane(ctx, t, name, cars))
		time.Sleep(3 * time.Second)
	}
	l.wait(ctx, t)
	h.waitConverged(ctx, t, 3*time.Minute, "after the load", nil)
	samples := sampler.stop()
	f.Load = l.figures()
	f.Sidecars = samples.figures
	for _, v := range samples.violations {
		t.Error(v)
	}

	for slot, m := range h.managers {
		if pid := m.pid(); pid != managerPids[slot] {
			t.Errorf("manager %d: pid %d after the restarts, %d before; it must recover without a restart of its own (see %s)", slot, pid, managerPids[slot], m.log())
		}
	}
	for _, c := range cars {
		select {
		case <-c.done:
			t.Errorf("sidecar %d exited during the restarts; see %s", c.n, c.logPath)
		default:
		}
	}

	// A key rotated after the restarts reaches every sidecar, over loopback and as a file.
	round := h.tracker.lastAcked(0) + 1
	rotated := time.Now()
	l2 := h.startLoad(ctx, t, []op{{i: 0, round: round}}, 0)
	l2.wait(ctx, t)
	for _, c := range cars {
		c.waitValue(ctx, t, h, 0, round, time.Minute)
	}
	f.RotationReachedAllSeconds = time.Since(rotated).Seconds()
	h.waitConverged(ctx, t, time.Minute, "after the rotation", nil)
	h.checkAccounts(ctx, t)
	return f
}

// restartControlPlane stops name, starts it again and waits until everything converged:
// every acknowledged write in status, both managers ready, every sidecar's last sync
// successful.
func (h *harness) restartControlPlane(ctx context.Context, t *testing.T, name string, cars []*vendProcess) Outage {
	out, err := os.Create(filepath.Join(h.dir, name+"-restarted.log"))
	must(t, err)
	t.Cleanup(func() { _ = out.Close() })
	start := time.Now()
	startAgain, killed, err := h.env.StopControlPlane(name, *flagGrace, out)
	must(t, err)
	stopped := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	must(t, startAgain(startCtx))
	healthy := time.Now()
	converged := h.waitConverged(ctx, t, 3*time.Minute, "after restarting "+name, func() error {
		for _, m := range h.managers {
			if status := httpStatus(ctx, "http://"+m.probe+"/readyz"); status != http.StatusOK {
				return fmt.Errorf("manager %d's readyz answers %d", m.slot, status)
			}
		}
		for _, c := range cars {
			if ready, body := c.readyz(ctx); ready != http.StatusOK || body != "ok\n" {
				return fmt.Errorf("sidecar %d's readyz answers %d %q", c.n, ready, body)
			}
		}
		return nil
	})
	o := Outage{Process: name, Killed: killed, StopSeconds: stopped.Sub(start).Seconds(), DownSeconds: healthy.Sub(start).Seconds(),
		ConvergedSeconds: converged.Sub(healthy).Seconds()}
	t.Logf("%s restarted (SIGKILL after the grace period: %v): down %.1f s (stopping took %.1f s), everything converged %.1f s after it was healthy again", name, killed, o.DownSeconds, o.StopSeconds, o.ConvergedSeconds)
	return o
}

// vendProcess is a vend sidecar run as a process, as in a pod, with its own
// ServiceAccount's token and the backend API's CA.
type vendProcess struct {
	n        int
	listen   string
	dir      string
	accounts []int
	cmd      *exec.Cmd
	done     chan struct{}
	logPath  string
}

// startSidecars starts n sidecars, each against one manager's backend API (taking
// turns), watching account 0 (which every one of them shares) and 7 accounts of its own.
func (h *harness) startSidecars(ctx context.Context, t *testing.T, n int) []*vendProcess {
	var cars []*vendProcess
	for s := range n {
		c := &vendProcess{n: s, dir: filepath.Join(h.dir, fmt.Sprintf("vend-%d-files", s)), logPath: filepath.Join(h.dir, fmt.Sprintf("vend-%d.log", s))}
		var err error
		c.listen, err = testenv.FreeAddr()
		must(t, err)
		c.accounts = []int{0}
		for i := 1 + 7*s; i < min(1+7*(s+1), *flagAccounts); i++ {
			c.accounts = append(c.accounts, i)
		}
		var refs []string
		for _, i := range c.accounts {
			refs = append(refs, provider+":"+userID(i))
		}
		token, err := h.env.ServiceAccountToken(ctx, namespace, fmt.Sprintf("workload-%d", s), "pipes-vendor", namespace, "pipes.dev")
		must(t, err)
		tokenFile := filepath.Join(h.dir, fmt.Sprintf("vend-%d.token", s))
		must(t, os.WriteFile(tokenFile, []byte(token), 0o600))
		logFile, err := os.Create(c.logPath)
		must(t, err)
		c.cmd = exec.Command(h.vend,
			"--api-url=https://"+h.managers[s%2].api, "--ca-file="+h.caFile, "--token-file="+tokenFile,
			"--credentials="+strings.Join(refs, ","), "--listen="+c.listen, "--dir="+c.dir,
			// Shorter than the 30 s default, so that the sidecars keep asking through the outages.
			"--watch-timeout=2s")
		c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		must(t, c.cmd.Start())
		c.done = make(chan struct{})
		go func() { _ = c.cmd.Wait(); _ = logFile.Close(); close(c.done) }()
		t.Cleanup(func() {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
				_ = c.cmd.Process.Kill()
				<-c.done
			}
		})
		cars = append(cars, c)
	}
	return cars
}

func (c *vendProcess) readyz(ctx context.Context) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.listen+"/readyz", nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// credential is what the sidecar serves for account i over loopback, and in its file.
func (c *vendProcess) credential(ctx context.Context, i int) (status int, value, file string, err error) {
	body, _ := json.Marshal(wire.CredentialsRequest{UserID: userID(i)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.listen+"/data-integrations/"+provider+"/credentials", bytes.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var cr wire.CredentialsResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&cr); err != nil {
			return resp.StatusCode, "", "", err
		}
		if cr.Credential != nil {
			value = cr.Credential.Value
		}
	}
	raw, _ := os.ReadFile(filepath.Join(sidecar.FilePath(c.dir, wire.CredentialRef{Provider: provider, UserID: userID(i)}), "value"))
	return resp.StatusCode, value, string(raw), nil
}

// waitServing waits until the sidecar serves the last acknowledged key of each of its accounts.
func (c *vendProcess) waitServing(ctx context.Context, t *testing.T, h *harness, timeout time.Duration) {
	t.Helper()
	for _, i := range c.accounts {
		c.waitValue(ctx, t, h, i, h.tracker.lastAcked(i), timeout)
	}
}

// waitValue waits until the sidecar serves round's key of account i, over loopback and in its file.
func (c *vendProcess) waitValue(ctx context.Context, t *testing.T, h *harness, i, round int, timeout time.Duration) {
	t.Helper()
	want := key(i, round, h.salt)
	deadline := time.Now().Add(timeout)
	for {
		status, value, file, err := c.credential(ctx, i)
		if err == nil && status == http.StatusOK && value == want && file == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar %d does not serve round %d's key of %s after %s (status %d, error %v)", c.n, round, userID(i), timeout, status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sampler asks every sidecar, every 100 ms, for its readiness and one of its credentials
// (each in turn), which must be the last good value.
type sampler struct {
	stopCh chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	result samples
}

type samples struct {
	figures    SidecarFigures
	violations []string
}

func (h *harness) sample(ctx context.Context, cars []*vendProcess) *sampler {
	s := &sampler{stopCh: make(chan struct{})}
	s.result.figures.Sidecars = len(cars)
	degraded := make([]bool, len(cars))
	for n, c := range cars {
		s.wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-s.stopCh:
					return
				case <-time.After(100 * time.Millisecond):
				}
				i := c.accounts[k%len(c.accounts)]
				want := key(i, h.tracker.lastAcked(i), h.salt)
				ready, body := c.readyz(ctx)
				status, value, file, err := c.credential(ctx, i)
				s.mu.Lock()
				s.result.figures.Samples++
				switch {
				case ready != http.StatusOK:
					s.violate(fmt.Sprintf("sidecar %d: readyz answered %d: %s", c.n, ready, strings.TrimSpace(body)))
				case err != nil || status != http.StatusOK || value != want:
					s.violate(fmt.Sprintf("sidecar %d: vending %s answered %d (error %v), not the last good value", c.n, userID(i), status, err))
				case file != want:
					s.violate(fmt.Sprintf("sidecar %d: the file of %s does not hold the last good value", c.n, userID(i)))
				}
				if strings.Contains(body, "serving the last good") {
					s.result.figures.DegradedSamples++
					degraded[n] = true
				}
				s.mu.Unlock()
			}
		})
	}
	s.result.figures.sawDegraded = degraded
	return s
}

// violate records a violation (the first 10 in full); s.mu is held.
func (s *sampler) violate(v string) {
	s.result.figures.Violations++
	if len(s.result.violations) < 10 {
		s.result.violations = append(s.result.violations, v)
	}
}

func (s *sampler) stop() samples {
	close(s.stopCh)
	s.wg.Wait()
	for _, d := range s.result.figures.sawDegraded {
		if d {
			s.result.figures.SidecarsThatSawDegraded++
		}
	}
	return s.result
}
