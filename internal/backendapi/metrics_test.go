package backendapi_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// requests is pipes_api_requests_total{action, result} in the manager's registry.
func requests(action, result string) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != "pipes_api_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["action"] == action && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

var _ = Describe("Backend API metrics", func() {
	It("counts vends by their outcome in the manager's registry, naming no user, account or key", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		backend := api(serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns), "")
		key := "sk-metrics-" + strings.Repeat("m", 30) + "MMMM"
		notInstalled, ok, upserts := requests("vend", "not_installed"), requests("vend", "ok"), requests("upsert_api_key", "ok")

		_, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_metrics_private"})
		Expect(err).NotTo(HaveOccurred())
		_, err = backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "user_metrics_private", Secret: key})
		Expect(err).NotTo(HaveOccurred())
		resp, err := backend.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "user_metrics_private"})
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Active).To(BeTrue())

		Expect(requests("vend", "not_installed") - notInstalled).To(BeEquivalentTo(1))
		Expect(requests("vend", "ok") - ok).To(BeEquivalentTo(1))
		Expect(requests("upsert_api_key", "ok") - upserts).To(BeEquivalentTo(1))

		families, err := metrics.Registry.Gather()
		Expect(err).NotTo(HaveOccurred())
		for _, f := range families {
			text := f.String()
			for _, private := range []string{"user_metrics_private", key, ns} {
				Expect(text).NotTo(ContainSubstring(private), "metric %s carries %q", f.GetName(), private)
			}
		}
	})

	It("tells the sidecar's watch when each credential was stored, to the sub-second, and nothing else does", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(env.Client.Create(ctx, apiKeyProvider(ns, "openai"))).To(Succeed())
		tok := serviceAccountToken(ctx, ns, "backend", "pipes-backend", ns)
		backend := api(tok, "")
		before := time.Now()
		_, err := backend.UpsertAPIKey(ctx, "openai", wire.UpsertAPIKeyRequest{UserID: "u", Secret: "sk-watch-" + strings.Repeat("w", 30)})
		Expect(err).NotTo(HaveOccurred())

		resp, err := backend.Watch(ctx, wire.WatchRequest{Credentials: []wire.CredentialRef{{Provider: "openai", UserID: "u"}, {Provider: "openai", UserID: "nobody"}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Credentials).To(HaveLen(2))
		rotatedAt := resp.Credentials[0].RotatedAt
		Expect(rotatedAt).To(BeTemporally("~", before, 5*time.Second))
		Expect(resp.Credentials[1].RotatedAt.IsZero()).To(BeTrue(), "no time for a credential that is not installed")

		var accounts pipesv1.ConnectedAccountList
		Expect(env.Client.List(ctx, &accounts, client.InNamespace(ns))).To(Succeed())
		Expect(accounts.Items).To(HaveLen(1))
		var secret corev1.Secret
		Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: credential.SecretName(&accounts.Items[0])}, &secret)).To(Succeed())
		annotation := secret.Annotations[pipesv1.AnnotationRotatedAt]
		Expect(annotation).To(MatchRegexp(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$`), "RFC 3339 with sub-second precision")
		Expect(rotatedAt.Format(time.RFC3339Nano)).To(Equal(annotation))

		code, body := raw("POST", "/namespaces/"+ns+"/data-integrations/openai/credentials", tok, `{"user_id":"u"}`)
		Expect(code).To(Equal(200))
		Expect(body).NotTo(ContainSubstring("rotated_at"), "the hosted shape of /credentials is unchanged")
	})
})
