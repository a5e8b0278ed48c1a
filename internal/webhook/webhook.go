// Package webhook owns the admission webhooks the manager serves: validation of
// Provider, OrganizationProvider and ConnectedAccount. The rules themselves live in
// internal/validation; this package adds what needs other objects (does the Provider
// exist, is this a duplicate) and turns rule violations into admission errors.
package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/validation"
)

// Setup registers every webhook with mgr: validation of the three kinds and, when
// injector is not nil, the pod injector. Cross-object checks read through the manager's
// cache (with the indexes of package index).
func Setup(mgr ctrl.Manager, injector *PodInjector) error {
	r := mgr.GetClient()
	if injector != nil {
		if err := ctrl.NewWebhookManagedBy(mgr, &corev1.Pod{}).WithDefaulter(injector).Complete(); err != nil {
			return err
		}
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &pipesv1.Provider{}).WithValidator(&ProviderValidator{Reviews: r}).Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &pipesv1.OrganizationProvider{}).WithValidator(&OrganizationProviderValidator{Reader: r, Live: mgr.GetAPIReader(), Reviews: r}).Complete(); err != nil {
		return err
	}
	return ctrl.NewWebhookManagedBy(mgr, &pipesv1.ConnectedAccount{}).WithValidator(&ConnectedAccountValidator{Reader: r, Live: mgr.GetAPIReader(), Reviews: r}).Complete()
}

// invalid turns rule violations into a 422 Invalid status. Its message is the rules' own
// sentences (what API clients and `err.Error()` show); its causes carry each field and
// the sentence without the field's name, which is how kubectl prints them
// ("The X "y" is invalid: spec.method: is immutable …").
func invalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	causes := make([]metav1.StatusCause, 0, len(errs))
	for _, e := range errs {
		msg := strings.TrimLeft(strings.TrimPrefix(e.Detail, e.Field), ": ")
		causes = append(causes, metav1.StatusCause{Type: metav1.CauseType(e.Type), Field: e.Field, Message: msg})
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    422,
		Reason:  metav1.StatusReasonInvalid,
		Message: validation.Message(errs),
		Details: &metav1.StatusDetails{Group: pipesv1.GroupVersion.Group, Kind: kind, Name: name, Causes: causes},
	}}
}

// getProvider returns the named Provider, or nil when it does not exist.
// getProvider reads the Provider from the cache and, when the cache has none, from the
// API server (live, when not nil) before calling it missing: a Provider and its accounts
// applied together (kubectl apply -f dir/) must not be refused within the cache's lag.
func getProvider(ctx context.Context, r, live client.Reader, namespace, name string) (*pipesv1.Provider, error) {
	var p pipesv1.Provider
	key := types.NamespacedName{Namespace: namespace, Name: name}
	err := r.Get(ctx, key, &p)
	if apierrors.IsNotFound(err) && live != nil {
		err = live.Get(ctx, key, &p)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up Provider %s/%s: %w", namespace, name, err)
	}
	return &p, nil
}

// +kubebuilder:webhook:path=/validate-pipes-dev-v1alpha1-provider,mutating=false,failurePolicy=fail,sideEffects=None,groups=pipes.dev,resources=providers,verbs=create;update,versions=v1alpha1,name=vprovider.pipes.dev,admissionReviewVersions=v1

// ProviderValidator validates Providers, and checks that whoever names the OAuth client
// secret's Secret may read it.
type ProviderValidator struct {
	Reviews client.Writer
}

var _ admission.Validator[*pipesv1.Provider] = &ProviderValidator{}

// ValidateCreate implements admission.Validator.
func (v *ProviderValidator) ValidateCreate(ctx context.Context, p *pipesv1.Provider) (admission.Warnings, error) {
	errs := validation.Provider(p)
	if err := checkReadable(ctx, v.Reviews, p.Namespace, "", providerClientSecret(p), clientSecretPath, "Provider", asClientSecret, &errs); err != nil {
		return nil, err
	}
	return nil, invalid("Provider", p.Name, errs)
}

// ValidateUpdate implements admission.Validator.
func (v *ProviderValidator) ValidateUpdate(ctx context.Context, oldP, newP *pipesv1.Provider) (admission.Warnings, error) {
	errs := validation.ProviderUpdate(oldP, newP)
	if err := checkReadable(ctx, v.Reviews, newP.Namespace, providerClientSecret(oldP), providerClientSecret(newP), clientSecretPath, "Provider", asClientSecret, &errs); err != nil {
		return nil, err
	}
	return nil, invalid("Provider", newP.Name, errs)
}

// asClientSecret is what a clientSecretRef names a Secret as, in messages.
const asClientSecret = "the OAuth client secret" //nolint:gosec // G101: words in a message, not a credential

var (
	clientSecretPath    = field.NewPath("spec", "oauth", "clientSecretRef", "name")
	orgClientSecretPath = field.NewPath("spec", "credentials", "clientSecretRef", "name")
)

