// Package credential owns the Secrets that hold ConnectedAccounts' credentials: their
// names, labels and annotations, and sealing credentials into them and opening them, so
// the reconciler and the backend API store credentials in exactly one way.
package credential

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/writetrack"
)

// ComponentCredential is the LabelComponent value of credential Secrets.
const ComponentCredential = pipesv1.ComponentCredential

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
	// written lets Get tell a cached Secret older than our own last write of it.
	written writetrack.Tracker
}

// ErrCacheBehind means the cache has not yet seen this process's last write of the
// credential Secret: acting on its copy would write again (or see a credential older
// than the account's status, i.e. a rollback that is not one). Its watch event is on its
// way and reconciles the account again.
var ErrCacheBehind = errors.New("the cache has not yet seen the last write of the credential Secret")

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
	// TokenExpiry is when an OAuth credential's access token expires (zero: API keys,
	// and tokens that do not expire).
	TokenExpiry time.Time
	// NeedsReauthorization is when the provider refused the stored OAuth refresh token
	// (zero: it has not).
	NeedsReauthorization time.Time
	// RefreshFailures counts the OAuth token's failed refreshes in a row, and
	// RefreshRetryAt is when the next may be tried (both zero since the last success;
	// Put clears them).
	RefreshFailures int
	RefreshRetryAt  time.Time
}

// FormatRefreshRetry is the value of AnnotationRefreshRetry after failures failed
// refreshes in a row, the next not before at (rounded up to a whole second).
func FormatRefreshRetry(failures int, at time.Time) string {
	if !at.Equal(at.Truncate(time.Second)) {
		at = at.Truncate(time.Second).Add(time.Second)
	}
	return strconv.Itoa(failures) + " " + at.UTC().Format(time.RFC3339)
}

func parseRefreshRetry(v string) (int, time.Time) {
	n, at, _ := strings.Cut(v, " ")
	failures, err := strconv.Atoi(n)
	t, err2 := time.Parse(time.RFC3339, at)
	if err != nil || err2 != nil || failures < 0 {
		return 0, time.Time{}
	}
	return failures, t
}

// SecretName is the name of a ConnectedAccount's credential Secret.
func SecretName(ca *pipesv1.ConnectedAccount) string { return secretNameFor(ca.Name) }

func secretNameFor(account string) string {
	const suffix = "-credential"
	if len(account)+len(suffix) <= 253 {
		return account + suffix
	}
	sum := sha256.Sum256([]byte(account))
	return account[:253-len(suffix)-11] + "-" + hex.EncodeToString(sum[:5]) + suffix
}

// Binding ties a ciphertext to its account and version: namespace, name and UID, so a
// ciphertext copied into another account's Secret (or a recreated account of the same
// name) does not decrypt, and the credential version, so a ciphertext cannot pass for
// another version than the one it was sealed as.
func Binding(ca *pipesv1.ConnectedAccount, version int64) crypto.Binding {
	return crypto.Binding{Namespace: ca.Namespace, Name: ca.Name, UID: string(ca.UID), Field: fieldAPIKey, Version: version}
}

// ErrNotOwned is returned by Get when a Secret has the credential Secret's name but the
// account does not control it: a Secret of someone else's, or of a deleted account of the
// same name that the cache still shows.
var ErrNotOwned = errors.New("a Secret with the credential Secret's name belongs to something else")

// ErrRolledBack is returned by Open for a credential older than the newest version the
// account has recorded: a restored backup or replayed write, which must not be vended.
var ErrRolledBack = errors.New("the credential Secret holds an older version than the account has already recorded (restored or replayed); it is not used")

// NextVersion is the version of a new credential replacing existing (nil if none): one
// above both the stored version and every version the account has recorded, so versions
// never repeat, even after a disconnect.
func NextVersion(ca *pipesv1.ConnectedAccount, existing *Stored) int64 {
	v := ca.Status.CredentialVersion
	if existing != nil {
		v = max(v, existing.Version)
	}
	return v + 1
}

// Describe reads a credential Secret's annotations.
func Describe(s *corev1.Secret) Stored {
	a := s.Annotations
	version, _ := strconv.ParseInt(a[pipesv1.AnnotationCredentialVersion], 10, 64)
	keyID, _ := strconv.ParseUint(a[pipesv1.AnnotationKeyID], 10, 32)
	// RFC3339Nano parses whole seconds too (annotations written by earlier versions).
	rotated, _ := time.Parse(time.RFC3339Nano, a[pipesv1.AnnotationRotatedAt])
	expiry, _ := time.Parse(time.RFC3339, a[pipesv1.AnnotationTokenExpiry])
	reauth, _ := time.Parse(time.RFC3339, a[pipesv1.AnnotationNeedsReauthorization])
	failures, retryAt := parseRefreshRetry(a[pipesv1.AnnotationRefreshRetry])
	return Stored{
		RefreshFailures:      failures,
		RefreshRetryAt:       retryAt,
		TokenExpiry:          expiry,
		NeedsReauthorization: reauth,
		Version:              version,
		KeyID:                uint32(keyID),
		Last4:                a[pipesv1.AnnotationAPIKeyLast4],
		RotatedAt:            rotated,
		SourceVersion:        a[pipesv1.AnnotationSourceVersion],
	}
}

