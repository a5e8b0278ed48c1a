package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/oauth"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	"github.com/pipes-dev/pipes-operator/internal/validation"
	"github.com/pipes-dev/pipes-operator/internal/writetrack"
)

// ConnectedAccountReconciler stores each account's API key encrypted in a Secret it owns,
// rotates it when the source changes, re-encrypts it when the keyset's primary key
// changes, and reports in status whether the credential can be vended.
type ConnectedAccountReconciler struct {
	// Client reads through the manager's cache (which holds only managed Secrets).
	Client client.Client
	// APIReader reads users' source Secrets straight from the API server, so they are never cached.
	APIReader client.Reader
	Store     *credential.Store
	// Opener opens spec.apiKey.sealed values with the sealing keyset.
	Opener   *sealing.Opener
	Recorder events.EventRecorder
	// SourceMetadata is a metadata-only cache of Secrets, used to notice changes to
	// source Secrets without holding their data.
	SourceMetadata cache.Cache
	// KeysetRotated receives an event when the keyset's primary key changes.
	KeysetRotated <-chan event.GenericEvent
	// MaxConcurrentReconciles defaults to DefaultAccountWorkers.
	MaxConcurrentReconciles int
	// RefreshOAuth refreshes an OAuth account's token stored in secret (nil: no
	// proactive refresh; tokens are then refreshed when vended).
	RefreshOAuth func(ctx context.Context, ca *pipesv1.ConnectedAccount, secret *corev1.Secret) error

	// written tells a cached account older than our own last write of it.
	written writetrack.Tracker
	// overdue spreads the refreshes of tokens found past their refresh point.
	overdue overdueSpread
	// reencrypting holds a slot per re-encryption in progress (MaxConcurrentReencryptions).
	reencrypting chan struct{}
}

// RefreshLead is the most ahead of its expiry an OAuth token is refreshed.
const RefreshLead = 5 * time.Minute

// DefaultAccountWorkers is how many accounts are reconciled at once. A reconcile mostly
// waits on the API server (a Secret write, a status patch), so the count is sized to keep
// the API server busy rather than to the operator's cores: 2 workers held a first sync
// to a few dozen accounts per second.
//
// They also set how much of the API server the operator's work gets against the
// creates that cause it: with 10,000 accounts created at once by 64 clients, 32 workers
// connected half of them 17 s after their create and 99 % within 22 s, 128 within 3.3 s
// and 12 s, 256 within 2.2 s and 8.3 s, for the same total time (docs/performance.md,
// runs F to H). The API server's priority and fairness queues the excess, per client,
// so a larger count takes no more than the operator's fair share of a busy API server.
const DefaultAccountWorkers = 256

// MaxConcurrentReencryptions caps the reconciles re-encrypting a credential under a new
// primary key at once: a keyset rotation re-encrypts every credential in the
// background, and with every worker at it the API server would be saturated by that
// alone, making a user's own connect wait seconds behind it.
const MaxConcurrentReencryptions = 32

// +kubebuilder:rbac:groups=pipes.dev,resources=connectedaccounts,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=pipes.dev,resources=connectedaccounts/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=pipes.dev,resources=connectedaccounts/finalizers,verbs=update
// +kubebuilder:rbac:groups=pipes.dev,resources=providers;organizationproviders,verbs=get;list;watch
// Secrets: list and watch feed the label-selected cache of managed Secrets and the
// metadata-only watch of opted-in sources; get reads a source; create, update and delete
// act on credential Secrets. None of these can be narrowed by name, since credential
// Secrets live in every namespace with accounts. No patch: nothing patches a Secret.
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile implements reconcile.Reconciler.
func (r *ConnectedAccountReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	return requeueOnStaleCache(ctx, res, err)
}