func providerClientSecret(p *pipesv1.Provider) string {
	if p.Spec.OAuth == nil || p.Spec.OAuth.ClientSecretRef == nil {
		return ""
	}
	return p.Spec.OAuth.ClientSecretRef.Name
}

func orgClientSecret(op *pipesv1.OrganizationProvider) string {
	if op.Spec.Credentials == nil {
		return ""
	}
	return op.Spec.Credentials.ClientSecretRef.Name
}

// ValidateDelete implements admission.Validator.
func (v *ProviderValidator) ValidateDelete(context.Context, *pipesv1.Provider) (admission.Warnings, error) {
	return nil, nil
}

// +kubebuilder:webhook:path=/validate-pipes-dev-v1alpha1-organizationprovider,mutating=false,failurePolicy=fail,sideEffects=None,groups=pipes.dev,resources=organizationproviders,verbs=create;update,versions=v1alpha1,name=vorganizationprovider.pipes.dev,admissionReviewVersions=v1

// OrganizationProviderValidator validates OrganizationProviders against their Provider
// and against each other.
type OrganizationProviderValidator struct {
	Reader client.Reader
	// Live confirms with the API server what the cache does not hold (may be nil).
	Live client.Reader
	// Reviews checks that whoever names the organization's client secret may read it.
	Reviews client.Writer
}

var _ admission.Validator[*pipesv1.OrganizationProvider] = &OrganizationProviderValidator{}

// ValidateCreate implements admission.Validator.
func (v *OrganizationProviderValidator) ValidateCreate(ctx context.Context, op *pipesv1.OrganizationProvider) (admission.Warnings, error) {
	errs, err := v.validate(ctx, op)
	if err != nil {
		return nil, err
	}
	var existing pipesv1.OrganizationProviderList
	if err := v.Reader.List(ctx, &existing, client.InNamespace(op.Namespace),
		client.MatchingFields{index.OrganizationProviderIdentity: index.OrganizationKey(op.Spec.ProviderRef.Name, op.Spec.OrganizationID)}); err != nil {
		return nil, err
	}
	for _, other := range existing.Items {
		if other.Name != op.Name {
			errs = append(errs, validation.DuplicateOrganizationProvider(op, other.Name))
			break
		}
	}
	if err := checkReadable(ctx, v.Reviews, op.Namespace, "", orgClientSecret(op), orgClientSecretPath, "OrganizationProvider", asClientSecret, &errs); err != nil {
		return nil, err
	}
	return nil, invalid("OrganizationProvider", op.Name, errs)
}

// ValidateUpdate implements admission.Validator.
func (v *OrganizationProviderValidator) ValidateUpdate(ctx context.Context, oldOP, newOP *pipesv1.OrganizationProvider) (admission.Warnings, error) {
	errs := validation.OrganizationProviderUpdate(oldOP, newOP)
	if err := checkReadable(ctx, v.Reviews, newOP.Namespace, orgClientSecret(oldOP), orgClientSecret(newOP), orgClientSecretPath, "OrganizationProvider", asClientSecret, &errs); err != nil {
		return nil, err
	}
	if newOP.DeletionTimestamp == nil {
		// The Provider may be gone or narrowed since creation; updates that leave the
		// settings alone (labels, disabling, cleanup) must still go through, so settings
		// are checked only when they change, and only against a Provider that exists.
		p, err := getProvider(ctx, v.Reader, v.Live, newOP.Namespace, newOP.Spec.ProviderRef.Name)
		if err != nil {
			return nil, err
		}
		settingsChanged := !slices.Equal(oldOP.Spec.Scopes, newOP.Spec.Scopes) || !equality.Semantic.DeepEqual(oldOP.Spec.Credentials, newOP.Spec.Credentials)
		if p != nil && settingsChanged {
			errs = append(errs, validation.OrganizationSettings(p, newOP.Spec.Scopes, newOP.Spec.Credentials != nil,
				field.NewPath("spec", "scopes"), field.NewPath("spec", "credentials"))...)
		}
	}
	return nil, invalid("OrganizationProvider", newOP.Name, errs)
}

// ValidateDelete implements admission.Validator.
func (v *OrganizationProviderValidator) ValidateDelete(context.Context, *pipesv1.OrganizationProvider) (admission.Warnings, error) {
	return nil, nil
}

func (v *OrganizationProviderValidator) validate(ctx context.Context, op *pipesv1.OrganizationProvider) (field.ErrorList, error) {
	p, err := getProvider(ctx, v.Reader, v.Live, op.Namespace, op.Spec.ProviderRef.Name)
	if err != nil {
		return nil, err
	}
	return validation.OrganizationProvider(op, p), nil
}

// +kubebuilder:webhook:path=/validate-pipes-dev-v1alpha1-connectedaccount,mutating=false,failurePolicy=fail,sideEffects=None,groups=pipes.dev,resources=connectedaccounts,verbs=create;update,versions=v1alpha1,name=vconnectedaccount.pipes.dev,admissionReviewVersions=v1