// Get returns the account's credential Secret, or nil when none is stored, as the
// cache holds it (possibly a moment behind a write). It only reads: the Secret of an
// earlier account of the same name is none of this account's (nil).
func (s *Store) Get(ctx context.Context, ca *pipesv1.ConnectedAccount) (*corev1.Secret, error) {
	secret, _, previous, err := s.get(ctx, ca)
	if previous {
		return nil, err
	}
	return secret, err
}

// GetCurrent is Get for a writer: ErrCacheBehind when the cache has not yet seen this
// process's last write of the Secret, so the caller does not act on an old copy; and the
// credential of an earlier account of the same name (deleted, since names are unique,
// before its Secret was) is removed, so this account can store its own.
func (s *Store) GetCurrent(ctx context.Context, ca *pipesv1.ConnectedAccount) (*corev1.Secret, error) {
	secret, behind, previous, err := s.get(ctx, ca)
	switch {
	case err != nil:
		return nil, err
	case behind:
		return nil, ErrCacheBehind
	case previous:
		if _, err := s.deleteSecret(ctx, secret); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return secret, nil
}

// get reads the account's credential Secret from the cache; previous reports a Secret
// of an earlier account of the same name (returned, not deleted).
func (s *Store) get(ctx context.Context, ca *pipesv1.ConnectedAccount) (secret *corev1.Secret, behind, previous bool, err error) {
	secret = &corev1.Secret{}
	key := types.NamespacedName{Namespace: ca.Namespace, Name: SecretName(ca)}
	err = s.client.Get(ctx, key, secret)
	switch {
	case apierrors.IsNotFound(err):
		return nil, s.written.Behind(key, nil), false, nil
	case err != nil:
		return nil, false, false, err
	}
	behind = s.written.Behind(key, secret)
	if owner := previousAccount(secret, ca.Name); owner != nil && owner.UID != ca.UID {
		return secret, behind, true, nil
	}
	if !Owns(ca, secret) {
		return nil, behind, false, fmt.Errorf("%w: Secret %s/%s is not ConnectedAccount %s's credential Secret (not controlled by it); delete or rename that Secret", ErrNotOwned, secret.Namespace, secret.Name, ca.Name)
	}
	return secret, behind, false, nil
}

// PrimaryKeyID is the key new credentials are wrapped with; a credential stored under
// another key is due for re-encryption.
func (s *Store) PrimaryKeyID() uint32 { return s.keys.Sealer().PrimaryKeyID() }

// Open decrypts the credential in secret. Errors are crypto.ErrDecrypt or ErrRolledBack
// and never carry the credential.
func (s *Store) Open(ca *pipesv1.ConnectedAccount, secret *corev1.Secret) ([]byte, error) {
	version := Describe(secret).Version
	if version < ca.Status.CredentialVersion {
		return nil, ErrRolledBack
	}
	return s.keys.Sealer().Open(secret.Data[pipesv1.CredentialCiphertextKey], Binding(ca, version))
}

// Put seals plaintext into the account's credential Secret, creating it or replacing the
// stored credential (existing is the current Secret, nil if none). desc carries the
// version, last four and source version to record; KeyID and RotatedAt are filled in.
// An update is conditional on existing's resourceVersion, so concurrent writers cannot
// both win.
func (s *Store) Put(ctx context.Context, ca *pipesv1.ConnectedAccount, existing *corev1.Secret, plaintext []byte, desc Stored) (Stored, error) {
	sealed, err := s.keys.Sealer().Seal(plaintext, Binding(ca, desc.Version))
	if err != nil {
		return Stored{}, err
	}
	desc.KeyID = sealed.KeyID
	if desc.RotatedAt.IsZero() {
		// Sub-second: the sidecar measures rotation-to-visible latency from it.
		desc.RotatedAt = time.Now().UTC()
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
		pipesv1.AnnotationRotatedAt:         desc.RotatedAt.UTC().Format(time.RFC3339Nano),
	}
	if desc.Last4 != "" {
		secret.Annotations[pipesv1.AnnotationAPIKeyLast4] = desc.Last4
	}
	if desc.SourceVersion != "" {
		secret.Annotations[pipesv1.AnnotationSourceVersion] = desc.SourceVersion
	}
	if !desc.TokenExpiry.IsZero() {
		secret.Annotations[pipesv1.AnnotationTokenExpiry] = desc.TokenExpiry.UTC().Format(time.RFC3339)
	}
	if !desc.NeedsReauthorization.IsZero() {
		secret.Annotations[pipesv1.AnnotationNeedsReauthorization] = desc.NeedsReauthorization.UTC().Format(time.RFC3339)
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
	s.written.Wrote(secret)
	return desc, nil
}

// Delete removes the account's credential Secret; it reports whether one existed. Only a
// Secret the account controls (its controller owner reference and our managed label) is
// deleted: a Secret that merely has the right name is someone else's and stays.
func (s *Store) Delete(ctx context.Context, ca *pipesv1.ConnectedAccount) (bool, error) {
	var secret corev1.Secret
	err := s.client.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: SecretName(ca)}, &secret)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !Owns(ca, &secret) {
		return false, nil
	}
	return s.deleteSecret(ctx, &secret)
}