func (r *ConnectedAccountReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ca pipesv1.ConnectedAccount
	if err := r.Client.Get(ctx, req.NamespacedName, &ca); apierrors.IsNotFound(err) {
		r.written.Forget(req.NamespacedName)
		return ctrl.Result{}, r.removeOrphan(ctx, req.NamespacedName)
	} else if err != nil {
		return ctrl.Result{}, err
	}
	if r.written.Behind(req.NamespacedName, &ca) {
		// Our last write of it is not in the cache yet; its watch event reconciles it again.
		return ctrl.Result{RequeueAfter: staleCacheRetry}, nil
	}
	if !ca.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, &ca)
	}
	// No finalizer: the credential Secret is removed when the account's deletion is seen
	// (removeOrphan), or by garbage collection through its owner reference if the
	// operator is down then. Vending stops with the account either way, since nothing
	// vends a credential without its account. A finalizer would cost every account one
	// more write (a fifth of a first sync's).
	before := ca.DeepCopy()
	syncErr := r.sync(ctx, &ca)
	var res ctrl.Result
	if syncErr == nil {
		res.RequeueAfter, syncErr = r.refreshAhead(ctx, &ca)
	}
	setHealth(&ca)
	ca.Status.ObservedGeneration = ca.Generation
	if !equality.Semantic.DeepEqual(before.Status, ca.Status) {
		if err := r.Client.Status().Patch(ctx, &ca, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, errors.Join(syncErr, err)
		}
		r.written.Wrote(&ca)
	}
	r.emitTransitions(before, &ca)
	return res, syncErr
}