// ConnectedAccountValidator validates ConnectedAccounts against their Provider and
// against each other, and checks that whoever names a source Secret may read it.
type ConnectedAccountValidator struct {
	Reader client.Reader
	// Live confirms with the API server what the cache does not hold (may be nil).
	Live client.Reader
	// Reviews creates SubjectAccessReviews (the manager's client: creates are not cached).
	Reviews client.Writer
}

var _ admission.Validator[*pipesv1.ConnectedAccount] = &ConnectedAccountValidator{}

// ValidateCreate implements admission.Validator.
func (v *ConnectedAccountValidator) ValidateCreate(ctx context.Context, ca *pipesv1.ConnectedAccount) (admission.Warnings, error) {
	p, err := getProvider(ctx, v.Reader, v.Live, ca.Namespace, ca.Spec.ProviderRef.Name)
	if err != nil {
		return nil, err
	}
	errs := validation.ConnectedAccount(ca, p)
	if err := v.checkSourceReadable(ctx, nil, ca, &errs); err != nil {
		return nil, err
	}
	var existing pipesv1.ConnectedAccountList
	if err := v.Reader.List(ctx, &existing, client.InNamespace(ca.Namespace),
		client.MatchingFields{index.AccountIdentity: index.AccountKeyOf(ca)}); err != nil {
		return nil, err
	}
	for _, other := range existing.Items {
		if other.Name != ca.Name {
			errs = append(errs, validation.DuplicateConnectedAccount(ca, other.Name))
			break
		}
	}
	return nil, invalid("ConnectedAccount", ca.Name, errs)
}

// ValidateUpdate implements admission.Validator. The Provider is not required to exist on
// update, so accounts of a deleted Provider can still be cleaned up.
func (v *ConnectedAccountValidator) ValidateUpdate(ctx context.Context, oldCA, newCA *pipesv1.ConnectedAccount) (admission.Warnings, error) {
	errs := validation.ConnectedAccountUpdate(oldCA, newCA)
	if err := v.checkSourceReadable(ctx, oldCA, newCA, &errs); err != nil {
		return nil, err
	}
	if newCA.DeletionTimestamp == nil {
		p, err := getProvider(ctx, v.Reader, v.Live, newCA.Namespace, newCA.Spec.ProviderRef.Name)
		if err != nil {
			return nil, err
		}
		if p != nil {
			errs = append(errs, validation.ConnectedAccount(newCA, p)...)
		}
	}
	return nil, invalid("ConnectedAccount", newCA.Name, errs)
}

// ValidateDelete implements admission.Validator.
func (v *ConnectedAccountValidator) ValidateDelete(context.Context, *pipesv1.ConnectedAccount) (admission.Warnings, error) {
	return nil, nil
}

// checkSourceReadable appends an error when the requester names a source Secret (on
// create, or by changing the reference) that it may not get itself. Updates that keep
// the reference (the operator's finalizer, labels) are not re-checked.
func (v *ConnectedAccountValidator) checkSourceReadable(ctx context.Context, oldCA, ca *pipesv1.ConnectedAccount, errs *field.ErrorList) error {
	old := ""
	if oldCA != nil {
		old = sourceSecret(oldCA)
	}
	return checkReadable(ctx, v.Reviews, ca.Namespace, old, sourceSecret(ca), field.NewPath("spec", "apiKey", "secretKeyRef", "name"), "ConnectedAccount", "a key source", errs)
}

// checkReadable appends an error when the requester names Secret ref in namespace, at
// path of a kind, as something the operator reads (as), on create or by changing it from
// old, and may not get it itself: the operator reads it with its own rights, so naming it
// must not be a way to have it read. reviews is nil only in unit tests that call a
// validator directly.
func checkReadable(ctx context.Context, reviews client.Writer, namespace, old, ref string, path *field.Path, kind, as string, errs *field.ErrorList) error {
	if ref == "" || ref == old || reviews == nil {
		return nil
	}
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	user := req.UserInfo
	extra := make(map[string]authzv1.ExtraValue, len(user.Extra))
	for k, val := range user.Extra {
		extra[k] = authzv1.ExtraValue(val)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: "get", Version: "v1", Resource: "secrets", Namespace: namespace, Name: ref},
	}}
	if err := reviews.Create(ctx, sar); err != nil {
		return fmt.Errorf("checking whether %s may read Secret %s/%s: %w", user.Username, namespace, ref, err)
	}
	if !sar.Status.Allowed {
		*errs = append(*errs, validation.SecretNotReadable(path, kind, as, user.Username, namespace, ref))
	}
	return nil
}

// sourceSecret is the name of the Secret ca copies its key from ("" for none).
func sourceSecret(ca *pipesv1.ConnectedAccount) string {
	if ca.Spec.APIKey == nil || ca.Spec.APIKey.SecretKeyRef == nil {
		return ""
	}
	return ca.Spec.APIKey.SecretKeyRef.Name
}
