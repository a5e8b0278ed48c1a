package widget_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
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
	p := openAs(t, user, "openai", "Not connected")
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

	p.noTrace(firstKey, secondKey)
	for _, l := range p.logged() {
		if strings.Contains(l, "Content Security Policy") || strings.HasPrefix(l, "exception") || strings.HasPrefix(l, "console.") {
			t.Errorf("the page logged %q", l)
		}
	}
}

// noTrace fails the test if any of keys is still in the page (leaks) or, after a
// garbage collection, in its JavaScript heap.
func (p *page) noTrace(keys ...string) {
	p.t.Helper()
	for _, key := range keys {
		if where := p.leaks(key); len(where) > 0 {
			p.t.Errorf("a submitted key is still in the page, or the page could not be searched: %v", where)
		}
		if p.heapHolds(key) {
			p.t.Errorf("the page's JavaScript heap still holds a submitted key after garbage collection")
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

// The same path with the keyboard alone: Tab, Enter, typing, Escape; connect, replace
// (rotate), disconnect, and no trace of a key in the page after each submit.
func TestKeyboardOnly(t *testing.T) {
	user := "user-kbd"
	p := openAs(t, user, "openai", "Not connected")

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
	p.noTrace(firstKey)

	// Replace key (focus is on it): Enter opens the form for the new key, Enter saves it.
	p.run(chromedp.KeyEvent(kb.Enter))
	if got, _ := p.focused(); got != "key@openai" {
		t.Fatalf("focus after Replace key is on %q, want the new key's input", got)
	}
	if got := p.text(row("openai", `label`)); got != "New key for OpenAI" {
		t.Fatalf("the replace form's label is %q", got)
	}
	p.run(chromedp.KeyEvent(secondKey), chromedp.KeyEvent(kb.Enter))
	p.waitText(row("openai", `[data-role="last4"]`), "•••• 7733")
	if got, _ := p.focused(); got != "replace@openai" {
		t.Fatalf("focus after replacing the key is on %q, want Replace key", got)
	}
	if got := vend(t, user, "org_1"); got.Credential.GetValue() != secondKey {
		t.Fatal("the key typed to replace the first is not the one vended")
	}
	eventually(t, "a Rotated event", func() bool { return slices.Contains(events(t, user, "org_1"), "Rotated") })
	p.noTrace(firstKey, secondKey)

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
	// 403 forbidden, in the strings table's words (the server's message, which names the
	// scope, goes to the pipes-error event).
	notAdmin.waitText(in("pipes-admin", `li[data-slug="stripe"] [role="alert"]`), "You are not allowed to make this change.")
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
	p := openAs(t, user, "gitlab", "Not connected")
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

// backendCall sends a request to the backend API as the application's backend, for the
// routes apiclient has no method for, and returns the status and body.
func backendCall(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, s.env.APIURL()+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+s.backendToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.backendHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// An OAuth account imported without tokens (the backend API's import, as a migration
// does) needs reauthorization: the row says so, offers Reconnect (and Disconnect), nothing
// is vended, and Reconnect runs the sign-in again until the account is connected.
func TestNeedsReauthorization(t *testing.T) {
	user := "user-reauth"
	status, body := backendCall(t, http.MethodPost, "/user_management/users/"+user+"/connected_accounts/gitlab",
		wire.ImportConnectedAccountRequest{OrganizationID: "org_1"})
	var imported wire.ConnectedAccount
	if status != http.StatusOK || json.Unmarshal(body, &imported) != nil || imported.State != wire.StateNeedsReauthorization {
		t.Fatalf("importing an account without tokens: %d %s", status, body)
	}
	if got, err := s.backend.Token(context.Background(), "gitlab", wire.CredentialsRequest{UserID: user, OrganizationID: "org_1"}); err != nil || got.Error != wire.ErrorNeedsReauthorization {
		t.Fatalf("vending an account that needs reauthorization: %v %+v", err, got)
	}
	p := openAs(t, user, "gitlab", "Reconnect needed")
	if got := evaluate[string](p, string(row("gitlab", `[data-role="state"]`))+`.dataset.state`); got != wire.StateNeedsReauthorization {
		t.Fatalf("the state's data-state is %q", got)
	}
	reconnect := row("gitlab", `[data-action="oauth-connect"]`)
	if got := p.text(reconnect); got != "Reconnect" {
		t.Fatalf("the OAuth button of an account that needs reauthorization says %q, want Reconnect", got)
	}
	if evaluate[bool](p, string(reconnect)+`.disabled`) {
		t.Fatal("Reconnect is disabled")
	}
	if got := p.text(row("gitlab", `[data-action="disconnect"]`)); got != "Disconnect" {
		t.Fatalf("no Disconnect beside Reconnect (got %q)", got)
	}
	p.screenshot("widget-needs-reauthorization")

	p.run(chromedp.Click(reconnect))
	p.waitText(row("gitlab", `[data-role="state"]`), "Connected")
	got, err := s.backend.Token(context.Background(), "gitlab", wire.CredentialsRequest{UserID: user, OrganizationID: "org_1"})
	if err != nil || !got.Active || !s.oauth.ValidAccessToken(got.Credential.GetValue()) {
		t.Fatalf("vending the reconnected account's token: %v %+v", err, got)
	}
}

// pageFetch makes a request to the operator's public listener from the page, with the
// token the page's widget holds: what any script on the page could do with it.
func (p *page) pageFetch(method, path, body string) (int, string) {
	p.t.Helper()
	js := fmt.Sprintf(`(async () => {
  const init = {method: %q, mode: 'cors', credentials: 'omit', cache: 'no-store',
    headers: {Authorization: 'Bearer ' + document.querySelector('pipes-connections').token}};
  if (%q) { init.headers['Content-Type'] = 'application/json'; init.body = %q; }
  try { const r = await fetch(%q, init); return [r.status, await r.text()]; } catch (e) { return [0, String(e)]; }
})()`, method, body, body, s.env.PublicURL()+path)
	out, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]any](js, chromedp.EvalAwaitPromise))
	p.check(nil, err)
	return int(out[0].(float64)), out[1].(string)
}

// A token for user A cannot change user B's connections, whatever the request names:
// from A's page, with A's token, every way of naming B (body, query, the backend API's
// routes on the public listener) is refused or acts on A alone, and B's keys are untouched.
func TestTokenCannotChangeOtherUser(t *testing.T) {
	const a, b = "user-a-change", "user-b-change"
	bKeys := map[string]string{"org_1": "sk-user-b-org1-key-6161", "org_2": "sk-user-b-org2-key-6262"}
	before := map[string]*wire.ConnectedAccount{}
	for org, key := range bKeys {
		if _, err := s.backend.UpsertAPIKey(context.Background(), "openai", wire.UpsertAPIKeyRequest{UserID: b, OrganizationID: org, Secret: key}); err != nil {
			t.Fatal(err)
		}
		ca, err := s.backend.ConnectedAccount(context.Background(), b, "openai", org)
		if err != nil {
			t.Fatal(err)
		}
		before[org] = ca
	}
	bUnchanged := func(after string) {
		t.Helper()
		for org, key := range bKeys {
			if got := vend(t, b, org); got.Credential.GetValue() != key {
				t.Fatalf("after %s, B's key in %s vends %+v, not B's own", after, org, got)
			}
			ca, err := s.backend.ConnectedAccount(context.Background(), b, "openai", org)
			if err != nil {
				t.Fatalf("after %s, B's account in %s: %v", after, org, err)
			}
			if ca.APIKeyLast4 != before[org].APIKeyLast4 || !ca.UpdatedAt.Equal(before[org].UpdatedAt) {
				t.Fatalf("after %s, B's account in %s changed: %+v, was %+v", after, org, ca, before[org])
			}
		}
	}
	serveTokens(issue(t, a, "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")

	const attackKey = "sk-written-from-a-page-9090"
	set := `{"secret":"` + attackKey + `"}`
	naming := func(org string) string { return "user_id=" + b + "&organization_id=" + org + "&namespace=" + s.ns }
	for _, try := range []struct{ method, path, body string }{
		{http.MethodPut, "/widget/api/v1/providers/openai/api-key", `{"secret":"` + attackKey + `","user_id":"` + b + `","organization_id":"org_1"}`},
		{http.MethodPut, "/widget/api/v1/providers/openai/api-key", `{"secret":"` + attackKey + `","user_id":"` + b + `","organization_id":"org_2"}`},
		{http.MethodPut, "/widget/api/v1/providers/openai/api-key?" + naming("org_1"), set},
		{http.MethodPut, "/widget/api/v1/providers/openai/api-key?" + naming("org_2"), set},
		{http.MethodDelete, "/widget/api/v1/providers/openai/connection?" + naming("org_1"), ""},
		{http.MethodPut, "/widget/api/v1/providers/openai/api-key?" + naming("org_2"), set},
		{http.MethodDelete, "/widget/api/v1/providers/openai/connection?" + naming("org_2"), `{"user_id":"` + b + `","organization_id":"org_2"}`},
	} {
		what := try.method + " " + try.path + " " + try.body
		aHadKey := vend(t, a, "org_1").Active
		status, answer := p.pageFetch(try.method, try.path, try.body)
		if status == 0 {
			t.Fatalf("%s: the request never got an answer (%s): the test proves nothing", what, answer)
		}
		bUnchanged(what)
		switch {
		case status >= 400:
			// Refused: nothing else to check.
		case try.method == http.MethodPut:
			var v wire.WidgetProvider
			if err := json.Unmarshal([]byte(answer), &v); err != nil || v.APIKeyLast4 != "9090" {
				t.Fatalf("%s: %d %s: a set that succeeded must answer for A's own key", what, status, answer)
			}
			if got := vend(t, a, "org_1"); got.Credential.GetValue() != attackKey {
				t.Fatalf("%s: answered %d but A's own key is not the one sent", what, status)
			}
		case try.method == http.MethodDelete:
			if !aHadKey {
				t.Fatalf("%s: answered %d though A had nothing to disconnect", what, status)
			}
			eventually(t, "A's account disconnected", func() bool { return vend(t, a, "org_1").Error == wire.ErrorNotInstalled })
		default:
			t.Fatalf("%s: answered %d %s", what, status, answer)
		}
		t.Logf("%s: %d", what, status)
	}

	// The backend API's own routes, which name the user, are not served on the public
	// listener: with A's token and no browser in the way (no Origin, no CORS), all 404.
	aToken := evaluate[string](p, `document.querySelector('pipes-connections').token`)
	body := `{"secret":"` + attackKey + `","user_id":"` + b + `","organization_id":"org_1"}`
	for _, try := range []struct{ method, path, body string }{
		{http.MethodPost, "/data-integrations/openai/api-key", body},
		{http.MethodPost, "/namespaces/" + s.ns + "/data-integrations/openai/api-key", body},
		{http.MethodDelete, "/user_management/users/" + b + "/connected_accounts/openai?organization_id=org_1", ""},
		{http.MethodDelete, "/namespaces/" + s.ns + "/user_management/users/" + b + "/connected_accounts/openai?organization_id=org_1", ""},
	} {
		req, _ := http.NewRequest(try.method, s.env.PublicURL()+try.path, strings.NewReader(try.body))
		req.Header.Set("Authorization", "Bearer "+aToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s on the public listener with A's widget token: %d, want 404", try.method, try.path, resp.StatusCode)
		}
		bUnchanged(try.method + " " + try.path)
	}
}

// Errors read from the strings table, chosen by the code of the API's answer, never the
// server's English message: a key the API's validation refuses shows
// strings.errorKeyRejected (and a translation of it, once the app sets one), a code the
// widget does not know shows strings.genericError; the app gets the server's code and
// message in a pipes-error event.
func TestErrorsFromStringsTable(t *testing.T) {
	serveTokens(issue(t, "user-errors", "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")
	evaluate[bool](p, `(() => {
  window.pipesErrors = [];
  document.querySelector('pipes-connections').addEventListener('pipes-error', (e) => window.pipesErrors.push(e.detail));
  return true;
})()`)
	input := row("openai", `input[data-role="key"]`)
	rowError := row("openai", `[role="alert"][data-role="error"]`)
	// A control character cannot be typed: it arrives in a paste, put in the field here.
	badKey := "sk-bad\u0007key-1234"
	p.run(chromedp.Click(row("openai", `[data-action="connect"]`)), chromedp.WaitVisible(input),
		chromedp.SetValue(input, badKey), chromedp.Click(row("openai", `[data-action="submit"]`)))
	p.waitText(rowError, "This key cannot be used: an API key is a single line of printable text")
	table := evaluate[string](p, `PipesWidget.strings.errorKeyRejected`)
	if got := p.text(rowError); got != table {
		t.Fatalf("the row shows %q, not the strings table's %q", got, table)
	}
	p.screenshot("widget-key-rejected")
	var events []wire.ErrorResponse
	raw := evaluate[string](p, `JSON.stringify(window.pipesErrors)`)
	if err := json.Unmarshal([]byte(raw), &events); err != nil || len(events) != 1 || events[0].Code != wire.CodeInvalidRequest || !strings.Contains(events[0].Message, "control characters") {
		t.Fatalf("pipes-error events %s, want the server's invalid_request and its message", raw)
	}
	if strings.Contains(evaluate[string](p, deepDOM), "control characters") {
		t.Fatal("the server's message is in the page")
	}

	// Translated: the app's entry is what shows.
	evaluate[bool](p, `(PipesWidget.strings.errorKeyRejected = 'Dieser Schlüssel ist ungültig.', true)`)
	p.run(chromedp.SetValue(input, badKey), chromedp.Click(row("openai", `[data-action="submit"]`)))
	p.waitText(rowError, "Dieser Schlüssel ist ungültig.")

	// A code the widget does not know: the generic string, not the server's words. The
	// answer is made up through the DevTools Fetch domain.
	p.check(nil, chromedp.Listen(p.ctx, func(ev any) {
		e, ok := ev.(*fetch.EventRequestPaused)
		if !ok {
			return
		}
		go func() {
			if e.Request.Method != http.MethodPut {
				_, _ = chromedp.Call(p.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
				return
			}
			_, _ = chromedp.Call(p.ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: e.RequestID, ResponseCode: http.StatusTeapot,
				ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "application/json"}, {Name: "Access-Control-Allow-Origin", Value: s.host.URL}},
				Body:            []byte(`{"code":"brewing_failed","message":"the server's own English words"}`)})
		}()
	}))
	p.check(chromedp.Call(p.ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api-key"}}}))
	p.run(chromedp.SetValue(input, "sk-a-fine-key-but-a-teapot-5678"), chromedp.Click(row("openai", `[data-action="submit"]`)))
	p.waitText(rowError, "Something went wrong. Please try again.")
	if strings.Contains(evaluate[string](p, deepDOM), "own English words") {
		t.Fatal("the server's message for an unknown code is in the page")
	}
	raw = evaluate[string](p, `JSON.stringify(window.pipesErrors)`)
	if !strings.Contains(raw, `"code":"brewing_failed"`) || !strings.Contains(raw, "own English words") || !strings.Contains(raw, `"status":418`) {
		t.Fatalf("pipes-error events %s, want the unknown code with the server's message", raw)
	}
}

// The leak check reads every body it searches. One it cannot read is reported, not
// skipped, so the check cannot pass by seeing nothing: here the browser is told to keep
// no bodies at all. Answers without a body (a disconnect's 204, a redirect followed to
// its end) are searched, or skipped, without a report.
func TestLeakCheckReportsUnreadableBodies(t *testing.T) {
	user := "user-leakcheck"
	p := openAs(t, user, "openai", "Not connected")
	p.run(chromedp.Click(row("openai", `[data-action="connect"]`)),
		chromedp.SendKeys(row("openai", `input[data-role="key"]`), firstKey),
		chromedp.Click(row("openai", `[data-action="submit"]`)))
	p.waitText(row("openai", `[data-role="last4"]`), "•••• 4821")
	p.run(chromedp.Click(row("openai", `[data-action="disconnect"]`)),
		chromedp.Click(row("openai", `[data-action="confirm-disconnect"]`)))
	p.waitText(row("openai", `[data-role="state"]`), "Not connected")
	// An old script version redirects (302) to the current one (loaded as a script loads,
	// without CORS: the answer is opaque to the page, not to DevTools).
	_, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](fmt.Sprintf(`fetch(%q, {mode: 'no-cors', cache: 'no-store'}).then(() => true)`,
		s.env.PublicURL()+"/widget/v/0ld/pipes-widget.js"), chromedp.EvalAwaitPromise))
	p.check(nil, err)
	var sawDelete, sawRedirect bool
	p.mu.Lock()
	for id, r := range p.requests {
		resp := p.responses[id]
		sawDelete = sawDelete || (r.Method == http.MethodDelete && resp != nil && resp.Status == http.StatusNoContent)
		sawRedirect = sawRedirect || (p.redirected[id] && resp != nil && resp.Status == http.StatusOK)
	}
	p.mu.Unlock()
	if !sawDelete || !sawRedirect {
		t.Fatalf("saw a 204 disconnect: %v, a followed redirect: %v; the test proves nothing about answers without a body", sawDelete, sawRedirect)
	}
	where, read := p.search(firstKey)
	if len(where) > 0 {
		t.Fatalf("the leak check reports a page that keeps every body: %v", where)
	}
	if read < 3 {
		t.Fatalf("the leak check read %d response bodies", read)
	}

	none := int64(1)
	q := openPage(t, network.EnableParams{MaxTotalBufferSize: &none, MaxResourceBufferSize: &none})
	q.run(chromedp.Navigate(s.host.URL + "/"))
	q.waitText(row("openai", `[data-role="state"]`), "Not connected")
	where, _ = q.search("not-in-the-page")
	unreadable := false
	for _, w := range where {
		if strings.HasPrefix(w, "unreadable response body of GET "+s.env.PublicURL()+"/widget/api/v1/providers") {
			unreadable = true
		}
	}
	if !unreadable {
		t.Fatalf("the leak check did not report the list's unreadable body; it reported %v", where)
	}
}

// openAs opens the demo page as user (in org_1) and waits until slug's row shows state.
func openAs(t *testing.T, user, slug, state string) *page {
	t.Helper()
	serveTokens(issue(t, user, "org_1"), "")
	p := newPage(t)
	p.run(chromedp.Navigate(s.host.URL + "/"))
	p.waitText(row(slug, `[data-role="state"]`), state)
	return p
}