// sync stores or rotates the credential and fills in ca.Status. A returned error is
// transient (API server, conflicts) and retried with backoff; problems users must fix
// are reported in conditions instead.
func (r *ConnectedAccountReconciler) sync(ctx context.Context, ca *pipesv1.ConnectedAccount) error {
	avail, err := credential.CheckAvailability(ctx, r.Client, ca.Namespace, ca.Spec.ProviderRef.Name, ca.Spec.OrganizationID)
	if err != nil {
		return err
	}
	// A missing Provider (deleted by a GitOps prune or a replace --force) keeps the stored
	// credential, encrypted and not vended, until the Provider is recreated or the account
	// deleted: an instant, irreversible loss of every user's key is never the right answer.
	provider := avail.Provider
	if account, err := credential.FindAccount(ctx, r.Client, ca.Namespace, ca.Spec.ProviderRef.Name, ca.Spec.UserID, ca.Spec.OrganizationID); err != nil {
		return err
	} else if account != nil && account.Name != ca.Name {
		return r.disconnect(ctx, ca, pipesv1.ReasonDuplicateAccount, fmt.Sprintf(
			"ConnectedAccount %q, created earlier, already connects user %q%s to Provider %q and alone holds the credential; delete this one (one account per provider, user and organization)",
			account.Name, ca.Spec.UserID, credential.InOrganization(ca.Spec.OrganizationID), ca.Spec.ProviderRef.Name))
	}
	oauth := provider != nil && provider.Spec.Method == pipesv1.AuthMethodOAuth
	if oauth && ca.Spec.APIKey != nil {
		return r.disconnect(ctx, ca, pipesv1.ReasonAuthMethodMismatch, fmt.Sprintf("Provider %q uses OAuth but this account supplies an API key; remove spec.apiKey", provider.Name))
	}

	secret, err := r.Store.GetCurrent(ctx, ca)
	if errors.Is(err, credential.ErrNotOwned) {
		ca.Status.State = pipesv1.StateDisconnected
		setCondition(ca, pipesv1.ConditionReady, metav1.ConditionFalse, pipesv1.ReasonCredentialSecretNameTaken, err.Error())
		return err // retried later: that Secret is not in the cache, so its removal is no event
	}
	if err != nil {
		return err
	}
	var plaintext []byte // the decrypted or newly supplied credential; decrypted at most once
	defer func() { clear(plaintext) }()
	var stored credential.Stored
	hasStored := secret != nil
	if hasStored {
		stored = credential.Describe(secret)
	}
	notStoredReason, notStoredMsg := pipesv1.ReasonAwaitingCredential,
		fmt.Sprintf("no API key stored yet; set one with PUT /data-integrations/%s/api-key, spec.apiKey.secretKeyRef or spec.apiKey.sealed", ca.Spec.ProviderRef.Name)

	switch {
	case provider == nil:
		// Nothing new is stored for a Provider that does not exist; Synced stays as it was.
		notStoredReason, notStoredMsg = avail.Reason, avail.Message
	case oauth:
		// Tokens come from the authorization flow (the backend API stores them).
		apimeta.RemoveStatusCondition(&ca.Status.Conditions, pipesv1.ConditionSynced)
		notStoredReason, notStoredMsg = pipesv1.ReasonAwaitingAuthorization,
			fmt.Sprintf("no OAuth token yet: the user connects through POST /data-integrations/%s/authorize (or the widget)", ca.Spec.ProviderRef.Name)
	case hasSource(ca):
		storedSourceVersion := ""
		if hasStored {
			storedSourceVersion = stored.SourceVersion
		}
		key, sourceVersion, reason, msg, err := r.readAPIKey(ctx, ca, storedSourceVersion)
		if err != nil {
			return err
		}
		defer clear(key)
		inSync := "the stored key matches " + sourceField(ca)
		switch {
		case reason != "":
			setCondition(ca, pipesv1.ConditionSynced, metav1.ConditionFalse, reason, msg)
			notStoredReason, notStoredMsg = reason, msg
		case secret != nil && stored.SourceVersion == sourceVersion:
			setCondition(ca, pipesv1.ConditionSynced, metav1.ConditionTrue, pipesv1.ReasonReady, inSync)
		default:
			next := credential.Stored{Version: credential.NextVersion(ca, nil), Last4: validation.Last4(key), SourceVersion: sourceVersion}
			if secret != nil {
				if plaintext, err = r.Store.Open(ca, secret); err == nil && bytes.Equal(plaintext, key) {
					// Same key (the source changed elsewhere): record the version, keep the rotation time.
					next = stored
					next.SourceVersion = sourceVersion
				} else {
					next.Version = credential.NextVersion(ca, &stored)
				}
			}
			if stored, err = r.Store.Put(ctx, ca, secret, key, next); err != nil {
				return err
			}
			clear(plaintext)
			plaintext = bytes.Clone(key)
			if secret == nil || stored.Version > credential.Describe(secret).Version {
				credential.RecordStored(r.Recorder, ca, "API key", stored, secret != nil, "")
			}
			hasStored = true
			setCondition(ca, pipesv1.ConditionSynced, metav1.ConditionTrue, pipesv1.ReasonReady, inSync)
		}
	default:
		apimeta.RemoveStatusCondition(&ca.Status.Conditions, pipesv1.ConditionSynced)
	}

	if !hasStored {
		setStored(ca, nil)
		ca.Status.State = pipesv1.StateDisconnected
		setCondition(ca, pipesv1.ConditionReady, metav1.ConditionFalse, notStoredReason, notStoredMsg)
		return nil
	}

	if plaintext == nil {
		plaintext, err = r.Store.Open(ca, secret)
		if err != nil {
			ca.Status.State = pipesv1.StateNeedsReauthorization
			setStored(ca, &stored)
			reason, msg := pipesv1.ReasonDecryptionFailed,
				"the stored credential cannot be decrypted: it was modified, copied from another account, or its key was removed from the keyset; the user must supply the key again"
			if errors.Is(err, credential.ErrRolledBack) {
				reason, msg = pipesv1.ReasonCredentialRolledBack, fmt.Sprintf(
					"the credential Secret holds version %d but version %d was already stored: an older credential was restored or replayed, and is not vended; the user must supply the key again",
					stored.Version, ca.Status.CredentialVersion)
			}
			setCondition(ca, pipesv1.ConditionReady, metav1.ConditionFalse, reason, msg)
			return nil
		}
		if stored.KeyID != r.Store.PrimaryKeyID() {
			oldKey := stored.KeyID
			if err := r.reencryptSlot(ctx); err != nil {
				return err
			}
			stored, err = r.Store.Put(ctx, ca, secret, plaintext, stored)
			r.reencryptDone()
			if err != nil {
				return err
			}
			r.event(ca, corev1.EventTypeNormal, pipesv1.EventReencrypted, pipesv1.ActionReencrypt, "credential re-encrypted under key %d (was %d)", stored.KeyID, oldKey)
		}
	}

	setStored(ca, &stored)
	if !stored.NeedsReauthorization.IsZero() {
		ca.Status.State = pipesv1.StateNeedsReauthorization
		setCondition(ca, pipesv1.ConditionReady, metav1.ConditionFalse, pipesv1.ReasonReauthorizationNeeded, fmt.Sprintf(
			"the provider refused the stored refresh token at %s (revoked, expired or already used): the user must connect again (POST /data-integrations/%s/authorize)",
			stored.NeedsReauthorization.UTC().Format(time.RFC3339), ca.Spec.ProviderRef.Name))
		return nil
	}
	ca.Status.State = pipesv1.StateConnected
	if !avail.Available() {
		setCondition(ca, pipesv1.ConditionReady, metav1.ConditionFalse, avail.Reason, avail.Message)
		return nil
	}
	what := "the API key"
	if oauth {
		what = "the OAuth token"
	}
	setCondition(ca, pipesv1.ConditionReady, metav1.ConditionTrue, pipesv1.ReasonConnected, what+" is stored encrypted and can be vended")
	return nil
}

