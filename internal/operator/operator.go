// Package operator assembles the manager: its cache (which holds only the Secrets the
// operator owns), indexes, keyring, reconcilers, webhooks, metrics and probes. The
// manager binary, `make run` and the integration tests all build it here, so what is
// tested is what runs.
package operator

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tink-crypto/tink-go/v2/tink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/controllers"
	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/cachemem"
	"github.com/pipes-dev/pipes-operator/internal/certsync"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/crypto"
	"github.com/pipes-dev/pipes-operator/internal/eventrec"
	"github.com/pipes-dev/pipes-operator/internal/index"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/logsafe"
	"github.com/pipes-dev/pipes-operator/internal/oauth"
	"github.com/pipes-dev/pipes-operator/internal/public"
	"github.com/pipes-dev/pipes-operator/internal/scheme"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
	pipeswebhook "github.com/pipes-dev/pipes-operator/internal/webhook"
	"github.com/pipes-dev/pipes-operator/internal/widget"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Options configure the manager.
type Options struct {
	// Namespace is the operator's own namespace: the keyset and webhook certificate Secrets live there.
	Namespace string
	// KeysetSecret names the Secret holding the key-encryption keyset (created on first start).
	KeysetSecret string
	// SealingKeysetSecret names the Secret holding the sealing keyset, whose public half
	// is published in the ConfigMap pipes-sealing-public-keyset (created on first start).
	SealingKeysetSecret string
	// KeysetFile, when set, loads the keyset from this file (a mounted Secret or a KMS
	// agent's output) instead of KeysetSecret; rotating it then needs a restart.
	KeysetFile string

	MetricsAddr string // "0" disables
	ProbeAddr   string // "0" disables
	PprofAddr   string // "" disables; serves net/http/pprof (heap profiles for make bench-scale)
	// AccountWorkers is how many ConnectedAccounts are reconciled at once (0: controllers.DefaultAccountWorkers).
	AccountWorkers   int
	LeaderElection   bool
	LeaderElectionID string

	// DisableWebhooks runs without admission webhooks (CEL rules still apply).
	DisableWebhooks bool
	WebhookHost     string
	WebhookPort     int
	// WebhookCertDir holds tls.crt and tls.key. With CertRotation set, the manager writes
	// them there from cert-controller's Secret (it must be writable: an emptyDir);
	// otherwise they must exist (envtest, a mounted cert-manager Secret).
	WebhookCertDir string
	CertRotation   *CertRotation

	// APIAddr serves the backend API there ("" disables it); APICertDir holds its
	// tls.crt and tls.key (default: WebhookCertDir).
	APIAddr      string
	APICertDir   string
	APIRateLimit float64
	// APIRequireAudience makes the backend API accept only tokens for audience pipes.dev,
	// not pods' automounted ones (--api-require-audience, true in the binary; off here
	// for embedders such as the test environment).
	APIRequireAudience bool
	// APIReviewTimeout bounds each TokenReview and SubjectAccessReview the backend API
	// makes (0: backendapi.DefaultReviewTimeout); past it the caller gets 503.
	APIReviewTimeout time.Duration

	// PublicAddr serves the public listener there: the widget's script and API, for
	// browsers, through an Ingress ("" disables it, and widget tokens with it). It needs
	// the backend API, which issues the tokens.
	PublicAddr string
	// PublicCertDir holds tls.crt and tls.key for the public listener; "" serves plain
	// HTTP, for an Ingress or Gateway that terminates TLS.
	PublicCertDir string
	// PublicURL is the public listener's URL as browsers reach it (through the Ingress):
	// the OAuth callback is PublicURL + /oauth/callback, the redirect URI to register
	// with providers. Empty: http://PublicAddr (make run, tests).
	PublicURL string
	// ProviderCAFile is a PEM bundle of CAs trusted for OAuth providers' endpoints besides
	// the system's (--provider-ca-file).
	ProviderCAFile string
	// WidgetAllowedOrigins are the origins whose pages may call the widget API.
	WidgetAllowedOrigins []string
	// WidgetTokenTTL is the widget tokens' lifetime (widgettoken.DefaultTTL when 0; at most widgettoken.MaxTTL).
	WidgetTokenTTL time.Duration
	// WidgetKeyRotation is how often the leader rotates the widget signing key
	// (controllers.DefaultWidgetKeyRotation when 0; at least twice WidgetTokenTTL).
	WidgetKeyRotation time.Duration

	// VendImage is the vend sidecar image the pod injector adds ("" disables injection).
	VendImage string
	// VendAPIURL is the backend API's URL as pods reach it.
	VendAPIURL string
	// VendCA returns the CA bundle pods trust for the backend API (default: ca.crt in the API's cert dir).
	VendCA func() ([]byte, error)

	// SkipNameValidation lets several managers run in one process (tests).
	SkipNameValidation bool
}

