// Package widget_test is the widget's real-browser suite: Debian's Chromium, driven from Go
// through the DevTools protocol (chromedp), against the operator running on the envtest
// control plane, with the widget embedded in a page of another origin under a strict
// Content-Security-Policy, as an application embeds it.
package widget_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/heapprofiler"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/oauthtest"
	"github.com/pipes-dev/pipes-operator/internal/testenv"
	"github.com/pipes-dev/pipes-operator/internal/widget"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// suite is what every test shares: one control plane and operator, one browser.
type suite struct {
	env     *testenv.Env
	ns      string
	backend *apiclient.Client
	// backendHTTP and backendToken call the backend API's routes apiclient has no method for.
	backendHTTP  *http.Client
	backendToken string
	browser      context.Context
	// host serves the demo pages on an allowed origin; other on an origin that is not allowed.
	host, other *httptest.Server
	// mint is what the demo pages' Mint calls: tests choose the user and token.
	mu    sync.Mutex
	mint  func(r *http.Request, admin bool) (string, error)
	shots string
	// oauth is the OAuth provider GitLab stands for.
	oauth *oauthtest.Server
}

// mainT is what oauthtest needs of a test, for TestMain.
type mainT struct{ cleanups []func() }

func (m *mainT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (m *mainT) Logf(string, ...any)               {}
func (m *mainT) Cleanup(f func())                  { m.cleanups = append(m.cleanups, f) }
func (m *mainT) run() {
	for _, f := range m.cleanups {
		f()
	}
}

var s *suite

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// The control plane and Chromium are what this suite is about: make test provides both.
		fmt.Println("widget browser suite skipped (-short): it starts the control plane and Chromium")
		os.Exit(0)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	chromium, err := exec.Command("../../hack/chromium.sh").Output()
	if err != nil {
		return 0, fmt.Errorf("no Chromium for the browser suite (hack/chromium.sh): %w", err)
	}
	s = &suite{}
	// Pages are served first: the operator must know their origin to allow it.
	s.host = httptest.NewUnstartedServer(nil)
	s.other = httptest.NewUnstartedServer(nil)
	s.host.Start()
	s.other.Start()
	defer s.host.Close()
	defer s.other.Close()
	s.env, err = testenv.Start(testenv.Options{Webhooks: true, API: true, Public: true, WidgetAllowedOrigins: []string{s.host.URL}})
	if err != nil {
		return 0, err
	}
	defer func() { _ = s.env.Stop() }()
	ctx := context.Background()
	s.ns = "widget-" + rand.String(5)
	if err := s.env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}); err != nil {
		return 0, err
	}
	var cleanups mainT
	defer cleanups.run()
	s.oauth = oauthtest.Start(&cleanups, oauthtest.Options{ClientID: "widget-client", ClientSecret: "widget-client-secret",
		RedirectURL: s.env.PublicURL() + wire.OAuthCallbackPath, RequirePKCE: true, RotateRefreshTokens: true})
	if err := s.env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "gitlab-client",
		Labels: map[string]string{pipesv1.LabelCredentialSource: pipesv1.CredentialSourceValue}},
		Data: map[string][]byte{"secret": []byte("widget-client-secret")}}); err != nil {
		return 0, err
	}
	for _, p := range []*pipesv1.Provider{
		{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "openai"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, DisplayName: "OpenAI",
			Description: "Used to draft replies with your own OpenAI account; billed to you."}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "stripe"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodAPIKey, DisplayName: "Stripe",
			Description: "Reads your invoices to build monthly reports."}},
		// Each organization brings its own GitHub client, and none has: not connectable.
		{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "github"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, DisplayName: "GitHub",
			Description: "Lists your repositories.", OAuth: &pipesv1.OAuthSpec{AuthorizationURL: "https://github.com/login/oauth/authorize",
				TokenURL: "https://github.com/login/oauth/access_token", CredentialsMode: pipesv1.OAuthCredentialsOrganization}}},
		// An OAuth provider users can connect: the in-process authorization server.
		{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "gitlab"}, Spec: pipesv1.ProviderSpec{Method: pipesv1.AuthMethodOAuth, DisplayName: "GitLab",
			Description: "Reads your merge requests.", OAuth: &pipesv1.OAuthSpec{AuthorizationURL: s.oauth.AuthURL(), TokenURL: s.oauth.TokenURL(),
				ClientID: "widget-client", ClientSecretRef: &pipesv1.SecretKeyReference{Name: "gitlab-client", Key: "secret"}, Scopes: []string{"read_api"}}}},
	} {
		if err := s.env.Client.Create(ctx, p); err != nil {
			return 0, err
		}
	}
	tok, err := s.env.ServiceAccountToken(ctx, s.ns, "backend", "pipes-backend", s.ns)
	if err != nil {
		return 0, err
	}
	h, err := apiclient.HTTPClientWithCAData(s.env.APICA(), 30*time.Second)
	if err != nil {
		return 0, err
	}
	s.backend = apiclient.New(s.env.APIURL(), apiclient.WithHTTPClient(h), apiclient.WithToken(tok))
	s.backendHTTP, s.backendToken = h, tok

	demo := &widget.Demo{
		ScriptURL: s.env.PublicURL() + s.env.Operator.Public.Assets.ScriptPath(),
		Mint: func(r *http.Request, admin bool) (string, error) {
			s.mu.Lock()
			mint := s.mint
			s.mu.Unlock()
			return mint(r, admin)
		},
	}
	s.host.Config.Handler = demo
	s.other.Config.Handler = demo

	s.shots = os.Getenv("WIDGET_SCREENSHOTS_DIR")
	if s.shots == "" {
		s.shots = filepath.Join("..", "..", "bin", "widget", "screenshots")
	}
	if err := os.MkdirAll(s.shots, 0o755); err != nil {
		return 0, err
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(strings.TrimSpace(string(chromium))),
		chromedp.NoSandbox, // as root in CI
		chromedp.WindowSize(900, 760),
		chromedp.Flag("lang", "en-US"),
	)...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil {
		return 0, fmt.Errorf("starting Chromium: %w", err)
	}
	s.browser = browser
	return m.Run(), nil
}