// reencryptSlot waits for one of the MaxConcurrentReencryptions slots (none without
// SetupWithManager: unit tests reconcile directly).
func (r *ConnectedAccountReconciler) reencryptSlot(ctx context.Context) error {
	if r.reencrypting == nil {
		return nil
	}
	select {
	case r.reencrypting <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *ConnectedAccountReconciler) reencryptDone() {
	if r.reencrypting != nil {
		<-r.reencrypting
	}
}

// refreshAhead refreshes a connected OAuth account's token ahead of its expiry (the
// leader only reconciles, so one replica does it), and says when to look again: a
// quarter of the token's lifetime (at most RefreshLead) before it expires, less a random
// part of that, so that tokens issued together are not all refreshed at once.
func (r *ConnectedAccountReconciler) refreshAhead(ctx context.Context, ca *pipesv1.ConnectedAccount) (time.Duration, error) {
	if r.RefreshOAuth == nil || ca.Status.State != pipesv1.StateConnected || !apimeta.IsStatusConditionTrue(ca.Status.Conditions, pipesv1.ConditionReady) {
		return 0, nil
	}
	secret, err := r.Store.Get(ctx, ca)
	if err != nil || secret == nil {
		return 0, err
	}
	stored := credential.Describe(secret)
	if stored.TokenExpiry.IsZero() {
		return 0, nil
	}
	if wait := r.refreshWait(ca.UID, stored, time.Now()); wait > 0 {
		return wait, nil
	}
	if wait := time.Until(stored.RefreshRetryAt); wait > 0 {
		return wait, nil // the last refresh failed: the next waits for its backoff
	}
	// The refreshed Secret's event reconciles the account again, which schedules the next.
	err = r.RefreshOAuth(ctx, ca, secret)
	if retry := (*oauth.RetryError)(nil); errors.As(err, &retry) {
		if retry.Cause != nil {
			r.event(ca, corev1.EventTypeWarning, pipesv1.EventRefreshFailed, pipesv1.ActionRefresh, "%s; the token is vended until it expires at %s",
				retry, stored.TokenExpiry.UTC().Format(time.RFC3339))
		}
		return max(time.Until(retry.At), 100*time.Millisecond), nil
	}
	return 0, err
}

// refreshWait is how long account uid's token stored waits for its refresh (0: now):
// until its refresh point (refreshPoint, with stableJitter), or, when found well past
// that point (the leader was away), until the moment overdueSpread gives it.
func (r *ConnectedAccountReconciler) refreshWait(uid types.UID, stored credential.Stored, now time.Time) time.Duration {
	point := refreshPoint(stored, stableJitter(uid, stored.TokenExpiry))
	if now.Sub(point) > overdueGrace {
		return r.overdue.delay(uid, stored.TokenExpiry, now, rand.N[time.Duration])
	}
	return max(point.Sub(now), 0)
}

// overdueGrace: a token found this long past its refresh point is overdue, not merely
// reached by its requeue (which a busy work queue can hold back some seconds).
const overdueGrace = 30 * time.Second

// refreshLead is how long before its expiry stored's token is due: a quarter of its
// lifetime, at most RefreshLead.
func refreshLead(stored credential.Stored) time.Duration {
	return min(RefreshLead, max(stored.TokenExpiry.Sub(stored.RotatedAt)/4, time.Second))
}

// refreshPoint is when stored's token is due for its refresh: a quarter of its lifetime
// before expiry (at most RefreshLead), brought forward by up to half that (jitter returns
// a duration below its argument, the same one for a token on every call: stableJitter),
// so that tokens issued together are refreshed spread over a while rather than all at
// once.
func refreshPoint(stored credential.Stored, jitter func(time.Duration) time.Duration) time.Time {
	lead := refreshLead(stored)
	return stored.TokenExpiry.Add(-lead - jitter(lead/2))
}

// hasSource reports whether ca names a source of its API key in spec.apiKey.
func hasSource(ca *pipesv1.ConnectedAccount) bool {
	return ca.Spec.APIKey != nil && (ca.Spec.APIKey.SecretKeyRef != nil || ca.Spec.APIKey.Sealed != "")
}

// sourceField names the field ca's API key comes from.
func sourceField(ca *pipesv1.ConnectedAccount) string {
	if ca.Spec.APIKey.Sealed != "" {
		return "spec.apiKey.sealed"
	}
	return "spec.apiKey.secretKeyRef"
}

// readAPIKey reads the API key from ca's source. sourceVersion identifies what was read,
// so an unchanged source is not stored again; a source whose version matches
// storedSourceVersion is not read or opened again (key is nil then). A problem the user must
// fix comes back as a reason and message (never containing the key); err is transient.
func (r *ConnectedAccountReconciler) readAPIKey(ctx context.Context, ca *pipesv1.ConnectedAccount, storedSourceVersion string) (key []byte, sourceVersion, reason, msg string, err error) {
	if ca.Spec.APIKey.SecretKeyRef != nil {
		if storedSourceVersion != "" && r.sourceUnchanged(ctx, ca, storedSourceVersion) {
			// The source's identity and resourceVersion, from the metadata watch, are those
			// of the stored copy: nothing to read (a restart or a resync costs no API call).
			return nil, storedSourceVersion, "", "", nil
		}
		return r.readSource(ctx, ca)
	}
	key, sourceVersion, reason, msg = r.openSealed(ca, storedSourceVersion)
	return key, sourceVersion, reason, msg, nil
}

// openSealed opens spec.apiKey.sealed. Its version is a hash of the value: changing the
// value in Git rotates the key, re-applying the same value does not.
func (r *ConnectedAccountReconciler) openSealed(ca *pipesv1.ConnectedAccount, storedSourceVersion string) (key []byte, sourceVersion, reason, msg string) {
	value := ca.Spec.APIKey.Sealed
	sum := sha256.Sum256([]byte(value))
	sourceVersion = "sealed/" + hex.EncodeToString(sum[:])
	if sourceVersion == storedSourceVersion {
		return nil, sourceVersion, "", ""
	}
	binding := credential.SealingContext(ca)
	key, err := r.Opener.Open(value, binding)
	switch {
	case errors.Is(err, sealing.ErrOtherAccount):
		return nil, "", pipesv1.ReasonSealedForAnotherAccount, fmt.Sprintf(
			"spec.apiKey.sealed was sealed for another account, and a sealed value opens only for the account it was sealed for (%s): reseal the key for this one with kubectl pipes seal", binding)
	case err != nil:
		return nil, "", pipesv1.ReasonSealedValueInvalid, fmt.Sprintf("spec.apiKey.sealed: %v; reseal the key for this account (%s) with kubectl pipes seal", err, binding)
	}
	if errs := validation.APIKey(field.NewPath("spec", "apiKey", "sealed"), key); len(errs) > 0 {
		clear(key)
		return nil, "", pipesv1.ReasonInvalidKey, "the key sealed in spec.apiKey.sealed: " + validation.Message(errs)
	}
	return key, sourceVersion, "", ""
}

// sourceUnchanged reports whether the metadata watch of opted-in sources holds the
// source Secret at the version the stored credential was copied from.
func (r *ConnectedAccountReconciler) sourceUnchanged(ctx context.Context, ca *pipesv1.ConnectedAccount, storedSourceVersion string) bool {
	m := secretMetadata()
	if err := r.SourceMetadata.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: ca.Spec.APIKey.SecretKeyRef.Name}, m); err != nil {
		return false // not opted in, gone or not yet seen: readSource says which
	}
	return storedSourceVersion == sourceVersionOf(m)
}

