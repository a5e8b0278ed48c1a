package scale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/oauthtest"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	// oauthProvider is the OAuth Provider of the OAuth refresh phase.
	oauthProvider = "oauth-scale"
	oauthScope    = "read"
)

func oauthUserID(i int) string { return fmt.Sprintf("o%06d", i) }

// oauthRefresh: N OAuth accounts whose tokens the provider issued in the same instant,
// all with the same short lifetime and rotating refresh tokens, are imported through the
// backend API; then nothing is done until the leader has refreshed every one ahead of
// expiry. The provider is internal/oauthtest (go-oauth2) in this process: it counts the
// token requests, when each arrived, and refresh tokens spent twice.
func (h *harness) oauthRefresh(ctx context.Context, t *testing.T, lifetime time.Duration) OAuthRefresh {
	phaseStart := time.Now()
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "scale-app", ClientSecret: "scale-" + h.salt,
		RedirectURL: "http://" + h.ports.public + wire.OAuthCallbackPath, AccessTokenTTL: lifetime,
		RotateRefreshTokens: true, AllowedScopes: []string{oauthScope}})
	must(t, h.env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "oauth-client",
			Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}},
		Data: map[string][]byte{"secret": []byte("scale-" + h.salt)},
	}))
	must(t, h.env.Client.Create(ctx, &pipesv1.Provider{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: oauthProvider},
		Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, Description: "scale benchmark, OAuth", OAuth: &pipesv1.OAuthSpec{
			AuthorizationURL: srv.AuthURL(), TokenURL: srv.TokenURL(), ClientID: "scale-app", Scopes: []string{oauthScope},
			ClientSecretRef: &pipesv1.SecretKeyReference{Name: "oauth-client", Key: "secret"}}},
	}))
	tok, err := h.env.ServiceAccountToken(ctx, namespace, "oauth-importer", "pipes-backend", namespace, "pipes.dev")
	must(t, err)
	c := h.apiClient(t, tok, 30*time.Second)

	isOAuth := func(ca *pipesv1.ConnectedAccount) bool { return ca.Spec.ProviderRef.Name == oauthProvider }
	imported := h.watchAccounts(ctx, h.n, func(ca *pipesv1.ConnectedAccount) bool { return isOAuth(ca) && connected(ca) })
	refreshed := h.watchAccounts(ctx, h.n, func(ca *pipesv1.ConnectedAccount) bool {
		return isOAuth(ca) && ca.Status.CredentialVersion >= 2 && connected(ca)
	})

	// Issued together: every access token expires lifetime after this instant.
	issuedAt := time.Now()
	issued, err := srv.Issue(h.n, oauthScope)
	must(t, err)
	importOne := func(i int) error {
		expiry := issued[i].Expiry
		_, err := c.ImportConnectedAccount(ctx, oauthUserID(i), oauthProvider, wire.ImportConnectedAccountRequest{
			AccessToken: issued[i].AccessToken, RefreshToken: issued[i].RefreshToken, ExpiresAt: &expiry, Scopes: []string{oauthScope}})
		return err
	}
	// The first waits for the manager's cache to hold the Provider.
	for err := importOne(0); err != nil; err = importOne(0) {
		var apiErr *apiclient.Error
		if !errors.As(err, &apiErr) || apiErr.Status != 404 || time.Since(issuedAt) > 30*time.Second {
			t.Fatalf("importing the first OAuth account: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	must(t, parallel(h.n-1, workers, func(i int) error { return importOne(i + 1) }))
	importDone := time.Since(issuedAt)
	imported.wait(ctx, t, h.timeout(), "OAuth accounts imported and connected")
	connectedIn := imported.last().Sub(issuedAt)

	// Nothing more is done: the leader refreshes each token a quarter of its lifetime
	// before expiry, less its jitter.
	before, cpuBefore, requestsBefore := h.apiWrites(ctx), h.cpuSeconds(), h.apiRequests(ctx)
	profiled := make(chan struct{})
	go func() {
		defer close(profiled)
		for srv.Stats().TokenRequests == 0 {
			select {
			case <-ctx.Done():
				return
			case <-refreshed.all:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		<-h.cpuProfile(ctx, "manager-cpu-oauth-refresh.pprof", h.phaseSeconds())
	}()
	refreshed.wait(ctx, t, lifetime+h.timeout(), "OAuth tokens refreshed ahead of expiry")
	done := refreshed.last()
	writes, cpu := h.apiWrites(ctx).sub(before), cpuDelta(h.cpuSeconds(), cpuBefore)
	requests := perAccount(h.apiRequests(ctx), requestsBefore, h.n)
	stats := srv.Stats()

	r := OAuthRefresh{Accounts: h.n, TokenLifetimeSeconds: lifetime.Seconds(), ImportSeconds: importDone.Seconds(),
		ConnectedSeconds: connectedIn.Seconds(), DoubleSpends: stats.DoubleSpends, FailedTokenRequests: stats.TokenRequests - stats.Refreshes,
		WritesPerAccount: writesPer(writes, h.n), CPUSeconds: cpu, RequestsPerAccount: requests}
	// The token endpoint's load up to the moment every account showed its new token.
	var times []time.Time
	for _, at := range srv.TokenRequestTimes() {
		if !at.After(done) {
			times = append(times, at)
		}
	}
	if len(times) == 0 {
		t.Fatalf("every OAuth account shows a new credential version, but the provider saw no token request")
	}
	first, last := times[0], times[len(times)-1]
	r.TokenRequests = len(times)
	r.FirstRequestAfterIssueSeconds = first.Sub(issuedAt).Seconds()
	r.WindowSeconds = last.Sub(first).Seconds()
	r.PeakPerSecond, r.PerSecond = peakRate(times)
	r.MeanPerSecond = float64(len(times)) / max(r.WindowSeconds, 1)
	r.RefreshSeconds = done.Sub(first).Seconds()
	r.RefreshesPerSecond = float64(h.n) / max(r.RefreshSeconds, 0.001)

	// Each account's issued refresh token was spent at the provider once, by the rotation
	// that replaced it: before or after its access token expired.
	r.MinMarginSeconds = lifetime.Seconds()
	for i, tok := range issued {
		at, ok := srv.RefreshedAt(tok.RefreshToken)
		if !ok {
			t.Fatalf("account %s shows a new credential version, but the provider never rotated its refresh token", oauthUserID(i))
		}
		margin := tok.Expiry.Sub(at)
		if margin > 0 {
			r.RefreshedBeforeExpiry++
		}
		r.MinMarginSeconds = min(r.MinMarginSeconds, margin.Seconds())
	}

	var list pipesv1.ConnectedAccountList
	must(t, h.env.Client.List(ctx, &list, client.InNamespace(namespace)))
	for _, ca := range list.Items {
		if isOAuth(&ca) && ca.Status.State == pipesv1.StateNeedsReauthorization {
			r.NeedsReauthorization++
		}
	}
	<-profiled
	h.checkOAuthVends(ctx, t, c, srv, issued, min(h.n, 200))
	// No token, original or refreshed, in the manager's log (a sample: the log is large).
	raw, err := os.ReadFile(h.logPath)
	must(t, err)
	for _, tok := range issued[:min(h.n, 20)] {
		if bytes.Contains(raw, []byte(tok.AccessToken)) || bytes.Contains(raw, []byte(tok.RefreshToken)) {
			t.Errorf("the manager's log contains an OAuth token of %d issued", h.n)
			break
		}
	}
	if r.DoubleSpends != 0 || r.NeedsReauthorization != 0 {
		t.Errorf("OAuth refresh: %d refresh tokens spent twice and %d accounts in needs_reauthorization; want none", r.DoubleSpends, r.NeedsReauthorization)
	}
	r.Seconds = time.Since(phaseStart).Seconds()
	return r
}

// checkOAuthVends vends the first n OAuth accounts' tokens: each must be a refreshed one
// the provider knows, expiring after the issued token did.
func (h *harness) checkOAuthVends(ctx context.Context, t *testing.T, c *apiclient.Client, srv *oauthtest.Server, issued []oauthtest.Issued, n int) {
	for i := range n {
		resp, err := c.Token(ctx, oauthProvider, wire.CredentialsRequest{UserID: oauthUserID(i)})
		if err != nil {
			t.Fatalf("vending %s: %v", oauthUserID(i), err)
		}
		cred := resp.Credential
		switch {
		case !resp.Active || cred == nil:
			t.Fatalf("vending %s: not active (%s)", oauthUserID(i), resp.Error)
		case cred.Value == issued[i].AccessToken || cred.Version < 2:
			t.Fatalf("vending %s: the issued token (version %d), not a refreshed one", oauthUserID(i), cred.Version)
		case !srv.ValidAccessToken(cred.Value):
			t.Fatalf("vending %s: an access token the provider does not know", oauthUserID(i))
		case cred.ExpiresAt == nil || !cred.ExpiresAt.After(issued[i].Expiry):
			t.Fatalf("vending %s: expires at %v, not after the issued token (%s)", oauthUserID(i), cred.ExpiresAt, issued[i].Expiry)
		case !slices.Equal(cred.Scopes, []string{oauthScope}) || len(cred.MissingScopes) != 0:
			t.Fatalf("vending %s: scopes %v, missing %v", oauthUserID(i), cred.Scopes, cred.MissingScopes)
		}
	}
}

// peakRate is the most of times (sorted) within any one second, and how many fell in
// each whole second from the first.
func peakRate(times []time.Time) (int, []int) {
	peak, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) >= time.Second {
			j++
		}
		peak = max(peak, i-j+1)
	}
	perSecond := make([]int, int(times[len(times)-1].Sub(times[0])/time.Second)+1)
	for _, at := range times {
		perSecond[at.Sub(times[0])/time.Second]++
	}
	return peak, perSecond
}