// issue mints a widget token through the backend API, as an application's backend does.
func issue(t *testing.T, user, org string, scopes ...string) string {
	t.Helper()
	tok, err := s.backend.WidgetToken(context.Background(), wire.WidgetTokenRequest{UserID: user, OrganizationID: org, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// serveTokens makes the demo pages embed user's widget (and admin's on /admin).
func serveTokens(user, admin string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mint = func(_ *http.Request, isAdmin bool) (string, error) {
		if isAdmin {
			return admin, nil
		}
		return user, nil
	}
}

// page is one browser tab with everything it logged.
type page struct {
	t   *testing.T
	ctx context.Context

	mu        sync.Mutex
	console   []string // console calls, exceptions and browser log entries (CSP reports among them)
	requests  map[network.RequestID]*network.Request
	order     []network.RequestID
	responses map[network.RequestID]*network.Response // the last one: after any redirects
	loaded    map[network.RequestID]error             // nil once the body is in, else why it is not
	// redirected are the requests that were redirected (and followed) at least once.
	redirected map[network.RequestID]bool
}

func newPage(t *testing.T) *page {
	t.Helper()
	return openPage(t, network.EnableParams{})
}

// openPage is newPage with the Network domain enabled with params.
func openPage(t *testing.T, params network.EnableParams) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(s.browser)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancel() })
	p := &page{t: t, ctx: ctx, requests: map[network.RequestID]*network.Request{},
		responses: map[network.RequestID]*network.Response{}, loaded: map[network.RequestID]error{},
		redirected: map[network.RequestID]bool{}}
	if err := chromedp.Listen(ctx, func(ev any) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			for _, a := range e.Args {
				p.console = append(p.console, fmt.Sprintf("console.%s %s %s", e.Type, a.Value, a.Description))
			}
		case *runtime.EventExceptionThrown:
			p.console = append(p.console, "exception "+e.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			p.console = append(p.console, fmt.Sprintf("log %s %s", e.Entry.Level, e.Entry.Text))
		case *network.EventRequestWillBeSent:
			if _, seen := p.requests[e.RequestID]; !seen {
				p.order = append(p.order, e.RequestID)
			}
			p.requests[e.RequestID] = e.Request
			if e.RedirectResponse != nil {
				p.redirected[e.RequestID] = true
			}
		case *network.EventResponseReceived:
			p.responses[e.RequestID] = e.Response
		case *network.EventLoadingFinished:
			p.loaded[e.RequestID] = nil
		case *network.EventLoadingFailed:
			p.loaded[e.RequestID] = fmt.Errorf("loading failed: %s", e.ErrorText)
		}
	}); err != nil {
		t.Fatal(err)
	}
	p.check(chromedp.Call(ctx, network.Enable, params))
	p.check(chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}))
	p.check(chromedp.Call(ctx, runtime.Enable, cdp.Empty{}))
	return p
}