// sourceVersionOf identifies the content of a source Secret: its UID (a deleted and
// recreated Secret is a new source) and resourceVersion.
func sourceVersionOf(o metav1.Object) string {
	return string(o.GetUID()) + "/" + o.GetResourceVersion()
}

// readSource reads the API key from spec.apiKey.secretKeyRef. A problem the user must fix
// comes back as a reason and message (never containing the key); err is transient.
func (r *ConnectedAccountReconciler) readSource(ctx context.Context, ca *pipesv1.ConnectedAccount) (key []byte, sourceVersion, reason, msg string, err error) {
	ref := ca.Spec.APIKey.SecretKeyRef
	var s corev1.Secret
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ca.Namespace, Name: ref.Name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "", pipesv1.ReasonSourceNotFound, fmt.Sprintf("Secret %q named by spec.apiKey.secretKeyRef does not exist in namespace %q; create it with the API key under key %q and the label %s=%s",
				ref.Name, ca.Namespace, ref.Key, pipesv1.LabelCredentialSource, pipesv1.CredentialSourceValue), nil
		}
		return nil, "", "", "", err
	}
	if s.Labels[pipesv1.LabelCredentialSource] != pipesv1.CredentialSourceValue {
		return nil, "", pipesv1.ReasonSourceNotOptedIn, fmt.Sprintf(
			"Secret %q is not marked as a credential source, so the operator does not read it: if it is meant to hold this API key, label it (kubectl label secret -n %s %s %s=%s)",
			ref.Name, ca.Namespace, ref.Name, pipesv1.LabelCredentialSource, pipesv1.CredentialSourceValue), nil
	}
	value, ok := s.Data[ref.Key]
	if !ok {
		// The Secret's other key names are not listed: they are its owner's business.
		return nil, "", pipesv1.ReasonSourceNotFound, fmt.Sprintf("Secret %q has no key %q; fix spec.apiKey.secretKeyRef.key or the Secret", ref.Name, ref.Key), nil
	}

	if errs := validation.APIKey(field.NewPath("data").Key(ref.Key), value); len(errs) > 0 {
		return nil, "", pipesv1.ReasonInvalidKey, fmt.Sprintf("Secret %q: %s", ref.Name, validation.Message(errs)), nil
	}
	return value, sourceVersionOf(&s), "", "", nil
}