// CertRotation has cert-controller generate and rotate the webhook serving certificate
// and inject its CA into the webhook configurations: no manual steps in a cluster.
type CertRotation struct {
	SecretName         string // Secret in Namespace holding the CA and serving cert
	ServiceName        string // webhook Service, in Namespace
	WebhookConfigName  string // ValidatingWebhookConfiguration to patch
	MutatingConfigName string // MutatingWebhookConfiguration to patch
	// ExtraServiceNames are other Services in Namespace the certificate serves (the backend API).
	ExtraServiceNames []string
}

// Operator is a configured manager and the parts tests and commands need to reach.
type Operator struct {
	Manager ctrl.Manager
	Keyring *keyring.Keyring
	Opener  *sealing.Opener
	Store   *credential.Store
	API     *backendapi.Server // nil when disabled
	Public  *public.Server     // nil when disabled
	Widgets *widgettoken.Tokens
	// Refresher refreshes OAuth tokens (nil without the public listener).
	Refresher *oauth.Refresher
	// oauthAPI is API once setupOAuth has given it its OAuth flow: the leader's
	// reconciler refreshes tokens ahead of expiry through it.
	oauthAPI *atomic.Pointer[backendapi.Server]
}

// refreshOAuth is the leader's proactive refresh of an OAuth account's token, through
// the backend API's OAuth flow once setupOAuth has made it (nothing before).
func refreshOAuth(api *atomic.Pointer[backendapi.Server]) func(context.Context, *pipesv1.ConnectedAccount, *corev1.Secret) error {
	return func(ctx context.Context, ca *pipesv1.ConnectedAccount, secret *corev1.Secret) error {
		if s := api.Load(); s != nil {
			return s.RefreshAhead(ctx, ca, secret)
		}
		return nil
	}
}

// Scheme returns a scheme with the built-in kinds and pipes.dev/v1alpha1.
func Scheme() *runtime.Scheme { return scheme.New() }

// cert-controller lists and watches webhook configurations through a cache (list and
// watch cannot be narrowed by name), and updates only ours with its CA bundle.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations;mutatingwebhookconfigurations,verbs=list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;update,resourceNames=pipes-validating-webhook-configuration
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;update,resourceNames=pipes-mutating-webhook-configuration
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=pipes.dev,resources=connectedaccounts,verbs=create;delete
// +kubebuilder:rbac:groups=pipes.dev,resources=organizationproviders,verbs=create;update

