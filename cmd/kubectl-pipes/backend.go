package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/utils/ptr"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// backendFlags say how to reach and authenticate to the backend API.
type backendFlags struct {
	url, caFile, serviceAccount string
	service, webhookConfig      string
	podSelector                 string
}

func (b *backendFlags) add(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&b.url, "api-url", "", "backend API URL (e.g. https://pipes-api.pipes-system.svc in the cluster); default: port-forward to a ready manager pod through the API server")
	f.StringVar(&b.caFile, "api-ca", "", "PEM CA bundle the backend API's certificate chains to; default: ConfigMap pipes-api-ca, else the webhook configuration's caBundle")
	f.StringVar(&b.serviceAccount, "as-serviceaccount", "", "NAMESPACE/NAME: call the API as this ServiceAccount with a 10-minute token minted for audience pipes.dev (needs create on serviceaccounts/token); default: the kubeconfig's bearer token")
	f.StringVar(&b.service, "api-service", "pipes-api", "the backend API's Service in --operator-namespace (the name its certificate holds)")
	f.StringVar(&b.webhookConfig, "webhook-config", "pipes-validating-webhook-configuration", "ValidatingWebhookConfiguration whose caBundle is the API's CA when no ConfigMap pipes-api-ca exists")
	f.StringVar(&b.podSelector, "manager-selector", "control-plane=controller-manager", "label selector of the manager pods to port-forward to")
}

// backend is a client of the backend API acting in namespace ns; stop ends the
// port-forward, if any.
func (a *app) backend(ctx context.Context, b *backendFlags, ns string) (api *apiclient.Client, stop func(), err error) {
	cfg, err := a.restConfig()
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	token, err := a.bearerToken(ctx, cs, cfg, b)
	if err != nil {
		return nil, nil, err
	}
	ca, err := a.apiCA(ctx, cs, b, ns)
	if err != nil {
		return nil, nil, err
	}
	stop = func() {}
	base, serverName := b.url, ""
	if base == "" {
		local, end, err := a.portForward(ctx, cs, cfg, b)
		if err != nil {
			return nil, nil, err
		}
		stop = end
		base = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(local)))
		// The certificate names the Service, not the loopback address the tunnel listens on.
		serverName = fmt.Sprintf("%s.%s.svc", b.service, a.operatorNamespace)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		stop()
		return nil, nil, errors.New("the backend API's CA bundle holds no PEM certificate: pass a valid one with --api-ca")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
	h := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return apiclient.New(base, apiclient.WithHTTPClient(h), apiclient.WithToken(token), apiclient.WithNamespace(ns)), stop, nil
}

// bearerToken is a token for audience pipes.dev minted for --as-serviceaccount, or the
// kubeconfig's own bearer token.
func (a *app) bearerToken(ctx context.Context, cs kubernetes.Interface, cfg *rest.Config, b *backendFlags) (string, error) {
	if b.serviceAccount != "" {
		ns, name, ok := strings.Cut(b.serviceAccount, "/")
		if !ok || ns == "" || name == "" {
			return "", fmt.Errorf("--as-serviceaccount %q: want NAMESPACE/NAME", b.serviceAccount)
		}
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			Audiences: []string{wire.Audience}, ExpirationSeconds: ptr.To[int64](600),
		}}, metav1.CreateOptions{})
		switch {
		case apierrors.IsForbidden(err):
			return "", fmt.Errorf("minting a token for ServiceAccount %s/%s: you need create on serviceaccounts/token in namespace %s (kubectl auth can-i create serviceaccounts --subresource=token -n %s)", ns, name, ns, ns)
		case apierrors.IsNotFound(err):
			return "", fmt.Errorf("ServiceAccount %s/%s not found: create it and bind it to ClusterRole pipes-backend in the accounts' namespace", ns, name)
		case err != nil:
			return "", fmt.Errorf("minting a token for ServiceAccount %s/%s: %w", ns, name, err)
		}
		return tr.Status.Token, nil
	}
	if cfg.BearerToken != "" {
		return cfg.BearerToken, nil
	}
	if cfg.BearerTokenFile != "" {
		raw, err := os.ReadFile(cfg.BearerTokenFile)
		if err != nil {
			return "", fmt.Errorf("reading the kubeconfig's token file: %w", err)
		}
		return strings.TrimSpace(string(raw)), nil
	}
	return "", errors.New("the kubeconfig has no bearer token, and the backend API accepts only tokens: pass --as-serviceaccount NAMESPACE/NAME (a ServiceAccount bound to ClusterRole pipes-backend; you need create on its serviceaccounts/token)")
}