// disconnect removes the stored credential and marks the account disconnected.
func (r *ConnectedAccountReconciler) disconnect(ctx context.Context, ca *pipesv1.ConnectedAccount, reason, msg string) error {
	existed, err := r.Store.Delete(ctx, ca)
	if err != nil {
		return err
	}
	if existed {
		r.event(ca, corev1.EventTypeNormal, pipesv1.EventDisconnected, pipesv1.ActionDisconnect, "stored credential removed: %s", msg)
	}
	setStored(ca, nil)
	ca.Status.State = pipesv1.StateDisconnected
	apimeta.RemoveStatusCondition(&ca.Status.Conditions, pipesv1.ConditionSynced)
	setCondition(ca, pipesv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	return nil
}

// finalize removes the credential of an account being deleted (held by someone's
// finalizer, or by the one earlier versions of the operator added, which it removes).
func (r *ConnectedAccountReconciler) finalize(ctx context.Context, ca *pipesv1.ConnectedAccount) error {
	existed, err := r.Store.Delete(ctx, ca)
	if err != nil {
		return err
	}
	if existed {
		r.event(ca, corev1.EventTypeNormal, pipesv1.EventDisconnected, pipesv1.ActionDisconnect, "ConnectedAccount deleted; stored credential removed")
	}
	if !controllerutil.RemoveFinalizer(ca, pipesv1.FinalizerCredentialCleanup) {
		return nil
	}
	return r.Client.Update(ctx, ca)
}

// removeOrphan removes the credential Secret of a deleted account.
func (r *ConnectedAccountReconciler) removeOrphan(ctx context.Context, account types.NamespacedName) error {
	gone, err := r.Store.DeleteOrphan(ctx, r.APIReader, account)
	if gone != nil {
		r.overdue.forget(gone.UID)
		r.event(gone, corev1.EventTypeNormal, pipesv1.EventDisconnected, pipesv1.ActionDisconnect, "ConnectedAccount deleted; stored credential removed")
	}
	return err
}

// emitTransitions records Events for state changes that are not tied to a write.
func (r *ConnectedAccountReconciler) emitTransitions(before, after *pipesv1.ConnectedAccount) {
	if c := apimeta.FindStatusCondition(after.Status.Conditions, pipesv1.ConditionSynced); c != nil && c.Status == metav1.ConditionFalse {
		if old := apimeta.FindStatusCondition(before.Status.Conditions, pipesv1.ConditionSynced); old == nil || old.Status != c.Status || old.Reason != c.Reason {
			r.event(after, corev1.EventTypeWarning, pipesv1.EventConnectionFailed, pipesv1.ActionConnect, "%s", c.Message)
		}
	}
	if c := apimeta.FindStatusCondition(after.Status.Conditions, pipesv1.ConditionReady); c != nil && c.Reason == pipesv1.ReasonProviderNotFound && after.Status.CredentialSecretRef != nil {
		if old := apimeta.FindStatusCondition(before.Status.Conditions, pipesv1.ConditionReady); old == nil || old.Reason != c.Reason {
			r.event(after, corev1.EventTypeWarning, pipesv1.EventCredentialRetained, pipesv1.ActionRetain, "%s", c.Message)
		}
	}
	if after.Status.State == pipesv1.StateNeedsReauthorization && before.Status.State != pipesv1.StateNeedsReauthorization {
		c := apimeta.FindStatusCondition(after.Status.Conditions, pipesv1.ConditionReady)
		r.event(after, corev1.EventTypeWarning, pipesv1.EventReauthorizationNeeded, pipesv1.ActionVend, "%s", c.Message)
	}
}

func (r *ConnectedAccountReconciler) event(ca *pipesv1.ConnectedAccount, eventType string, reason pipesv1.Reason, action pipesv1.EventAction, note string, args ...any) {
	r.Recorder.Eventf(ca, nil, eventType, reason, action, note, args...)
}

// setStored mirrors the stored credential's description into status; nil clears it.
func setStored(ca *pipesv1.ConnectedAccount, stored *credential.Stored) {
	if stored == nil {
		// credentialVersion is kept: the next credential gets a higher one.
		ca.Status.APIKeyLast4, ca.Status.CredentialSecretRef = "", nil
		ca.Status.LastRotatedTime, ca.Status.EncryptionKeyID = nil, 0
		return
	}
	ca.Status.APIKeyLast4 = stored.Last4
	ca.Status.CredentialSecretRef = &pipesv1.LocalObjectReference{Name: credential.SecretName(ca)}
	// Never lowered: it is what tells a restored older credential from the current one.
	ca.Status.CredentialVersion = max(ca.Status.CredentialVersion, stored.Version)
	ca.Status.EncryptionKeyID = int64(stored.KeyID)
	if stored.RotatedAt.IsZero() {
		ca.Status.LastRotatedTime = nil
	} else {
		// Status times have whole seconds (as the API server stores them); the annotation
		// has more, which would make every reconcile see a status change.
		t := metav1.NewTime(stored.RotatedAt.Truncate(time.Second))
		ca.Status.LastRotatedTime = &t
	}
}

// setHealth sets kstatus's abnormal-true conditions from Ready and Synced, for GitOps
// tools' health checks: Stalled (Failed) while a person must fix something — a source
// that does not sync, or a credential that cannot be vended — Reconciling (InProgress)
// while the account waits for a key; neither once it is connected and in sync (Current).
func setHealth(ca *pipesv1.ConnectedAccount) {
	ready := apimeta.FindStatusCondition(ca.Status.Conditions, pipesv1.ConditionReady)
	synced := apimeta.FindStatusCondition(ca.Status.Conditions, pipesv1.ConditionSynced)
	var want, reason, msg string
	switch {
	case synced != nil && synced.Status == metav1.ConditionFalse:
		want, reason, msg = pipesv1.ConditionStalled, synced.Reason, synced.Message
	case ready == nil || ready.Status == metav1.ConditionTrue:
	case ready.Reason == pipesv1.ReasonAwaitingCredential:
		want, reason, msg = pipesv1.ConditionReconciling, ready.Reason, ready.Message
	default:
		want, reason, msg = pipesv1.ConditionStalled, ready.Reason, ready.Message
	}
	for _, t := range []string{pipesv1.ConditionStalled, pipesv1.ConditionReconciling} {
		if t == want {
			setCondition(ca, t, metav1.ConditionTrue, reason, msg)
		} else {
			apimeta.RemoveStatusCondition(&ca.Status.Conditions, t)
		}
	}
}

func setCondition(ca *pipesv1.ConnectedAccount, condType pipesv1.ConditionType, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&ca.Status.Conditions, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: msg, ObservedGeneration: ca.Generation,
	})
}