// New builds the manager; it loads (or on first start creates) the keyset before returning.
func New(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) (*Operator, error) {
	if o.Namespace == "" {
		return nil, errors.New("operator namespace is not set (flag --namespace or POD_NAMESPACE)")
	}
	if o.KeysetSecret == "" {
		o.KeysetSecret = "pipes-keyset"
	}
	if o.SealingKeysetSecret == "" {
		o.SealingKeysetSecret = pipesv1.SealingKeysetSecret
	}
	log = logsafe.Cap(log)
	scheme := Scheme()
	managed := labels.SelectorFromSet(labels.Set{pipesv1.LabelManagedBy: pipesv1.ManagedByValue})
	// With cert-controller, the certificate is created at run time (and written into the
	// cert dir by certsync): the servers that need it wait for it rather than fail.
	var certsReady chan struct{}
	webhookServer := webhook.NewServer(webhook.Options{Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.WebhookCertDir})
	if o.CertRotation != nil {
		certsReady = make(chan struct{})
		webhookServer = delayedWebhookServer{Server: webhookServer, ready: certsReady}
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Logger: voluntaryStepDown(ctx, log),
		Cache: cache.Options{
			// Only the Secrets we own are cached: caching every Secret of a cluster is how
			// operators run out of memory.
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: {Label: managed},
				// ConfigMaps only for the injected pods' CA bundles, which are labelled likewise.
				&corev1.ConfigMap{}: {Label: managed},
			},
			// No managed fields, and repeated strings kept once (see cachemem).
			DefaultTransform: cachemem.Transform,
		},
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		PprofBindAddress:        o.PprofAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        orDefault(o.LeaderElectionID, "pipes-operator.pipes.dev"),
		LeaderElectionNamespace: o.Namespace,
		// Every leader-only runnable has stopped before the lease is released, and the
		// process exits right after: the next leader takes over at once rather than a
		// lease duration (15 s) later.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer:                 webhookServer,
		Controller:                    ctrlConfig(o),
	})
	if err != nil {
		return nil, err
	}
	if err := index.Register(ctx, index.Namespaced(mgr.GetCache())); err != nil {
		return nil, err
	}

	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	keysetKey := types.NamespacedName{Namespace: o.Namespace, Name: o.KeysetSecret}
	var ks *crypto.Keyset
	if o.KeysetFile != "" {
		ks, err = crypto.LoadKeysetFile(o.KeysetFile)
	} else {
		ks, err = keyring.EnsureSecret(ctx, direct, keysetKey, log.WithName("keyring"))
	}
	if err != nil {
		return nil, err
	}
	ring := keyring.New(ks)
	sealingKey := types.NamespacedName{Namespace: o.Namespace, Name: o.SealingKeysetSecret}
	sealingKeyset, err := keyring.Sealing.Ensure(ctx, direct, sealingKey, log.WithName("keyring"))
	if err != nil {
		return nil, err
	}
	opener := sealing.NewOpener(sealingKeyset)
	store := credential.NewStore(mgr.GetClient(), ring)

	// Source Secrets are users' own; we watch their metadata only, reduced to identity,
	// so a change triggers reconciliation without their data ever entering memory, and
	// only those opted in as sources: a Secret losing the label leaves the selection,
	// which is an event too.
	sourceMetadata, err := cache.New(cfg, cache.Options{
		Scheme: scheme, Mapper: mgr.GetRESTMapper(),
		DefaultLabelSelector: labels.SelectorFromSet(labels.Set{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}),
		DefaultTransform: func(in any) (any, error) {
			if m, ok := in.(*metav1.PartialObjectMetadata); ok {
				return cachemem.Transform(&metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
					Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
				}})
			}
			return in, nil
		},
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(sourceMetadata); err != nil {
		return nil, err
	}

	rotated := make(chan event.GenericEvent, 1)
	if o.KeysetFile == "" {
		if err := (&controllers.KeysetReconciler{Secret: keysetKey, Keyring: ring, Rotated: rotated}).SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}
	if err := (&controllers.SealingKeysetReconciler{Secret: sealingKey, Opener: opener, Reader: mgr.GetAPIReader(), Writer: direct}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	// Events go through a writer of our own, whose memory stays bounded (see eventrec).
	events := eventrec.New(mgr.GetClient(), log.WithName("events"))
	if err := mgr.Add(events); err != nil {
		return nil, err
	}
	oauthAPI := &atomic.Pointer[backendapi.Server]{} // set by setupOAuth
	if err := (&controllers.ConnectedAccountReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Store: store, Opener: opener,
		Recorder: events.Recorder(scheme, "pipes-operator"), SourceMetadata: sourceMetadata, KeysetRotated: rotated,
		MaxConcurrentReconciles: o.AccountWorkers, RefreshOAuth: refreshOAuth(oauthAPI),
	}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&controllers.ProviderReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&controllers.OrganizationProviderReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := registerMetrics(append(backendapi.Collectors(), controllers.NewCredentialCollector(mgr.GetClient(), ring))...); err != nil {
		return nil, err
	}

	if err := setupWebhooks(mgr, o, certsReady); err != nil {
		return nil, err
	}
	var api *backendapi.Server
	if o.APIAddr != "" {
		authn := backendapi.NewTokenReviewer(direct, 10*time.Second)
		authn.RequireAudience, authn.Timeout = o.APIRequireAudience, o.APIReviewTimeout
		authz := backendapi.NewAccessReviewer(direct, 10*time.Second)
		authz.Timeout = o.APIReviewTimeout
		api = &backendapi.Server{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Informers: mgr.GetCache(), Store: store,
			Recorder: events.Recorder(scheme, "pipes-backend-api"),
			Authn:    authn,
			Authz:    authz,
			Log:      log.WithName("backend-api"),
			Options:  backendapi.Options{Addr: o.APIAddr, CertDir: orDefault(o.APICertDir, o.WebhookCertDir), RateLimit: o.APIRateLimit, WaitFor: certsReady},
		}
		if err := mgr.Add(api); err != nil {
			return nil, err
		}
	}
	op := &Operator{Manager: mgr, Keyring: ring, Opener: opener, Store: store, API: api, oauthAPI: oauthAPI}
	if err := setupPublic(ctx, mgr, o, direct, op, log); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", readyz(mgr, o, api, op.Public)); err != nil {
		return nil, err
	}
	return op, nil
}