// DeleteOrphan removes the credential Secret of the deleted ConnectedAccount at account
// (its owner reference is garbage collection's job too, but an orphan lingering until
// then would block an account created again under the name). It returns the account
// the Secret belonged to, nil when there was none. live confirms with the API server
// that the Secret's account is gone: a cache may not show a new account yet while it
// already shows its Secret, and that Secret is no orphan.
func (s *Store) DeleteOrphan(ctx context.Context, live client.Reader, account types.NamespacedName) (*pipesv1.ConnectedAccount, error) {
	var secret corev1.Secret
	err := s.client.Get(ctx, types.NamespacedName{Namespace: account.Namespace, Name: secretNameFor(account.Name)}, &secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	owner := previousAccount(&secret, account.Name)
	if owner == nil {
		return nil, nil
	}
	var current pipesv1.ConnectedAccount
	if err := live.Get(ctx, account, &current); err == nil && current.UID == owner.UID {
		return nil, nil // alive: the cache is behind
	} else if client.IgnoreNotFound(err) != nil {
		return nil, err
	}
	if deleted, err := s.deleteSecret(ctx, &secret); !deleted || err != nil {
		return nil, err
	}
	gone := &pipesv1.ConnectedAccount{}
	gone.Namespace, gone.Name, gone.UID = account.Namespace, owner.Name, owner.UID
	return gone, nil
}

// previousAccount is the controller of a managed credential Secret when that is a
// ConnectedAccount named account, nil otherwise.
func previousAccount(secret *corev1.Secret, account string) *metav1.OwnerReference {
	if secret.Labels[pipesv1.LabelManagedBy] != pipesv1.ManagedByValue || secret.Labels[pipesv1.LabelComponent] != ComponentCredential {
		return nil
	}
	owner := metav1.GetControllerOf(secret)
	if owner == nil || owner.Kind != "ConnectedAccount" || owner.APIVersion != pipesv1.GroupVersion.String() || owner.Name != account {
		return nil
	}
	return owner
}

// deleteSecret deletes secret if it is still the same object; it reports whether it did.
func (s *Store) deleteSecret(ctx context.Context, secret *corev1.Secret) (bool, error) {
	err := s.client.Delete(ctx, secret, client.Preconditions{UID: &secret.UID})
	s.written.Forget(client.ObjectKeyFromObject(secret))
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) { // gone, or replaced by another object
		return false, nil
	}
	return err == nil, err
}

// Owns reports whether secret is ca's credential Secret: controlled by ca and labelled as
// a managed credential.
func Owns(ca *pipesv1.ConnectedAccount, secret *corev1.Secret) bool {
	return metav1.IsControlledBy(secret, ca) &&
		secret.Labels[pipesv1.LabelManagedBy] == pipesv1.ManagedByValue &&
		secret.Labels[pipesv1.LabelComponent] == ComponentCredential
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

// Stale returns how many credentials are stored, and how many are wrapped by a key other
// than primary (those naming no key, id 0, are unreadable rather than stale).
func (u Usage) Stale(primary uint32) (stored, stale int) {
	for id, n := range u {
		stored += n
		if id != primary && id != 0 {
			stale += n
		}
	}
	return stored, stale
}

// KeyUsage counts the credential Secrets r can see per key id, read from each ciphertext
// itself (not from the annotation beside it, which anyone who can write the Secret can
// change). Ciphertexts that name no key count under id 0, which no Tink key has.
func KeyUsage(ctx context.Context, r client.Reader) (Usage, error) {
	var list corev1.SecretList
	// Read only: from a cache, no deep copy of every credential per call (a metrics scrape
	// copied 10,000 Secrets each time).
	if err := r.List(ctx, &list, client.MatchingLabels{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: ComponentCredential},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	usage := Usage{}
	for i := range list.Items {
		id, _ := crypto.KeyIDOf(list.Items[i].Data[pipesv1.CredentialCiphertextKey])
		usage[id]++
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
