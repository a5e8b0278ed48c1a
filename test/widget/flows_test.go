package widget_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

const (
	firstKey  = "sk-browser-first-key-4821"
	secondKey = "sk-browser-second-key-7733"
)

// A person pastes a key, sees its last four, the backend vends it; they replace it and
// then disconnect it, and the key never shows up anywhere in the page afterwards.
func TestPasteRotateDisconnect(t *testing.T) {
	user := "user-" + t.Name()[4:12]
	serveTokens(issue(t, user, "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")
	// GitHub is OAuth with each organization's own client, which this one lacks: its
	// Connect is disabled and explained.
	oauthDisabled := evaluate[bool](p, string(row("github", `[data-action="oauth-connect"]`)+`.disabled`))
	if !oauthDisabled {
		t.Fatal("Connect of an OAuth provider the organization has no client for is enabled")
	}
	p.waitText(row("github", `[data-role="oauth-unavailable"]`), "not set up for your organization")
	p.screenshot("widget-disconnected")

	p.run(chromedp.Click(row("openai", `[data-action="connect"]`)),
		chromedp.WaitVisible(row("openai", `input[data-role="key"]`)))
	inputType := evaluate[string](p, string(row("openai", `input[data-role="key"]`))+".type")
	autocomplete := evaluate[string](p, string(row("openai", `input[data-role="key"]`))+".autocomplete")
	if inputType != "password" || autocomplete != "off" {
		t.Fatalf("key input type=%q autocomplete=%q, want password and off", inputType, autocomplete)
	}
	p.run(chromedp.SendKeys(row("openai", `input[data-role="key"]`), firstKey))
	p.screenshot("widget-key-form")
	p.run(chromedp.Click(row("openai", `[data-action="submit"]`)))
	p.waitText(row("openai", `[data-role="last4"]`), "•••• 4821")
	if got := p.text(row("openai", `[data-role="state"]`)); got != "Connected" {
		t.Fatalf("state %q after connecting", got)
	}
	p.screenshot("widget-connected")
	if got := vend(t, user, "org_1"); got.Credential.GetValue() != firstKey {
		t.Fatalf("vended %+v, want the key pasted in the browser", got.Error)
	}

	p.run(chromedp.Click(row("openai", `[data-action="replace"]`)),
		chromedp.SendKeys(row("openai", `input[data-role="key"]`), secondKey),
		chromedp.Click(row("openai", `[data-action="submit"]`)))
	p.waitText(row("openai", `[data-role="last4"]`), "•••• 7733")
	if got := vend(t, user, "org_1"); got.Credential.GetValue() != secondKey {
		t.Fatal("the replaced key is not the one vended")
	}
	eventually(t, "a Rotated event", func() bool { return slices.Contains(events(t, user, "org_1"), "Rotated") })

	p.run(chromedp.Click(row("openai", `[data-action="disconnect"]`)),
		chromedp.WaitVisible(row("openai", `[data-action="confirm-disconnect"]`)))
	p.screenshot("widget-confirm-disconnect")
	p.run(chromedp.Click(row("openai", `[data-action="confirm-disconnect"]`)))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")
	eventually(t, "not_installed", func() bool { return vend(t, user, "org_1").Error == wire.ErrorNotInstalled })

	for _, key := range []string{firstKey, secondKey} {
		if where := p.leaks(key); len(where) > 0 {
			t.Errorf("the key is still in the page after submit: %v", where)
		}
		if p.heapHolds(key) {
			t.Errorf("the page's JavaScript heap still holds a submitted key after garbage collection")
		}
	}
	for _, l := range p.logged() {
		if strings.Contains(l, "Content Security Policy") || strings.HasPrefix(l, "exception") || strings.HasPrefix(l, "console.") {
			t.Errorf("the page logged %q", l)
		}
	}
}

// activeIn returns the data-action (or data-role) of the element focused inside the
// widget's shadow root, and whether it shows a visible focus indicator.
const activeIn = `(() => {
  const a = document.querySelector('pipes-connections').shadowRoot.activeElement;
  if (!a) return ['', false];
  const visible = a.matches(':focus-visible') && getComputedStyle(a).outlineStyle !== 'none';
  return [(a.dataset.action || a.dataset.role || a.tagName) + '@' + (a.closest('li') ? a.closest('li').dataset.slug : ''), visible];
})()`

func (p *page) focused() (string, bool) {
	p.t.Helper()
	out := evaluate[[]any](p, activeIn)
	return out[0].(string), out[1].(bool)
}

// tabTo presses Tab until the widget's focus is on want (action@slug).
func (p *page) tabTo(want string) {
	p.t.Helper()
	var seen []string
	for range 12 {
		p.run(chromedp.KeyEvent(kb.Tab))
		got, visible := p.focused()
		seen = append(seen, got)
		if got == want {
			if !visible {
				p.t.Fatalf("%s has keyboard focus but no visible focus indicator", want)
			}
			return
		}
	}
	p.t.Fatalf("Tab never reached %s; focus went %v", want, seen)
}

// The same path with the keyboard alone: Tab, Enter, typing, Escape.
func TestKeyboardOnly(t *testing.T) {
	user := "user-kbd"
	serveTokens(issue(t, user, "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")

	p.tabTo("connect@openai")
	p.run(chromedp.KeyEvent(kb.Enter))
	if got, _ := p.focused(); got != "key@openai" {
		t.Fatalf("focus after opening the form is on %q, want the key input", got)
	}
	p.run(chromedp.KeyEvent(kb.Escape))
	if got, _ := p.focused(); got != "connect@openai" {
		t.Fatalf("focus after Escape is on %q, want Connect again", got)
	}
	p.run(chromedp.KeyEvent(kb.Enter), chromedp.KeyEvent(firstKey), chromedp.KeyEvent(kb.Enter))
	p.waitText(row("openai", `[data-role="last4"]`), "•••• 4821")
	if got, _ := p.focused(); got != "replace@openai" {
		t.Fatalf("focus after connecting is on %q, want Replace key", got)
	}
	if got := vend(t, user, "org_1"); got.Credential.GetValue() != firstKey {
		t.Fatal("the key typed with the keyboard is not the one vended")
	}
	p.tabTo("disconnect@openai")
	p.run(chromedp.KeyEvent(kb.Enter))
	if got, _ := p.focused(); got != "confirm-disconnect@openai" && got != "cancel@openai" {
		t.Fatalf("focus after Disconnect is on %q, want the confirmation", got)
	}
	p.tabTo("confirm-disconnect@openai")
	p.run(chromedp.KeyEvent(kb.Enter))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")
	eventually(t, "not_installed", func() bool { return vend(t, user, "org_1").Error == wire.ErrorNotInstalled })
}

// The admin widget disables a provider for the organization; the user widget then hides it.
func TestAdminDisablesProviderForOrganization(t *testing.T) {
	serveTokens(issue(t, "member", "org_admin"), issue(t, "admin", "org_admin", widgettoken.ScopeManage))
	admin := newPage(t)
	admin.run(chromedp.Navigate(s.host.URL + "/admin"))
	toggle := in("pipes-admin", `li[data-slug="stripe"] [data-action="toggle"]`)
	admin.run(chromedp.WaitVisible(toggle))
	checked := evaluate[string](admin, string(toggle)+`.getAttribute('aria-checked')`)
	if checked != "true" {
		t.Fatalf("stripe starts aria-checked=%q", checked)
	}
	admin.run(chromedp.Click(toggle))
	admin.waitFor(string(toggle) + `.getAttribute('aria-checked') === 'false' && !` + string(toggle) + `.hasAttribute('aria-busy')`)
	admin.screenshot("widget-admin")

	// The answer came from what was written; a list reads the cache, which follows within moments.
	eventually(t, "the organization's setting in the cache", func() bool { return !listedEnabled(t, "member", "org_admin", "stripe") })
	user := newPage(t)
	user.run(chromedp.Navigate(s.host.URL + "/"))
	user.waitText(row("openai", `[data-role="state"]`), "Not connected")
	stripeShown := evaluate[bool](user, string(in("pipes-connections", `li[data-slug="stripe"]`))+` !== null`)
	if stripeShown {
		t.Fatal("the user widget still shows a provider the organization disabled")
	}
	// Another organization is not affected.
	serveTokens(issue(t, "member", "org_other"), "")
	other := newPage(t)
	other.run(chromedp.Navigate(s.host.URL + "/"))
	other.waitText(row("stripe", `[data-role="state"]`), "Not connected")

	// A member's token cannot change it.
	serveTokens(issue(t, "member", "org_admin"), issue(t, "member", "org_admin"))
	notAdmin := newPage(t)
	notAdmin.run(chromedp.Navigate(s.host.URL + "/admin"))
	notAdmin.run(chromedp.Click(toggle))
	notAdmin.waitText(in("pipes-admin", `li[data-slug="stripe"] [role="alert"]`), widgettoken.ScopeManage)
}

// A token for user A shows A's connections only, never user B's.
func TestTokenSeesOnlyItsUser(t *testing.T) {
	if _, err := s.backend.UpsertAPIKey(context.Background(), "openai", wire.UpsertAPIKeyRequest{UserID: "user-b", OrganizationID: "org_1", Secret: "sk-user-b-key-000000-5555"}); err != nil {
		t.Fatal(err)
	}
	serveTokens(issue(t, "user-a", "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")
	dom := evaluate[string](p, string(deepDOM))
	if strings.Contains(dom, "5555") {
		t.Fatal("user A's widget shows user B's key")
	}
}

// An expired or tampered token is a clear "session expired", not a broken widget.
func TestExpiredAndTamperedTokens(t *testing.T) {
	past := widgettokenWithClock(-2 * time.Hour)
	expired, _, err := past.Issue(widgettoken.Claims{Namespace: s.ns, UserID: "user-a", OrganizationID: "org_1"})
	if err != nil {
		t.Fatal(err)
	}
	good := issue(t, "user-a", "org_1")
	other := issue(t, "user-b", "org_1")
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.Split(other, ".")[1] + "." + parts[2]
	for name, tok := range map[string]string{"expired": expired, "tampered": tampered} {
		t.Run(name, func(t *testing.T) {
			serveTokens(tok, "")
			p := newPage(t)
			p.run(chromedp.Navigate(s.host.URL + "/"))
			p.waitText(in("pipes-connections", `[data-role="session-expired"]`), "session has expired")
			if name == "expired" {
				p.screenshot("widget-session-expired")
			}
		})
	}
}

func widgettokenWithClock(offset time.Duration) *widgettoken.Tokens {
	t := widgettoken.New(s.env.Operator.Widgets.Keyset(), time.Minute)
	t.Now = func() time.Time { return time.Now().Add(offset) }
	return t
}

// A page on an origin that is not allowed cannot call the API: the browser's preflight is
// refused, the widget shows an error with Retry, and nothing is changed.
func TestOriginNotAllowed(t *testing.T) {
	serveTokens(issue(t, "user-cors", "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.other.URL + "/"))
	p.run(chromedp.WaitVisible(in("pipes-connections", `[data-action="retry"]`)))
	p.screenshot("widget-error")
	listed := evaluate[bool](p, string(in("pipes-connections", `li[data-slug="openai"]`)+` !== null`))
	if listed {
		t.Fatal("a page on an origin that is not allowed listed the providers")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sawAPI := false
	for _, r := range p.requests {
		if strings.Contains(r.URL, "/widget/api/") {
			sawAPI = true
		}
	}
	if !sawAPI {
		t.Fatal("the widget never tried the API: the test proves nothing")
	}
	// The same request from a server (no browser, no Origin) works: the token is valid.
	req, _ := http.NewRequest(http.MethodGet, s.env.PublicURL()+"/widget/api/v1/providers", nil)
	req.Header.Set("Authorization", "Bearer "+issue(t, "user-cors", "org_1"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the same token without a browser origin: %d", resp.StatusCode)
	}
}

// listedEnabled reports whether the widget API lists slug as enabled for user in org.
func listedEnabled(t *testing.T, user, org, slug string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.env.PublicURL()+"/widget/api/v1/providers", nil)
	req.Header.Set("Authorization", "Bearer "+issue(t, user, org))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var list wire.WidgetProviderList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Data {
		if p.Slug == slug {
			return p.Enabled
		}
	}
	t.Fatalf("%s is not listed", slug)
	return false
}

// While the list is on its way the widget says it is loading (the request is held back
// with the DevTools Fetch domain); with no provider in the namespace, it says so.
func TestLoadingAndEmptyStates(t *testing.T) {
	serveTokens(issue(t, "user-states", "org_1"), "")
	p := newPage(t)
	paused := make(chan fetch.RequestID, 64)
	p.check(nil, chromedp.Listen(p.ctx, func(ev any) {
		if e, ok := ev.(*fetch.EventRequestPaused); ok {
			paused <- e.RequestID
		}
	}))
	p.check(chromedp.Call(p.ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/widget/api/v1/providers"}}}))
	p.run(chromedp.Navigate(s.host.URL + "/"))
	var held fetch.RequestID
	select {
	case held = <-paused:
	case <-time.After(20 * time.Second):
		t.Fatal("the widget never asked for the list")
	}
	p.waitText(in("pipes-connections", `[data-role="loading"]`), "Loading")
	p.screenshot("widget-loading")
	// Let it through, and what follows it (the preflight is held first, then the GET).
	p.check(chromedp.Call(p.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: held}))
	go func() {
		for id := range paused {
			_, _ = chromedp.Call(p.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id})
		}
	}()
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")

	// A namespace without providers.
	empty, _, err := s.env.Operator.Widgets.Issue(widgettoken.Claims{Namespace: "no-providers-here", UserID: "user-states"})
	if err != nil {
		t.Fatal(err)
	}
	serveTokens(empty, "")
	q := newPage(t)
	q.run(chromedp.Navigate(s.host.URL + "/"))
	q.waitText(in("pipes-connections", `[data-role="empty"]`), "No services")
	q.screenshot("widget-empty")
}

// While a key is being saved, the form is gone (the key with it) and Save is disabled and
// busy; the request is held back with the DevTools Fetch domain to look at that moment.
func TestSubmitPending(t *testing.T) {
	user := "user-pending"
	serveTokens(issue(t, user, "org_1"), "")
	p := newPage(t)
	paused := make(chan fetch.RequestID, 64)
	p.check(nil, chromedp.Listen(p.ctx, func(ev any) {
		if e, ok := ev.(*fetch.EventRequestPaused); ok && e.Request.Method == http.MethodPut {
			paused <- e.RequestID
		} else if ok {
			go func() {
				_, _ = chromedp.Call(p.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
			}()
		}
	}))
	p.check(chromedp.Call(p.ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api-key"}}}))
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")
	p.run(chromedp.Click(row("openai", `[data-action="connect"]`)),
		chromedp.SendKeys(row("openai", `input[data-role="key"]`), firstKey),
		chromedp.Click(row("openai", `[data-action="submit"]`)))
	var held fetch.RequestID
	select {
	case held = <-paused:
	case <-time.After(20 * time.Second):
		t.Fatal("the key was never sent")
	}
	pending := row("openai", `[data-role="pending"] [data-action="submit"]`)
	p.waitFor(string(pending) + `.disabled && ` + string(pending) + `.getAttribute('aria-busy') === 'true'`)
	if evaluate[bool](p, string(row("openai", `input[data-role="key"]`))+` !== null`) {
		t.Fatal("the key input is still in the page while the key is being saved")
	}
	if where := p.leaks(firstKey); len(where) > 0 {
		t.Fatalf("the key is in the page while it is being saved: %v", where)
	}
	p.check(chromedp.Call(p.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: held}))
	p.waitText(row("openai", `[data-role="last4"]`), "•••• 4821")
}

// An OAuth provider: Connect opens the provider's sign-in in a popup, the user consents
// (the in-process server consents at once), the callback stores the token, and the widget,
// watching, shows the account connected; the backend then vends the access token.
func TestOAuthConnect(t *testing.T) {
	user := "user-oauth"
	serveTokens(issue(t, user, "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row("gitlab", `[data-role="state"]`), "Not connected")
	before := s.oauth.Stats().CodeExchanges
	p.run(chromedp.Click(row("gitlab", `[data-action="oauth-connect"]`)))
	p.waitText(row("gitlab", `[data-role="state"]`), "Connected")
	if s.oauth.Stats().CodeExchanges != before+1 {
		t.Fatalf("code exchanges %d, want one more than %d", s.oauth.Stats().CodeExchanges, before)
	}
	p.screenshot("widget-oauth-connected")
	got, err := s.backend.Token(context.Background(), "gitlab", wire.CredentialsRequest{UserID: user, OrganizationID: "org_1"})
	if err != nil || !got.Active || !s.oauth.ValidAccessToken(got.Credential.GetValue()) {
		t.Fatalf("vending the connected account's token: %v %+v", err, got)
	}
	if where := p.leaks(got.Credential.GetValue()); len(where) > 0 {
		t.Fatalf("the access token reached the page: %v", where)
	}
}