// setupPublic adds the public listener and widget sessions: the signing keyset (made on
// first start, reloaded in every replica, rotated by the leader) and the tokens the
// backend API issues and the widget API verifies.
func setupPublic(ctx context.Context, mgr ctrl.Manager, o Options, direct client.Client, op *Operator, log logr.Logger) error {
	if o.PublicAddr == "" {
		return nil
	}
	if op.API == nil {
		return errors.New("the public listener (widget) needs the backend API, which issues widget tokens: set --api-bind-address")
	}
	ttl := o.WidgetTokenTTL
	if ttl <= 0 {
		ttl = widgettoken.DefaultTTL
	}
	rotation := o.WidgetKeyRotation
	if rotation <= 0 {
		rotation = max(controllers.DefaultWidgetKeyRotation, 2*ttl)
	}
	switch {
	case ttl > widgettoken.MaxTTL:
		return fmt.Errorf("--widget-token-ttl %s is longer than the %s a widget session may last", ttl, widgettoken.MaxTTL)
	case rotation < 2*ttl:
		return fmt.Errorf("--widget-key-rotation %s must be at least twice --widget-token-ttl (%s): a retired key is dropped one rotation later, so it must outlive every token it signed", rotation, ttl)
	}
	origins, err := public.ParseOrigins(o.WidgetAllowedOrigins)
	if err != nil {
		return err
	}
	key := types.NamespacedName{Namespace: o.Namespace, Name: pipesv1.WidgetKeysetSecret}
	ks, err := keyring.WidgetSigning.Ensure(ctx, direct, key, log.WithName("keyring"))
	if err != nil {
		return err
	}
	tokens := widgettoken.New(ks, ttl)
	reader := mgr.GetAPIReader()
	tokens.Reload = func(ctx context.Context) (*widgettoken.Keyset, error) {
		var s corev1.Secret
		if err := reader.Get(ctx, key, &s); err != nil {
			return nil, err
		}
		return keyring.WidgetSigning.FromSecret(&s)
	}
	if err := (&controllers.WidgetKeysetReconciler{Secret: key, Tokens: tokens, Client: direct, RotationPeriod: rotation}).SetupWithManager(mgr); err != nil {
		return err
	}
	assets, err := widget.Load()
	if err != nil {
		return err
	}
	op.API.Widgets = tokens
	op.Widgets = tokens
	op.Public = &public.Server{
		Options:   public.Options{Addr: o.PublicAddr, CertDir: o.PublicCertDir, AllowedOrigins: origins},
		WidgetAPI: op.API.WidgetHandler(), OAuthCallback: op.API.OAuthCallbackHandler(), Assets: assets, Log: log.WithName("public"),
	}
	if err := mgr.Add(op.Public); err != nil {
		return err
	}
	return setupOAuth(mgr, o, direct, op)
}

