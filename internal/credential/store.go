// Package credential owns the Secrets that hold ConnectedAccounts' credentials: their
// names, labels and annotations, and sealing credentials into them and opening them, so
// the reconciler and the backend API store credentials in exactly one way.
package credential

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
)

// ComponentCredential is the LabelComponent value of credential Secrets.
const ComponentCredential = "credential"

// fieldAPIKey binds API-key ciphertexts; OAuth tokens will use their own field names.
const fieldAPIKey = "apiKey"

// Sealers yields the current Sealer; the keyring swaps it when the keyset rotates.
type Sealers interface {
	Sealer() *crypto.Sealer
}

// Store reads and writes credential Secrets.
type Store struct {
	client client.Client
	keys   Sealers
}

// NewStore returns a Store writing through c (reads come from c too, which in the manager
// is the cache of managed Secrets).
func NewStore(c client.Client, keys Sealers) *Store {
	return &Store{client: c, keys: keys}
}

// Stored is the non-secret description of a stored credential.
type Stored struct {
	Version       int64
	KeyID         uint32
	Last4         string
	RotatedAt     time.Time
	SourceVersion string
}

// SecretName is the name of a ConnectedAccount's credential Secret.
func SecretName(ca *pipesv1.ConnectedAccount) string {
	const suffix = "-credential"
	if len(ca.Name)+len(suffix) <= 253 {
		return ca.Name + suffix
	}
	sum := sha256.Sum256([]byte(ca.Name))
	return ca.Name[:253-len(suffix)-11] + "-" + hex.EncodeToString(sum[:5]) + suffix
}

// Binding ties a ciphertext to its account: namespace, name and UID, so a ciphertext
// copied into another account's Secret (or a recreated account of the same name) does not decrypt.
func Binding(ca *pipesv1.ConnectedAccount) crypto.Binding {
	return crypto.Binding{Namespace: ca.Namespace, Name: ca.Name, UID: string(ca.UID), Field: fieldAPIKey}
}

// Describe reads a credential Secret's annotations.
func Describe(s *corev1.Secret) Stored {
	a := s.Annotations
	version, _ := strconv.ParseInt(a[pipesv1.AnnotationCredentialVersion], 10, 64)
	keyID, _ := strconv.ParseUint(a[pipesv1.AnnotationKeyID], 10, 32)
	rotated, _ := time.Parse(time.RFC3339, a[pipesv1.AnnotationRotatedAt])
	return Stored{
		Version:       version,
		KeyID:         uint32(keyID),
		Last4:         a[pipesv1.AnnotationAPIKeyLast4],
		RotatedAt:     rotated,
		SourceVersion: a[pipesv1.AnnotationSourceVersion],
	}
}

// Get returns the account's credential Secret, or nil when none is stored.
func (s *Store) Get(ctx context.Context, ca *pipesv1.ConnectedAccount) (*corev1.Secret, error) {
	var secret corev1.Secret
	err := s.client.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: SecretName(ca)}, &secret)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	if !metav1.IsControlledBy(&secret, ca) {
		return nil, fmt.Errorf("secret %s/%s exists but does not belong to ConnectedAccount %s; delete or rename it", secret.Namespace, secret.Name, ca.Name)
	}
	return &secret, nil
}

// PrimaryKeyID is the key new credentials are wrapped with; a credential stored under
// another key is due for re-encryption.
func (s *Store) PrimaryKeyID() uint32 { return s.keys.Sealer().PrimaryKeyID() }

// Open decrypts the credential in secret. Errors wrap crypto.ErrDecrypt and never carry the credential.
func (s *Store) Open(ca *pipesv1.ConnectedAccount, secret *corev1.Secret) ([]byte, error) {
	return s.keys.Sealer().Open(secret.Data[pipesv1.CredentialCiphertextKey], Binding(ca))
}

