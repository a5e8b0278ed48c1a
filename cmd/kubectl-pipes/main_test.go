package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/pipes-dev/pipes-operator/internal/testenv"
)

// The plugin is tested as a user runs it: the binary, built once, run as a process with
// a kubeconfig, against a real control plane with the operator (webhooks and backend
// API) running in this process.
var (
	env       *testenv.Env
	binary    string
	tmp       string
	adminKube string // kubeconfig of a system:masters user (client certificate)
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips without env
	}
	code, err := setUp(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubectl-pipes tests:", err)
		code = 1
	}
	os.Exit(code)
}

func setUp(m *testing.M) (code int, err error) {
	if tmp, err = os.MkdirTemp("", "kubectl-pipes-test-"); err != nil {
		return 1, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	binary = filepath.Join(tmp, "kubectl-pipes")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 1, fmt.Errorf("building kubectl-pipes: %w", err)
	}
	if env, err = testenv.Start(testenv.Options{Webhooks: true, API: true}); err != nil {
		return 1, err
	}
	defer func() { err = errors.Join(err, env.Stop()) }()
	admin, err := env.Env.AddUser(envtest.User{Name: "plugin-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return 1, err
	}
	if adminKube, err = writeKubeconfig(admin, "admin"); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// writeKubeconfig writes u's kubeconfig into tmp.
func writeKubeconfig(u *envtest.AuthenticatedUser, name string) (string, error) {
	raw, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(tmp, name+".kubeconfig")
	return path, os.WriteFile(path, raw, 0o600)
}

// tokenKubeconfig is the admin kubeconfig with its client certificate replaced by token.
func tokenKubeconfig(t *testing.T, token string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(adminKube)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		a.ClientCertificateData, a.ClientKeyData, a.Token = nil, nil, token
	}
	path := filepath.Join(t.TempDir(), "token.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func needEnv(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip("envtest: starts etcd and kube-apiserver; run without -short (make test)")
	}
}

// result is what one run of the plugin printed, and its exit code.
type result struct {
	stdout, stderr string
	code           int
}

// kubectlPipes runs the plugin with kubeconfig, stdin and args, as a user would.
func kubectlPipes(t *testing.T, kubeconfig, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HOME="+tmp)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running kubectl-pipes %v: %v", args, err)
	}
	// kubectl's contract: a failure is one line, "error: …", and never a stack trace.
	if r.code != 0 && (!strings.HasPrefix(r.stderr, "error: ") || strings.Count(r.stderr, "\n") != 1) {
		t.Fatalf("kubectl-pipes %v exited %d without one error line on stderr:\n%s", args, r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("kubectl-pipes %v printed a stack trace:\n%s", args, r.stderr)
	}
	return r
}

// eventually runs f until it returns nil, for up to 20 seconds.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func createNamespace(t *testing.T, name string) {
	t.Helper()
	if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}