// setupOAuth runs OAuth providers' flows: authorizations in progress kept in Secrets of
// the operator's namespace (expired ones swept by the leader), the callback on the public
// listener, and tokens refreshed once across replicas.
func setupOAuth(mgr ctrl.Manager, o Options, direct client.Client, op *Operator) error {
	publicURL := strings.TrimSuffix(o.PublicURL, "/")
	if u, err := url.Parse(publicURL); err != nil || (publicURL != "" && (u.Scheme != "https" && u.Scheme != "http" || u.Host == "")) {
		return fmt.Errorf("--public-url %q: write it as https://host[:port][/prefix], the public listener's URL as browsers reach it", o.PublicURL)
	}
	callback := func() string {
		if publicURL == "" {
			return "http://" + op.Public.Addr() + wire.OAuthCallbackPath // make run and tests: the listener itself
		}
		return publicURL + wire.OAuthCallbackPath
	}
	providers, err := oauth.NewHTTPClient(o.ProviderCAFile)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	states := &oauth.States{Client: direct, Reader: mgr.GetAPIReader(), Namespace: o.Namespace, AEAD: func() tink.AEAD { return op.Keyring.Keyset().AEAD() }}
	refresher := &oauth.Refresher{Store: op.Store, Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Replica: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.String(5))}
	op.API.OAuth = &backendapi.OAuthFlow{States: states, Refresher: refresher, CallbackURL: callback, HTTP: providers}
	op.Refresher = refresher
	op.oauthAPI.Store(op.API)
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		log := mgr.GetLogger().WithName("oauth-states")
		wait.UntilWithContext(ctx, func(ctx context.Context) {
			if n, err := states.Sweep(ctx); err != nil {
				log.Error(err, "removing expired OAuth authorizations")
			} else if n > 0 {
				log.Info("removed expired OAuth authorizations", "count", n)
			}
		}, time.Minute)
		return nil
	}))
}