// check fails the test on err, with what the page logged.
func (p *page) check(_ any, err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatalf("browser: %v\nconsole: %s", err, strings.Join(p.logged(), "\n"))
	}
}

func (p *page) run(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	p.check(nil, chromedp.Do(p.ctx, steps...))
}

// evaluate returns the value of the JavaScript expression js.
func evaluate[T any](p *page, js string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](js))
	p.check(nil, err)
	return v
}

func (p *page) logged() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.console...)
}

// in is a JS path into the widget's shadow root (element is pipes-connections or pipes-admin).
func in(element, selector string) chromedp.JSPath {
	return chromedp.JSPath(fmt.Sprintf(`document.querySelector(%q).shadowRoot.querySelector(%q)`, element, selector))
}

func row(slug, selector string) chromedp.JSPath {
	return in("pipes-connections", fmt.Sprintf(`li[data-slug=%q] %s`, slug, selector))
}

// text waits for the element at path and returns its text.
func (p *page) text(path chromedp.JSPath) string {
	p.t.Helper()
	p.run(chromedp.WaitVisible(path))
	return strings.TrimSpace(evaluate[string](p, string(path)+".textContent"))
}

// waitText waits until the element at path shows want.
func (p *page) waitText(path chromedp.JSPath, want string) {
	p.t.Helper()
	js := fmt.Sprintf(`(() => { const e = %s; return !!e && e.textContent.includes(%q); })()`, path, want)
	p.waitFor(js)
}

// waitFor waits until the JavaScript expression js is truthy.
func (p *page) waitFor(js string) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		dom, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](deepDOM))
		p.t.Fatalf("waiting for %s: %v\nconsole: %s\npage: %s", js, err, strings.Join(p.logged(), "\n"), dom)
	}
}