// apiCA is --api-ca, else ConfigMap pipes-api-ca in ns or the operator's namespace, else
// the caBundle cert-controller writes into the webhook configuration (the same CA).
func (a *app) apiCA(ctx context.Context, cs kubernetes.Interface, b *backendFlags, ns string) ([]byte, error) {
	if b.caFile != "" {
		ca, err := os.ReadFile(b.caFile)
		if err != nil {
			return nil, fmt.Errorf("--api-ca: %w", err)
		}
		return ca, nil
	}
	for _, n := range []string{ns, a.operatorNamespace} {
		cm, err := cs.CoreV1().ConfigMaps(n).Get(ctx, pipesv1.CABundleConfigMap, metav1.GetOptions{})
		if err == nil && cm.Data[pipesv1.CABundleKey] != "" {
			return []byte(cm.Data[pipesv1.CABundleKey]), nil
		}
	}
	vwc, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, b.webhookConfig, metav1.GetOptions{})
	if err == nil {
		if ca := webhookCA(vwc); len(ca) > 0 {
			return ca, nil
		}
	}
	return nil, fmt.Errorf("no CA bundle for the backend API: no ConfigMap %s in %s or %s, and no caBundle readable in ValidatingWebhookConfiguration %s; pass --api-ca FILE",
		pipesv1.CABundleConfigMap, ns, a.operatorNamespace, b.webhookConfig)
}

func webhookCA(vwc *admissionv1.ValidatingWebhookConfiguration) []byte {
	for _, w := range vwc.Webhooks {
		if len(w.ClientConfig.CABundle) > 0 {
			return w.ClientConfig.CABundle
		}
	}
	return nil
}

// portForward opens a tunnel through the API server to the API port of a ready manager
// pod and returns its local port.
func (a *app) portForward(ctx context.Context, cs kubernetes.Interface, cfg *rest.Config, b *backendFlags) (uint16, func(), error) {
	pods, err := cs.CoreV1().Pods(a.operatorNamespace).List(ctx, metav1.ListOptions{LabelSelector: b.podSelector})
	if err != nil {
		return 0, nil, fmt.Errorf("finding a manager pod to reach the backend API (or pass --api-url): %w", err)
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			pod = &pods.Items[i]
			break
		}
	}
	if pod == nil {
		return 0, nil, fmt.Errorf("no ready manager pod (%s) in namespace %s to reach the backend API through: check kubectl pipes doctor, or pass --api-url", b.podSelector, a.operatorNamespace)
	}
	port := "8443"
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "api" {
				port = strconv.Itoa(int(p.ContainerPort))
			}
		}
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return 0, nil, err
	}
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stopCh, readyCh := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + port}, stopCh, readyCh, io.Discard, io.Discard)
	if err != nil {
		return 0, nil, err
	}
	failed := make(chan error, 1)
	go func() { failed <- pf.ForwardPorts() }()
	stop := func() { close(stopCh) }
	select {
	case <-readyCh:
	case err := <-failed:
		return 0, nil, fmt.Errorf("port-forwarding to pod %s/%s (you need create on pods/portforward there, or pass --api-url): %w", pod.Namespace, pod.Name, err)
	case <-time.After(30 * time.Second):
		stop()
		return 0, nil, fmt.Errorf("port-forwarding to pod %s/%s did not start within 30s; pass --api-url", pod.Namespace, pod.Name)
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		stop()
		return 0, nil, fmt.Errorf("port-forwarding to pod %s/%s: no local port", pod.Namespace, pod.Name)
	}
	return ports[0].Local, stop, nil
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// apiError adds what to do to an error of the backend API.
func apiError(err error, b *backendFlags) error {
	var e *apiclient.Error
	if errors.As(err, &e) && e.Status == http.StatusUnauthorized && b.serviceAccount == "" {
		return fmt.Errorf("%w (with the kubeconfig's token; try --as-serviceaccount NAMESPACE/NAME)", err)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("calling the backend API: %w", uerr.Err)
	}
	return err
}