func setupWebhooks(mgr ctrl.Manager, o Options, certsReady chan struct{}) error {
	if o.DisableWebhooks {
		return nil
	}
	var injector *pipeswebhook.PodInjector
	if o.VendImage != "" {
		ca := o.VendCA
		if ca == nil {
			caFile := filepath.Join(orDefault(o.APICertDir, o.WebhookCertDir), "ca.crt")
			ca = func() ([]byte, error) { return os.ReadFile(caFile) }
		}
		injector = &pipeswebhook.PodInjector{Image: o.VendImage, APIURL: o.VendAPIURL, CA: ca, SkipNamespaces: []string{o.Namespace, "kube-system"},
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}
		bundles := &controllers.CABundleReconciler{Client: mgr.GetClient(), CA: ca}
		if o.CertRotation != nil && o.VendCA == nil {
			bundles.CASecret = &types.NamespacedName{Namespace: o.Namespace, Name: o.CertRotation.SecretName}
		}
		if err := bundles.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	if o.CertRotation == nil {
		return pipeswebhook.Setup(mgr, injector)
	}
	ready := certsReady
	dnsNames := []string{fmt.Sprintf("%s.%s.svc.cluster.local", o.CertRotation.ServiceName, o.Namespace)}
	for _, svc := range o.CertRotation.ExtraServiceNames {
		dnsNames = append(dnsNames, fmt.Sprintf("%s.%s.svc", svc, o.Namespace), fmt.Sprintf("%s.%s.svc.cluster.local", svc, o.Namespace))
	}
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: o.Namespace, Name: o.CertRotation.SecretName},
		CertDir:        o.WebhookCertDir,
		CAName:         "pipes-operator-ca",
		CAOrganization: "pipes.dev",
		DNSName:        fmt.Sprintf("%s.%s.svc", o.CertRotation.ServiceName, o.Namespace),
		ExtraDNSNames:  dnsNames,
		IsReady:        ready,
		Webhooks: []rotator.WebhookInfo{
			{Name: o.CertRotation.WebhookConfigName, Type: rotator.Validating},
			{Name: o.CertRotation.MutatingConfigName, Type: rotator.Mutating},
		},
		ExtKeyUsages: &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Every replica serves webhooks, so every replica must see the certificate.
		RequireLeaderElection: false,
		ControllerName:        rotatorControllerName(o),
	})
	if err != nil {
		return err
	}
	// The manager writes the certificate into its cert dir itself, rather than waiting
	// for the kubelet to project the Secret (see package certsync).
	if err := certsync.Add(mgr, types.NamespacedName{Namespace: o.Namespace, Name: o.CertRotation.SecretName}, o.WebhookCertDir); err != nil {
		return err
	}
	// Handlers are registered once the certificate exists; until then readyz fails.
	errs := make(chan error, 1)
	go func() {
		<-ready
		errs <- pipeswebhook.Setup(mgr, injector)
	}()
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		select {
		case err := <-errs:
			return err
		case <-ctx.Done():
			return nil
		}
	}))
}

// readyz: ready once the webhook server and the backend API (when served) listen, so a
// replica takes backend API traffic only once it can answer it. The API starts after
// the caches have synced (it never vends from an empty cache).
func readyz(mgr ctrl.Manager, o Options, api *backendapi.Server, pub *public.Server) healthz.Checker {
	webhooks := healthz.Ping
	if !o.DisableWebhooks {
		webhooks = mgr.GetWebhookServer().StartedChecker()
	}
	return func(req *http.Request) error {
		if err := webhooks(req); err != nil {
			return err
		}
		if api != nil && api.Addr() == "" {
			return errors.New("the backend API is not serving yet (it starts once the caches have synced)")
		}
		if pub != nil && pub.Addr() == "" {
			return errors.New("the public listener (widget) is not serving yet")
		}
		return nil
	}
}

var rotators atomic.Int64

// rotatorControllerName names cert-controller's controller. It is created outside the
// manager, so SkipNameValidation does not reach it: with several managers in one process
// (tests), each needs a name of its own.
func rotatorControllerName(o Options) string {
	if !o.SkipNameValidation {
		return "cert-rotator"
	}
	return fmt.Sprintf("cert-rotator-%d", rotators.Add(1))
}

// registerMetrics adds the operator's own metrics to controller-runtime's registry,
// which the manager serves on --metrics-bind-address beside controller-runtime's.
func registerMetrics(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := metrics.Registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) { // a second manager in one process (tests)
				return err
			}
		}
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func ctrlConfig(o Options) config.Controller {
	skip := o.SkipNameValidation
	return config.Controller{SkipNameValidation: &skip}
}

// delayedWebhookServer starts the webhook server once cert-controller has written the
// certificate and it is mounted.
type delayedWebhookServer struct {
	webhook.Server
	ready <-chan struct{}
}

func (d delayedWebhookServer) Start(ctx context.Context) error {
	select {
	case <-d.ready:
	case <-ctx.Done():
		return nil
	}
	return d.Server.Start(ctx)
}