// screenshot saves the page as name.png in the screenshots directory.
func (p *page) screenshot(name string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	p.check(nil, err)
	if err := os.WriteFile(filepath.Join(s.shots, name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// deepDOM is the whole page as markup, shadow roots and every input's value included.
const deepDOM = `(() => {
  const out = [document.documentElement.outerHTML];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) { out.push(el.shadowRoot.innerHTML); walk(el.shadowRoot); }
      if (typeof el.value === 'string') out.push(el.value);
    }
  };
  walk(document);
  return out.join('\n');
})()`

// leaks says where secret appears in the page: its DOM, its console, any request other
// than the PUT that submitted it, any response body. A body it cannot read (one that should
// be there, or a request body the browser says exists) is reported too, so that the check
// never passes by not looking; answers that have no body (204, 304, a redirect followed to
// its end, a preflight) are not.
func (p *page) leaks(secret string) []string {
	p.t.Helper()
	where, _ := p.search(secret)
	return where
}

// search is leaks, and how many response bodies it read.
func (p *page) search(secret string) (where []string, bodies int) {
	p.t.Helper()
	dom := evaluate[string](p, deepDOM)
	if strings.Contains(dom, secret) {
		where = append(where, "DOM")
	}
	for _, l := range p.logged() {
		if strings.Contains(l, secret) {
			where = append(where, "console: "+l)
		}
	}
	p.mu.Lock()
	ids := append([]network.RequestID(nil), p.order...)
	reqs := map[network.RequestID]*network.Request{}
	for id, r := range p.requests {
		reqs[id] = r
	}
	resps := map[network.RequestID]*network.Response{}
	for id, r := range p.responses {
		resps[id] = r
	}
	p.mu.Unlock()
	for _, id := range ids {
		r := reqs[id]
		if strings.Contains(r.URL, secret) {
			where = append(where, "request URL "+r.URL)
		}
		for k, v := range r.Headers {
			if strings.Contains(fmt.Sprint(v), secret) {
				where = append(where, "request header "+k)
			}
		}
		if resp := resps[id]; resp != nil && hasBody(r.Method, resp.Status) {
			body, err := p.responseBody(id)
			switch {
			case err != nil:
				where = append(where, fmt.Sprintf("unreadable response body of %s %s (%d): %v", r.Method, r.URL, resp.Status, err))
			case bytes.Contains(body, []byte(secret)):
				where = append(where, "response body of "+r.Method+" "+r.URL)
			default:
				bodies++
			}
		}
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL, "/api-key") {
			continue // the submit itself carries it
		}
		if !r.HasPostData {
			continue
		}
		post, err := chromedp.Call(p.ctx, network.GetRequestPostData, network.GetRequestPostDataParams{RequestID: id})
		if err != nil {
			where = append(where, fmt.Sprintf("unreadable request body of %s %s: %v", r.Method, r.URL, err))
		} else if bytes.Contains(post.PostData, []byte(secret)) {
			where = append(where, "request body of "+r.Method+" "+r.URL)
		}
	}
	return where, bodies
}

// hasBody reports whether an answer with status to method carries a body to search.
// Redirects are followed: a request's response is its last one, so a 3xx here is one
// the page did not follow (fetch's redirect: 'manual'), which has none.
func hasBody(method string, status int64) bool {
	switch {
	case method == http.MethodOptions || method == http.MethodHead:
		return false
	case status == http.StatusNoContent || status == http.StatusResetContent || status == http.StatusNotModified:
		return false
	case status >= 300 && status < 400:
		return false
	}
	return status >= 200
}

// responseBody waits for request id's body to be loaded and returns it.
func (p *page) responseBody(id network.RequestID) ([]byte, error) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		loadErr, done := p.loaded[id]
		p.mu.Unlock()
		if done && loadErr != nil {
			return nil, loadErr
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("still loading after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := chromedp.Call(p.ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: id})
	if err != nil {
		return nil, err
	}
	return got.Body, nil // decoded from base64 by cdproto when the browser sent it so
}

// heapHolds reports whether the page's JavaScript heap, after a garbage collection,
// still holds secret: what the widget keeps in memory after a submit.
func (p *page) heapHolds(secret string) bool {
	p.t.Helper()
	var chunks strings.Builder
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	p.check(nil, chromedp.Listen(ctx, func(ev any) {
		if c, ok := ev.(*heapprofiler.EventAddHeapSnapshotChunk); ok {
			mu.Lock()
			chunks.WriteString(c.Chunk)
			mu.Unlock()
		}
	}))
	p.check(chromedp.Call(ctx, heapprofiler.Enable, cdp.Empty{}))
	p.check(chromedp.Call(ctx, heapprofiler.CollectGarbage, cdp.Empty{}))
	p.check(chromedp.Call(ctx, heapprofiler.TakeHeapSnapshot, heapprofiler.TakeHeapSnapshotParams{}))
	mu.Lock()
	defer mu.Unlock()
	return strings.Contains(chunks.String(), secret)
}

// vend asks the backend API for user's credential, as the application's workload does.
func vend(t *testing.T, user, org string) *wire.CredentialsResponse {
	t.Helper()
	got, err := s.backend.Credentials(context.Background(), "openai", wire.CredentialsRequest{UserID: user, OrganizationID: org})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// events returns the reasons of the Events recorded for user's openai account.
func events(t *testing.T, user, org string) []string {
	t.Helper()
	var list corev1.EventList
	if err := s.env.Client.List(context.Background(), &list, client.InNamespace(s.ns)); err != nil {
		t.Fatal(err)
	}
	var accounts pipesv1.ConnectedAccountList
	if err := s.env.Client.List(context.Background(), &accounts, client.InNamespace(s.ns)); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, a := range accounts.Items {
		if a.Spec.UserID != user || a.Spec.OrganizationID != org {
			continue
		}
		for _, e := range list.Items {
			if e.InvolvedObject.UID == a.UID {
				reasons = append(reasons, e.Reason)
			}
		}
	}
	return reasons
}
