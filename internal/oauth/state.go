package oauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// StateTTL is how long a user has to complete an authorization.
const StateTTL = 10 * time.Minute

// Pending is an authorization in progress: what its state binds.
type Pending struct {
	Namespace      string    `json:"namespace"`
	Provider       string    `json:"provider"`
	UserID         string    `json:"user_id"`
	OrganizationID string    `json:"organization_id,omitempty"`
	ReturnTo       string    `json:"return_to,omitempty"`
	Verifier       string    `json:"verifier,omitempty"`
	Scopes         []string  `json:"scopes"`
	ExpiresAt      time.Time `json:"expires_at"`
}

// Errors of States.Take; neither quotes the state.
var (
	ErrStateUnknown = errors.New("this authorization is unknown or was already completed: start again from the application")
	ErrStateExpired = errors.New("this authorization expired (it must be completed within 10 minutes): start again from the application")
)

// States keeps authorizations in progress in Secrets of the operator's namespace, one per
// authorization, named after its state (128 random bits) and holding the binding and the
// PKCE verifier encrypted with the key-encryption keyset. Every replica sees them (the
// callback may reach another replica than the one that began), and a state is spent by
// deleting its Secret with a UID precondition: of two callbacks with the same state, on
// any replicas, exactly one succeeds.
type States struct {
	// Client writes the Secrets; Reader reads them from the API server.
	Client    client.Client
	Reader    client.Reader
	Namespace string
	// AEAD returns the key-encryption keyset's current primitive.
	AEAD func() tink.AEAD
	Now  func() time.Time
}

const statePrefix = "pipes-oauth-"

var stateFormat = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (s *States) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func associated(name string) []byte { return []byte("pipes.dev/oauth-state/" + name) }

// Begin records p (its ExpiresAt is set here) and returns its state.
func (s *States) Begin(ctx context.Context, p Pending) (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	state := hex.EncodeToString(raw[:])
	name := statePrefix + state
	p.ExpiresAt = s.now().Add(StateTTL).UTC()
	plain, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	sealed, err := s.AEAD().Encrypt(plain, associated(name))
	clear(plain)
	if err != nil {
		return "", err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: name,
			Labels:      map[string]string{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: pipesv1.ComponentOAuthState},
			Annotations: map[string]string{pipesv1.AnnotationExpiresAt: p.ExpiresAt.Format(time.RFC3339)}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"state": sealed},
	}
	if err := s.Client.Create(ctx, secret); err != nil {
		return "", fmt.Errorf("recording the OAuth authorization: %w", err)
	}
	return state, nil
}

// Take spends state and returns what it binds. An expired state is spent too, and
// returned with ErrStateExpired, so the user can be sent back with an error.
func (s *States) Take(ctx context.Context, state string) (*Pending, error) {
	if !stateFormat.MatchString(state) {
		return nil, ErrStateUnknown
	}
	name := statePrefix + state
	var secret corev1.Secret
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: name}, &secret); apierrors.IsNotFound(err) {
		return nil, ErrStateUnknown
	} else if err != nil {
		return nil, err
	}
	uid, rv := secret.UID, secret.ResourceVersion
	if err := s.Client.Delete(ctx, &secret, client.Preconditions{UID: &uid, ResourceVersion: &rv}); apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil, ErrStateUnknown // another callback spent it first
	} else if err != nil {
		return nil, err
	}
	plain, err := s.AEAD().Decrypt(secret.Data["state"], associated(name))
	if err != nil {
		return nil, ErrStateUnknown
	}
	defer clear(plain)
	var p Pending
	if err := json.Unmarshal(plain, &p); err != nil {
		return nil, ErrStateUnknown
	}
	if s.now().After(p.ExpiresAt) {
		return &p, ErrStateExpired
	}
	return &p, nil
}

// Sweep deletes the Secrets of authorizations that expired unfinished.
func (s *States) Sweep(ctx context.Context) (int, error) {
	var list corev1.SecretList
	if err := s.Reader.List(ctx, &list, client.InNamespace(s.Namespace),
		client.MatchingLabels{pipesv1.LabelManagedBy: pipesv1.ManagedByValue, pipesv1.LabelComponent: pipesv1.ComponentOAuthState}); err != nil {
		return 0, err
	}
	n := 0
	for i := range list.Items {
		expires, err := time.Parse(time.RFC3339, list.Items[i].Annotations[pipesv1.AnnotationExpiresAt])
		if err == nil && s.now().Before(expires.Add(time.Minute)) {
			continue
		}
		if err := s.Client.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