// Put seals plaintext into the account's credential Secret, creating it or replacing the
// stored credential (existing is the current Secret, nil if none). desc carries the
// version, last four and source version to record; KeyID and RotatedAt are filled in.
// An update is conditional on existing's resourceVersion, so concurrent writers cannot
// both win.
func (s *Store) Put(ctx context.Context, ca *pipesv1.ConnectedAccount, existing *corev1.Secret, plaintext []byte, desc Stored) (Stored, error) {
	sealed, err := s.keys.Sealer().Seal(plaintext, Binding(ca))
	if err != nil {
		return Stored{}, err
	}
	desc.KeyID = sealed.KeyID
	if desc.RotatedAt.IsZero() {
		desc.RotatedAt = time.Now().UTC().Truncate(time.Second)
	}
	secret := &corev1.Secret{}
	if existing != nil {
		secret = existing.DeepCopy()
	}
	secret.Namespace, secret.Name = ca.Namespace, SecretName(ca)
	secret.Type = pipesv1.CredentialSecretType
	secret.Labels = map[string]string{
		pipesv1.LabelManagedBy:        pipesv1.ManagedByValue,
		pipesv1.LabelComponent:        ComponentCredential,
		pipesv1.LabelProvider:         labelValue(ca.Spec.ProviderRef.Name),
		pipesv1.LabelConnectedAccount: labelValue(ca.Name),
	}
	secret.Annotations = map[string]string{
		pipesv1.AnnotationCredentialVersion: strconv.FormatInt(desc.Version, 10),
		pipesv1.AnnotationKeyID:             strconv.FormatUint(uint64(desc.KeyID), 10),
		pipesv1.AnnotationRotatedAt:         desc.RotatedAt.Format(time.RFC3339),
	}
	if desc.Last4 != "" {
		secret.Annotations[pipesv1.AnnotationAPIKeyLast4] = desc.Last4
	}
	if desc.SourceVersion != "" {
		secret.Annotations[pipesv1.AnnotationSourceVersion] = desc.SourceVersion
	}
	secret.Data = map[string][]byte{pipesv1.CredentialCiphertextKey: sealed.Ciphertext}
	secret.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(ca, pipesv1.GroupVersion.WithKind("ConnectedAccount"))}
	if existing == nil {
		err = s.client.Create(ctx, secret)
	} else {
		err = s.client.Update(ctx, secret)
	}
	if err != nil {
		return Stored{}, err
	}
	return desc, nil
}

// Delete removes the account's credential Secret; it reports whether one existed.
func (s *Store) Delete(ctx context.Context, ca *pipesv1.ConnectedAccount) (bool, error) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ca.Namespace, Name: SecretName(ca)}}
	err := s.client.Delete(ctx, secret)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// labelValue fits a name into a label value (63 characters), hashing longer ones.
func labelValue(name string) string {
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return name[:52] + "-" + hex.EncodeToString(sum[:5])
}

// Usage counts stored credentials per key-encryption key id.
type Usage map[uint32]int

// Stale returns how many credentials are stored, and how many are not wrapped by primary.
func (u Usage) Stale(primary uint32) (stored, stale int) {
	for id, n := range u {
		stored += n
		if id != primary {
			stale += n
		}
	}
	return stored, stale
}

// KeyUsage counts the credential Secrets r can see per key id (r is normally the cache).
func KeyUsage(ctx context.Context, r client.Reader) (Usage, error) {
	var list corev1.SecretList
	if err := r.List(ctx, &list, client.MatchingLabels{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: ComponentCredential}); err != nil {
		return nil, err
	}
	usage := Usage{}
	for i := range list.Items {
		usage[Describe(&list.Items[i]).KeyID]++
	}
	return usage, nil
}

// AccountName is the name the backend API gives the ConnectedAccount of (provider, user,
// organization): deterministic, so concurrent first upserts converge on one object, and
// a valid object name whatever characters the IDs contain.
func AccountName(provider, user, organization string) string {
	sum := sha256.Sum256([]byte(user + "\x00" + organization))
	suffix := "-" + hex.EncodeToString(sum[:6])
	if len(provider)+len(suffix) > 253 {
		provider = provider[:253-len(suffix)]
	}
	return provider + suffix
}
