// Command manager runs pipes-operator: reconcilers, admission webhooks and (soon) the
// backend API. Subcommands:
//
//	manager [flags]                            run against the cluster in KUBECONFIG / in-cluster config
//	manager dev [flags]                        run on an embedded control plane (what `make run` does)
//	manager keyset status|rotate|prune|backup  manage the key-encryption keyset (--sealing: the sealing keyset)
//	manager backup export|import               move stored credentials (encrypted) to a new cluster
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/pipes-dev/pipes-operator/controllers"
	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/logsafe"
	"github.com/pipes-dev/pipes-operator/internal/memlimit"
	"github.com/pipes-dev/pipes-operator/internal/operator"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
)

func main() {
	args := os.Args[1:]
	var err error
	switch {
	case len(args) > 0 && args[0] == "dev":
		err = runDev(args[1:])
	case len(args) > 0 && args[0] == "keyset":
		err = runKeyset(args[1:])
	case len(args) > 0 && args[0] == "backup":
		err = runBackup(args[1:])
	default:
		err = runManager(args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// managerFlags binds the flags shared by `manager` and `manager dev`.
func managerFlags(fs *flag.FlagSet, o *operator.Options, zo *zap.Options) {
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the operator's namespace, holding the keyset and webhook certificate Secrets (env POD_NAMESPACE)")
	fs.StringVar(&o.KeysetSecret, "keyset-secret", "pipes-keyset", "Secret holding the key-encryption keyset; created with a fresh keyset on first start")
	fs.StringVar(&o.SealingKeysetSecret, "sealing-keyset-secret", "pipes-sealing-keyset", "Secret holding the sealing keyset (spec.apiKey.sealed); created on first start, its public half published in the ConfigMap pipes-sealing-public-keyset")
	fs.StringVar(&o.KeysetFile, "keyset-file", "", "load the keyset from this file instead of --keyset-secret (rotation then needs a restart)")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "metrics endpoint address; 0 disables it")
	fs.IntVar(&o.AccountWorkers, "account-workers", controllers.DefaultAccountWorkers, "ConnectedAccounts reconciled at once; each mostly waits on the API server, so more than the cores")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", "", "serve Go's pprof profiles at this address (e.g. 127.0.0.1:6060); empty disables them")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "health and readiness probe address")
	fs.BoolVar(&o.LeaderElection, "leader-elect", false, "use leader election so only one replica reconciles at a time")
	fs.BoolVar(&o.DisableWebhooks, "disable-webhooks", false, "serve no admission webhooks (CEL validation still applies)")
	fs.IntVar(&o.WebhookPort, "webhook-port", 9443, "admission webhook port")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory of the webhook serving certificate (tls.crt, tls.key); with --cert-rotation the manager writes it, so it must be writable (an emptyDir)")
	fs.StringVar(&o.APIAddr, "api-bind-address", ":8443", "backend API address (HTTPS); empty disables it")
	fs.StringVar(&o.APICertDir, "api-cert-dir", "", "directory of the backend API's certificate (tls.crt, tls.key); default: --webhook-cert-dir")
	fs.Float64Var(&o.APIRateLimit, "api-rate-limit", 50, "backend API requests per second allowed per caller (burst: twice that)")
	fs.BoolVar(&o.APIRequireAudience, "api-require-audience", true, "backend API accepts only tokens for audience pipes.dev (kubectl create token SA --audience pipes.dev, or a projected token), not pods' automounted tokens; false also accepts tokens for the API server's audiences")
	fs.DurationVar(&o.APIReviewTimeout, "api-review-timeout", backendapi.DefaultReviewTimeout, "longest wait for each TokenReview and SubjectAccessReview the backend API makes; past it the caller gets 503 with Retry-After")
	fs.StringVar(&o.PublicAddr, "public-bind-address", ":8082", "public listener address, for browsers through an Ingress: the widget's script and API (docs/widget.md); empty disables the widget and widget tokens")
	fs.StringVar(&o.PublicCertDir, "public-cert-dir", "", "directory of the public listener's certificate (tls.crt, tls.key); empty serves plain HTTP for an Ingress or Gateway that terminates TLS")
	fs.StringVar(&o.PublicURL, "public-url", "", "the public listener's URL as browsers reach it (https://widget.example.com): OAuth providers send users back to this URL + /oauth/callback; empty: http://<public-bind-address>")
	fs.StringVar(&o.ProviderCAFile, "provider-ca-file", "", "PEM file of CAs trusted for OAuth providers' endpoints besides the system's (a provider behind a private CA); read at start")
	fs.Func("widget-allowed-origins", "comma-separated origins (scheme://host[:port]) whose pages may call the widget API; none by default", func(v string) error {
		o.WidgetAllowedOrigins = append(o.WidgetAllowedOrigins, strings.Split(v, ",")...)
		return nil
	})
	fs.DurationVar(&o.WidgetTokenTTL, "widget-token-ttl", widgettoken.DefaultTTL, "lifetime of the widget tokens POST /widgets/token issues (at most 12h)")
	fs.DurationVar(&o.WidgetKeyRotation, "widget-key-rotation", controllers.DefaultWidgetKeyRotation, "how often the leader rotates the widget token signing key (at least twice --widget-token-ttl)")
	fs.StringVar(&o.VendImage, "vend-image", "pipes-operator/vend:dev", "vend sidecar image for pods labelled pipes.dev/inject; empty disables injection")
	fs.StringVar(&o.VendAPIURL, "vend-api-url", "", "backend API URL as injected sidecars reach it (default https://pipes-api.NAMESPACE.svc)")
	zo.BindFlags(fs)
}

func runManager(args []string) error {
	var o operator.Options
	zo := zap.Options{TimeEncoder: zapcore.ISO8601TimeEncoder}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	managerFlags(fs, &o, &zo)
	certRotation := fs.Bool("cert-rotation", true, "generate and rotate the webhook certificate with cert-controller (disable when cert-manager provides it)")
	certSecret := fs.String("cert-secret", "pipes-webhook-cert", "Secret for the generated webhook certificate")
	webhookService := fs.String("webhook-service", "pipes-webhook-service", "Service in front of the webhook server")
	apiService := fs.String("api-service", "pipes-api", "Service in front of the backend API (added to the generated certificate)")
	mutatingConfig := fs.String("mutating-webhook-config", "pipes-mutating-webhook-configuration", "MutatingWebhookConfiguration (pod injection) whose CA bundle cert-controller keeps current")
	webhookConfig := fs.String("webhook-config", "pipes-validating-webhook-configuration", "ValidatingWebhookConfiguration whose CA bundle cert-controller keeps current")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *certRotation {
		o.CertRotation = &operator.CertRotation{SecretName: *certSecret, ServiceName: *webhookService,
			WebhookConfigName: *webhookConfig, MutatingConfigName: *mutatingConfig, ExtraServiceNames: []string{*apiService}}
	}
	if o.VendAPIURL == "" {
		o.VendAPIURL = fmt.Sprintf("https://%s.%s.svc", *apiService, o.Namespace)
	}
	log := logsafe.Cap(zap.New(zap.UseFlagOptions(&zo)))
	ctrl.SetLogger(log)
	// The manager's live heap is mostly its caches (about 10 KiB per account): collecting
	// at 50% growth instead of Go's 100% keeps resident memory near it.
	if limit := memlimit.Apply(50); limit > 0 {
		log.Info("Go memory limit set from the container's", "bytes", limit)
	}
	ctx := ctrl.SetupSignalHandler()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	return operator.Run(ctx, cfg, o, log)
}