// SetupWithManager wires the reconciler's watches: its accounts and their Secrets, their
// Providers and OrganizationProviders, source Secrets (metadata only) and keyset rotations.
func (r *ConnectedAccountReconciler) SetupWithManager(mgr ctrl.Manager) error {
	accountsOf := func(field string, value func(client.Object) string) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.requestsFor(ctx, o.GetNamespace(), client.MatchingFields{field: value(o)})
		})
	}
	name := func(o client.Object) string { return o.GetName() }
	sourceSecrets := source.Kind(r.SourceMetadata, secretMetadata(),
		handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, o *metav1.PartialObjectMetadata) []reconcile.Request {
			return r.requestsFor(ctx, o.Namespace, client.MatchingFields{index.AccountSourceSecret: o.Name})
		}))
	// Re-encrypting every credential after a keyset rotation is background work: queued
	// at low priority, so an account a user connects meanwhile goes first.
	rotated := source.Channel(r.KeysetRotated, handler.TypedFuncs[client.Object, reconcile.Request]{
		GenericFunc: func(ctx context.Context, _ event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			reqs := r.requestsFor(ctx, "")
			if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
				pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(handler.LowPriority)}, reqs...)
				return
			}
			for _, req := range reqs {
				q.Add(req)
			}
		},
	})
	workers := r.MaxConcurrentReconciles
	if workers == 0 {
		workers = DefaultAccountWorkers
	}
	r.reencrypting = make(chan struct{}, MaxConcurrentReencryptions)
	// Only spec changes of Providers and OrganizationProviders matter to accounts; their
	// status (the Provider's account count) changes with the accounts themselves.
	specChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		For(&pipesv1.ConnectedAccount{}).
		Owns(&corev1.Secret{}).
		// The account of an identity changes when another one of it is created or deleted.
		Watches(&pipesv1.ConnectedAccount{}, accountsOf(index.AccountIdentity, func(o client.Object) string {
			return index.AccountKeyOf(o.(*pipesv1.ConnectedAccount))
		})).
		Watches(&pipesv1.Provider{}, accountsOf(index.AccountProvider, name), specChanged).
		Watches(&pipesv1.OrganizationProvider{}, accountsOf(index.AccountProvider, func(o client.Object) string {
			return o.(*pipesv1.OrganizationProvider).Spec.ProviderRef.Name
		}), specChanged).
		WatchesRawSource(sourceSecrets).
		WatchesRawSource(rotated).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers, RateLimiter: rateLimiter()}).
		Complete(r)
}

// requestsFor lists accounts in namespace ("" for all) matching opts, as requests.
func (r *ConnectedAccountReconciler) requestsFor(ctx context.Context, namespace string, opts ...client.ListOption) []reconcile.Request {
	var list pipesv1.ConnectedAccountList
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := r.Client.List(ctx, &list, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing ConnectedAccounts to enqueue")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, ca := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ca)})
	}
	return reqs
}

// secretMetadata is the watch type for source Secrets: metadata only.
func secretMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}
