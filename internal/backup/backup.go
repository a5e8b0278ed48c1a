// Package backup owns moving stored credentials between clusters: exporting every
// ConnectedAccount with its credential, still encrypted, and importing them where the
// accounts get new UIDs. Each ciphertext is bound to its account's UID, so that one
// copied into a re-created account never decrypts on its own; a restore re-binds each
// credential on purpose, with the administrator's rights and the restored keyset, and
// never replaces a credential newer than the one in the backup.
package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
)

// Format names the file format; Import refuses others.
const Format = "pipes.dev/credential-backup/v1"

// File is an export: no plaintext, only ciphertexts the keyset opens.
type File struct {
	Format   string    `json:"format"`
	Accounts []Account `json:"accounts"`
}

// Account is one ConnectedAccount and its credential (nil when none is stored).
type Account struct {
	Namespace  string                       `json:"namespace"`
	Name       string                       `json:"name"`
	UID        types.UID                    `json:"uid"`
	Spec       pipesv1.ConnectedAccountSpec `json:"spec"`
	Credential *Credential                  `json:"credential,omitempty"`
}

// Credential is a stored credential as its Secret holds it.
type Credential struct {
	Version       int64     `json:"version"`
	Last4         string    `json:"last4,omitempty"`
	RotatedAt     time.Time `json:"rotatedAt"`
	SourceVersion string    `json:"sourceVersion,omitempty"`
	Ciphertext    []byte    `json:"ciphertext"`
}

// Export reads every ConnectedAccount and its credential Secret through r (the API
// server, not a cache).
func Export(ctx context.Context, r client.Reader) (*File, error) {
	var accounts pipesv1.ConnectedAccountList
	if err := r.List(ctx, &accounts); err != nil {
		return nil, fmt.Errorf("listing ConnectedAccounts: %w", err)
	}
	f := &File{Format: Format, Accounts: []Account{}}
	for i := range accounts.Items {
		ca := &accounts.Items[i]
		if !ca.DeletionTimestamp.IsZero() {
			continue
		}
		a := Account{Namespace: ca.Namespace, Name: ca.Name, UID: ca.UID, Spec: ca.Spec}
		var s corev1.Secret
		err := r.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: credential.SecretName(ca)}, &s)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("reading the credential of %s/%s: %w", ca.Namespace, ca.Name, err)
		case credential.Owns(ca, &s):
			d := credential.Describe(&s)
			a.Credential = &Credential{Version: d.Version, Last4: d.Last4, RotatedAt: d.RotatedAt, SourceVersion: d.SourceVersion,
				Ciphertext: s.Data[pipesv1.CredentialCiphertextKey]}
		}
		f.Accounts = append(f.Accounts, a)
	}
	return f, nil
}

// Result is what Import did with one account.
type Result struct {
	Account string // namespace/name
	// Outcome: "restored", "created" (no credential in the backup), "kept" (a credential
	// at least as new is already stored), or "failed".
	Outcome string
	Err     error
}

// Import creates the backup's accounts that do not exist and stores each credential,
// re-bound to the account it now belongs to, through store (whose keyring must hold the
// keyset the backup was sealed with). c writes to the API server directly.
func Import(ctx context.Context, c client.Client, store *credential.Store, f *File) ([]Result, error) {
	if f.Format != Format {
		return nil, fmt.Errorf("not a pipes.dev credential backup: format %q, want %q", f.Format, Format)
	}
	results := make([]Result, 0, len(f.Accounts))
	for _, a := range f.Accounts {
		outcome, err := importOne(ctx, c, store, a)
		if err != nil {
			outcome = "failed"
		}
		results = append(results, Result{Account: a.Namespace + "/" + a.Name, Outcome: outcome, Err: err})
	}
	return results, nil
}

func importOne(ctx context.Context, c client.Client, store *credential.Store, a Account) (string, error) {
	ca := &pipesv1.ConnectedAccount{}
	err := c.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: a.Name}, ca)
	if apierrors.IsNotFound(err) {
		ca = &pipesv1.ConnectedAccount{ObjectMeta: metav1.ObjectMeta{Namespace: a.Namespace, Name: a.Name}, Spec: a.Spec}
		err = c.Create(ctx, ca)
	}
	if err != nil {
		return "", err
	}
	if ca.Spec.ProviderRef != a.Spec.ProviderRef || ca.Spec.UserID != a.Spec.UserID || ca.Spec.OrganizationID != a.Spec.OrganizationID {
		return "", fmt.Errorf("ConnectedAccount %s/%s exists for another provider, user or organization; not touched", a.Namespace, a.Name)
	}
	if a.Credential == nil {
		return "created", nil
	}
	existing, err := store.Get(ctx, ca)
	if err != nil {
		return "", err
	}
	var prev *credential.Stored
	if existing != nil {
		d := credential.Describe(existing)
		prev = &d
	}
	if current := credential.NextVersion(ca, prev) - 1; current >= a.Credential.Version {
		return "kept", nil // never roll a credential back
	}
	// Open under the binding it was sealed with: the account's old UID and its version.
	sealedFor := ca.DeepCopy()
	sealedFor.UID, sealedFor.Status = a.UID, pipesv1.ConnectedAccountStatus{}
	stored := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{pipesv1.AnnotationCredentialVersion: fmt.Sprint(a.Credential.Version)}},
		Data:       map[string][]byte{pipesv1.CredentialCiphertextKey: a.Credential.Ciphertext},
	}
	plain, err := store.Open(sealedFor, stored)
	if err != nil {
		return "", errors.Join(errors.New("the credential does not decrypt with this cluster's keyset: restore the keyset Secret the backup was made with first"), err)
	}
	defer clear(plain)
	_, err = store.Put(ctx, ca, existing, plain, credential.Stored{
		Version: a.Credential.Version, Last4: a.Credential.Last4, RotatedAt: a.Credential.RotatedAt, SourceVersion: a.Credential.SourceVersion,
	})
	if err != nil {
		return "", err
	}
	return "restored", nil
}
