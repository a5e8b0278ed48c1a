package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
)

// BuildBinary builds the module's package pkg (such as "./cmd/manager") into out, for
// suites that run the binaries as separate processes, as deployed.
func BuildBinary(ctx context.Context, pkg, out string) error {
	root, err := devenv.Root()
	if err != nil {
		return err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", out, pkg) //nolint:gosec // G204: the module's own packages
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building %s: %w", pkg, err)
	}
	return nil
}

// FreeAddr is a loopback address whose port was free when asked.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// UnrelatedNamespace is the name of the i-th namespace AddUnrelated creates.
func UnrelatedNamespace(i int) string { return fmt.Sprintf("unrelated-%04d", i) }

// AddUnrelated makes the cluster a big one the operator has no business with: namespaces
// unrelated-0000, unrelated-0001, … and, spread over them, secrets Secrets named "big" of
// just under 1 MiB of random data each (the largest a Secret may be). Their content is
// in no informer of the operator's, so neither its memory nor its speed may depend on them.
func AddUnrelated(ctx context.Context, c client.Client, secrets, namespaces int) error {
	namespaces = max(namespaces, min(secrets, 1))
	if err := InParallel(namespaces, 32, func(i int) error {
		return c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: UnrelatedNamespace(i)}})
	}); err != nil {
		return err
	}
	// Few at a time: each is a megabyte for etcd to write.
	return InParallel(secrets, 4, func(i int) error {
		data := make([]byte, 1<<20-1024)
		_, _ = rand.Read(data)
		return c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: UnrelatedNamespace(i % namespaces), Name: "big"},
			Data:       map[string][]byte{"blob": data},
		})
	})
}

// InParallel runs fn(0..n-1) on workers goroutines and returns the first error.
func InParallel(n, workers int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
