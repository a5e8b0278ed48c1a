// Package certsync keeps the directory the webhook and backend API servers read their
// certificate from equal to the Secret cert-controller writes it into.
//
// The kubelet would project that Secret into the pod too, but only on its next sync of the
// pod (a minute or more), and cert-controller then notices the files with an exponential
// backoff: a fresh replica took from 40 seconds to over 3 minutes to become ready.
// Written here, a replica serves seconds after the certificate exists, and a rotated
// certificate reaches the servers (which reload on file change) as soon as it is stored.
package certsync

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/pipes-dev/pipes-operator/internal/secretwatch"
)

// Files are the Secret keys written, in order: the certificate last, so that when the
// servers reload on its change the key beside it already matches.
var Files = []string{"ca.crt", "tls.key", "tls.crt"}

// Add registers, in every replica (not only the leader), a controller that writes the
// Secret's Files into dir whenever they change.
func Add(mgr ctrl.Manager, secret types.NamespacedName, dir string) error {
	return secretwatch.Add(mgr, "certsync", secret, func(ctx context.Context, s *corev1.Secret) error {
		if s == nil {
			return nil // a deleted Secret leaves the files: the servers keep the certificate they have
		}
		written, err := Write(dir, s.Data)
		if len(written) > 0 {
			ctrl.LoggerFrom(ctx).Info("certificate files updated from the Secret", "dir", dir, "files", written)
		}
		return err
	})
}

// Write writes into dir each of Files present in data whose content differs from the
// file's, each atomically (a reader sees the old file or the new one), and returns the
// names it wrote. Until cert-controller fills the Secret it has nothing to write.
func Write(dir string, data map[string][]byte) ([]string, error) {
	var written []string
	for _, name := range Files {
		want, ok := data[name]
		if !ok || len(want) == 0 {
			continue
		}
		path := filepath.Join(dir, name)
		if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
			continue
		}
		tmp, err := os.CreateTemp(dir, "."+name+".*")
		if err != nil {
			return written, fmt.Errorf("writing the certificate into %s (is it a writable volume, e.g. an emptyDir?): %w", dir, err)
		}
		_, werr := tmp.Write(want)
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), path)
		}
		if werr != nil {
			_ = os.Remove(tmp.Name())
			return written, fmt.Errorf("writing %s: %w", path, werr)
		}
		written = append(written, name)
	}
	return written, nil
}
