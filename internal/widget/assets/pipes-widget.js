/*!
 * pipes-widget.js: end-user widget for pipes-operator.
 *
 * Defines two custom elements:
 *   <pipes-connections token="...">  a user's own provider connections (API keys)
 *   <pipes-admin token="...">        an organization admin's provider on/off switches
 *
 * Classic script, no dependencies, CSP-friendly: DOM is built with
 * createElement/textContent only, styles live in a constructable stylesheet.
 * See README.md beside this file for the contract (selectors, parts, events, strings).
 */
(() => {
  'use strict';

  const VERSION = '1.0.0';
  const TAGS = ['pipes-connections', 'pipes-admin'];

  // Loaded twice (or outside a browser): keep the first definition.
  if (typeof window === 'undefined' || !window.customElements || window.customElements.get(TAGS[0])) return;

  // API base: the origin this script was loaded from (captured now; currentScript is null later).
  const SCRIPT_ORIGIN = (() => {
    try {
      const s = document.currentScript;
      if (s && s.src) return new URL(s.src, document.baseURI).origin;
    } catch (_) { /* fall through */ }
    return window.location.origin;
  })();

  // ---------------------------------------------------------------------------
  // Strings: the only place user-visible text lives. Apps may change entries in
  // window.PipesWidget.strings before or after load; every render reads them anew.
  const strings = {
    loading: 'Loading…',
    empty: 'No services are available to connect yet. Ask your organization admin to enable one.',
    adminEmpty: 'No providers are installed yet.',
    networkError: 'Could not reach the server. Check your connection and try again.',
    genericError: 'Something went wrong. Please try again.',
    retry: 'Retry',
    sessionExpired: 'Your session has expired. Reload the page to continue.',
    connected: 'Connected',
    disconnected: 'Not connected',
    needsReauthorization: 'Reconnect needed',
    last4: '•••• {last4}',
    last4Label: 'Key ending {last4}',
    updated: 'set {date}',
    justNow: 'just now',
    connect: 'Connect',
    replace: 'Replace key',
    disconnect: 'Disconnect',
    confirmDisconnect: 'Disconnect {name}? Anything using this key will stop working.',
    confirmDisconnectButton: 'Yes, disconnect',
    cancel: 'Cancel',
    keyLabel: 'API key for {name}',
    newKeyLabel: 'New key for {name}',
    submit: 'Save key',
    saving: 'Saving…',
    removing: 'Disconnecting…',
    keyRequired: 'Enter a key first.',
    oauthUnavailable: 'Connecting to {name} is not set up for your organization yet. Ask your organization admin.',
    oauthWaiting: 'Finish signing in to {name} in the window that opened…',
    oauthPopupBlocked: 'Your browser blocked the sign-in window.',
    oauthContinue: 'Continue to {name}',
    reconnect: 'Reconnect',
    announceConnected: 'Connected {name}, key ending {last4}',
    announceConnectedNoKey: 'Connected {name}',
    announceDisconnected: 'Disconnected {name}',
    adminToggle: 'Enabled for your organization',
    announceEnabled: '{name} enabled for your organization',
    announceDisabled: '{name} disabled for your organization',
    // Failed requests, chosen by the code of the API's answer (see ERRORS below). The
    // server's own message is for developers: it goes to the pipes-error event, not here.
    errorKeyRejected: 'This key cannot be used: an API key is a single line of printable text, at most 8 KB. Check it and paste it again.',
    errorForbidden: 'You are not allowed to make this change. Ask your organization admin.',
    errorNotFound: 'This is no longer available. Reload the page.',
    errorConflict: 'Something changed at the same time. Please try again.',
    errorProviderDisabled: '{name} is not enabled for your organization. Ask your organization admin.',
    errorRateLimited: 'Too many attempts. Wait a moment and try again.',
    errorUnavailable: 'This is not available right now. Please try again later.',
  };

  // API error code -> strings key; any other code reads strings.genericError.
  const ERRORS = {
    network: 'networkError',
    forbidden: 'errorForbidden',
    not_found: 'errorNotFound',
    conflict: 'errorConflict',
    provider_disabled: 'errorProviderDisabled',
    not_configured: 'oauthUnavailable',
    rate_limited: 'errorRateLimited',
    unavailable: 'errorUnavailable',
    not_implemented: 'errorUnavailable',
  };

  /**
   * The text a person reads for a failed request: always from the strings table. On the
   * key form, a refused body can only be the key (the widget sends nothing else).
   */
  function errorText(err, name, keyForm) {
    const c = err && err.code;
    return t(keyForm && (c === 'invalid_request' || c === 'request_too_large') ? 'errorKeyRejected'
      : Object.prototype.hasOwnProperty.call(ERRORS, c) ? ERRORS[c] : 'genericError', { name });
  }

  let PW; // window.PipesWidget, assigned below

  /** t('key', {name: 'X'}) -> strings.key with {name} replaced. Unknown keys render as themselves. */
  function t(key, vars) {
    const table = PW && PW.strings;
    let s = table && typeof table[key] === 'string' ? table[key] : strings[key];
    if (typeof s !== 'string') s = key;
    if (!vars) return s;
    return s.replace(/\{(\w+)\}/g, (m, k) =>
      (Object.prototype.hasOwnProperty.call(vars, k) && vars[k] != null ? String(vars[k]) : m));
  }

  // ---------------------------------------------------------------------------
  // Styles (theme with the --pipes-* custom properties or ::part()).
  const CSS = `
:host{--pipes-font:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
--pipes-text:#1f2328;--pipes-muted:#57606a;--pipes-bg:#ffffff;--pipes-surface:#f6f8fa;
--pipes-border:#d0d7de;--pipes-accent:#0a58ca;--pipes-accent-text:#ffffff;--pipes-danger:#b42318;
--pipes-radius:8px;--pipes-focus:#0a58ca;
display:block;font-family:var(--pipes-font);font-size:14px;line-height:1.45;
color:var(--pipes-text);background:var(--pipes-bg)}
:host([hidden]){display:none}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
p{margin:0}
.sr{position:absolute;width:1px;height:1px;margin:-1px;padding:0;border:0;overflow:hidden;
clip:rect(0 0 0 0);clip-path:inset(50%);white-space:nowrap}
.main:focus{outline:none}
:focus-visible{outline:3px solid var(--pipes-focus);outline-offset:2px}
.list{list-style:none;margin:0;padding:0;display:grid;gap:12px}
.provider{display:flex;flex-wrap:wrap;align-items:center;gap:12px 16px;padding:16px;
background:var(--pipes-surface);border:1px solid var(--pipes-border);border-radius:var(--pipes-radius)}
.info{flex:1 1 16rem;min-width:0}
.name{font-weight:600;font-size:1.07em}
.desc{color:var(--pipes-muted);margin-top:2px}
.meta{display:flex;flex-wrap:wrap;align-items:center;gap:4px 12px;margin-top:6px;color:var(--pipes-muted);font-size:.93em}
.state{font-weight:600;color:var(--pipes-text)}
.state::before{content:"";display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px;
background:var(--pipes-muted);vertical-align:.05em}
.state[data-state="connected"]::before{background:#1a7f37}
.state[data-state="needs_reauthorization"]::before{background:var(--pipes-danger)}
.last4{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--pipes-text)}
.actions,.buttons{display:flex;flex-wrap:wrap;align-items:center;gap:8px}
.form,.confirm,.pending,.row-error,.hint{flex:1 1 100%}
.form,.confirm{display:grid;gap:8px;padding-top:12px;border-top:1px solid var(--pipes-border)}
.pending:focus{outline:none}
button{font:inherit;font-weight:600;min-height:36px;padding:6px 14px;cursor:pointer;
color:var(--pipes-text);background:var(--pipes-bg);border:1px solid var(--pipes-muted);
border-radius:calc(var(--pipes-radius) - 2px)}
button:hover{border-color:var(--pipes-text)}
.primary{color:var(--pipes-accent-text);background:var(--pipes-accent);border-color:var(--pipes-accent)}
.primary:hover{border-color:var(--pipes-accent);filter:brightness(.92)}
.danger{color:var(--pipes-danger);border-color:var(--pipes-danger)}
.danger.solid{color:#fff;background:var(--pipes-danger)}
button:disabled,button[aria-disabled="true"]{opacity:.6;cursor:not-allowed;filter:none}
label{display:block;font-weight:600}
input{font:inherit;width:100%;max-width:32rem;padding:7px 10px;color:var(--pipes-text);
background:var(--pipes-bg);border:1px solid var(--pipes-muted);border-radius:calc(var(--pipes-radius) - 2px)}
input[aria-invalid="true"]{border-color:var(--pipes-danger)}
.error{color:var(--pipes-danger);font-weight:600}
.hint{color:var(--pipes-muted);font-size:.93em}
.notice{display:grid;justify-items:start;gap:10px;padding:16px;background:var(--pipes-surface);
border:1px solid var(--pipes-border);border-radius:var(--pipes-radius)}
.loading{color:var(--pipes-muted);padding:16px}
.toggle{display:inline-flex;align-items:center;gap:10px;padding:4px 6px;border-color:transparent;background:none;font-weight:500}
.toggle:hover{border-color:transparent}
.track{position:relative;flex:none;width:40px;height:22px;border-radius:11px;
background:var(--pipes-bg);border:2px solid var(--pipes-muted);transition:background-color .15s}
.thumb{position:absolute;top:2px;left:2px;width:14px;height:14px;border-radius:50%;
background:var(--pipes-muted);transition:transform .15s}
.toggle[aria-checked="true"] .track{background:var(--pipes-accent);border-color:var(--pipes-accent)}
.toggle[aria-checked="true"] .thumb{transform:translateX(18px);background:var(--pipes-accent-text)}
@media (prefers-reduced-motion:reduce){.track,.thumb{transition:none}}
@media (forced-colors:active){.toggle[aria-checked="true"] .track{background:Highlight;border-color:Highlight}
.thumb{background:ButtonText}.toggle[aria-checked="true"] .thumb{background:HighlightText}}
`;

  // One shared constructable sheet; a <style> element is the fallback for old engines.
  let sheet = null;
  try {
    if ('adoptedStyleSheets' in ShadowRoot.prototype) {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
    }
  } catch (_) { sheet = null; }

  // ---------------------------------------------------------------------------
  // Small helpers.

  /** h('tag', {attr: value, text: '...'}, ...children): createElement and textContent only (no HTML parsing). */
  function h(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        const v = attrs[k];
        if (v == null || v === false) continue;
        if (k === 'text') n.textContent = v;
        else n.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of kids) if (c != null && c !== false) n.append(c);
    return n;
  }

  /** A native button; kind is '', 'primary', 'danger' or 'danger solid'. */
  function button(action, label, kind, extra) {
    const parts = kind ? 'button button-' + kind.split(' ')[0] : 'button';
    return h('button', Object.assign({
      type: 'button', 'data-action': action, part: parts, class: kind || null, text: label,
    }, extra));
  }

  /** Wipe any key input before a subtree is thrown away. */
  function clearKeys(root) {
    if (root) for (const i of root.querySelectorAll('input')) i.value = '';
  }

  function locale() {
    const l = document.documentElement.lang;
    try { return l ? Intl.getCanonicalLocales(l)[0] : undefined; } catch (_) { return undefined; }
  }

  /** Relative ("3 days ago") within a week, else a locale date ("Jan 5, 2025"). */
  function formatDate(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return null;
    const loc = locale();
    const full = new Intl.DateTimeFormat(loc, { dateStyle: 'long', timeStyle: 'short' }).format(d);
    const secs = (d.getTime() - Date.now()) / 1000;
    const abs = Math.abs(secs);
    let short;
    if (abs < 60) short = t('justNow');
    else if (secs < 0 && abs < 7 * 86400 && typeof Intl.RelativeTimeFormat === 'function') {
      const rtf = new Intl.RelativeTimeFormat(loc, { numeric: 'auto' });
      if (abs < 3600) short = rtf.format(-Math.round(abs / 60), 'minute');
      else if (abs < 86400) short = rtf.format(-Math.round(abs / 3600), 'hour');
      else short = rtf.format(-Math.round(abs / 86400), 'day');
    } else short = new Intl.DateTimeFormat(loc, { dateStyle: 'medium' }).format(d);
    return { short, full };
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const instances = new Set();

  // ---------------------------------------------------------------------------
  // Shared base: token/api handling, fetch, list states, live region, delegation.
  class PipesBase extends HTMLElement {
    static get observedAttributes() { return ['token', 'api']; }

    constructor() {
      super();
      this._token = null;
      this._providers = [];
      this._status = 'idle'; // idle | loading | ready | error | expired
      this._error = '';
      this._gen = 0; // bumped on reload/expiry; stale responses are dropped
      this._loadedGen = -1;
      this._queued = false;
      this._rows = new Map(); // slug -> {mode, error, busy}; never holds a key
      const root = this.attachShadow({ mode: 'open' });
      if (sheet) root.adoptedStyleSheets = [sheet];
      else root.append(h('style', { text: CSS }));
      this._main = h('div', { class: 'main', tabindex: '-1' });
      this._live = h('div', { role: 'status', part: 'status', class: 'sr', 'data-role': 'live' });
      root.append(this._main, this._live);
      root.addEventListener('click', (e) => this._onClick(e));
      root.addEventListener('submit', (e) => this._onSubmit(e));
      root.addEventListener('keydown', (e) => this._onKeydown(e));
    }

    get token() { return this._token || ''; }
    set token(v) {
      v = v == null || v === '' ? null : String(v);
      if (v === this._token) return;
      this._token = v;
      this.reload();
    }

    attributeChangedCallback(name, oldV, newV) {
      if (oldV === newV) return;
      if (name === 'token') this.token = newV;
      else this.reload();
    }

    connectedCallback() {
      // A token property set before the element was upgraded shadows our accessor.
      if (Object.prototype.hasOwnProperty.call(this, 'token')) {
        const v = this.token;
        delete this.token;
        this.token = v;
      }
      instances.add(this);
      if (this._status === 'loading' && this._loadedGen !== this._gen) this.reload();
      else this.render();
    }

    disconnectedCallback() { instances.delete(this); }

    /** Fetch the provider list again (coalesced within a microtask). */
    reload() {
      this._gen++;
      this._rows.clear();
      this._status = this._token ? 'loading' : 'idle';
      this.render();
      if (this._queued || !this._token) return;
      this._queued = true;
      queueMicrotask(() => {
        this._queued = false;
        if (this.isConnected && this._token && this._status === 'loading') this._load();
      });
    }

    async _load() {
      const gen = this._gen;
      this._loadedGen = gen;
      try {
        const res = await this._api('GET', '/providers');
        if (gen !== this._gen) return;
        this._providers = res && Array.isArray(res.data) ? res.data : [];
        this._status = 'ready';
      } catch (err) {
        if (gen !== this._gen) return; // superseded, or a 401 already showed "expired"
        this._status = 'error';
        this._error = errorText(err);
      }
      this.render();
    }

    _base() {
      const a = this.getAttribute('api');
      let b = SCRIPT_ORIGIN;
      if (a) { try { b = new URL(a, document.baseURI).href; } catch (_) { b = a; } }
      return b.replace(/\/+$/, '') + '/widget/api/v1';
    }

    /**
     * One API call. body is a JSON string (or undefined); the reference to it is
     * dropped as soon as fetch has taken it. Throws ApiError with the answer's code and
     * the server's message (shown only through the pipes-error event; see errorText).
     */
    async _api(method, path, body) {
      const token = this._token;
      const init = {
        method,
        mode: 'cors',
        credentials: 'omit',
        cache: 'no-store',
        headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' },
      };
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = body;
      }
      let res;
      try {
        const pending = fetch(this._base() + path, init);
        init.body = undefined;
        body = undefined;
        res = await pending;
      } catch (_) {
        throw this._fail(0, 'network', 'the request did not reach the server (network, CORS or TLS)');
      }
      let data = null;
      if (res.status !== 204) {
        try { data = await res.json(); } catch (_) { data = null; }
      }
      if (res.ok) return data;
      const code = data && typeof data.code === 'string' ? data.code : '';
      const msg = data && typeof data.message === 'string' ? data.message : '';
      if (res.status === 401 && token === this._token) this._expire(code, msg);
      throw this._fail(res.status, code, msg);
    }

    /** An ApiError, announced to the app (pipes-error) with what the server said. */
    _fail(status, code, message) {
      this.dispatchEvent(new CustomEvent('pipes-error', { bubbles: true, composed: true, detail: { status, code, message } }));
      return new ApiError(status, code, message);
    }

    /** Any 401: show the expired state once and tell the app (it may set el.token). */
    _expire(code, message) {
      if (this._status === 'expired') return;
      this._gen++;
      this._rows.clear();
      this._status = 'expired';
      this._error = message;
      const hadFocus = !!this.shadowRoot.activeElement;
      this.render();
      if (hadFocus) this._main.focus();
      this.dispatchEvent(new CustomEvent('pipes-session-expired', {
        bubbles: true, composed: true, detail: { code, message },
      }));
    }

    /** Whole-widget render from state. Open forms are discarded (their inputs wiped). */
    render() {
      const m = this._main;
      clearKeys(m);
      m.replaceChildren();
      m.removeAttribute('aria-busy');
      switch (this._status) {
        case 'idle':
          return;
        case 'loading':
          m.setAttribute('aria-busy', 'true');
          m.append(h('p', { role: 'status', part: 'status', class: 'loading', 'data-role': 'loading', text: t('loading') }));
          return;
        case 'expired':
          m.append(h('div', { class: 'notice' },
            h('p', { role: 'alert', part: 'error', class: 'error', 'data-role': 'session-expired', text: t('sessionExpired') })));
          return;
        case 'error':
          m.append(h('div', { class: 'notice' },
            h('p', { role: 'alert', part: 'error', class: 'error', 'data-role': 'error', text: this._error || t('genericError') }),
            button('retry', t('retry'))));
          return;
      }
      const list = this._visible();
      if (!list.length) {
        m.append(h('p', { class: 'notice', 'data-role': 'empty', text: t(this._emptyKey) }));
        return;
      }
      const ul = h('ul', { role: 'list', part: 'list', class: 'list' });
      for (const p of list) ul.append(this._renderRow(p));
      m.append(ul);
    }

    _renderRow(p) {
      const nameId = 'name-' + p.slug;
      const li = h('li', { part: 'provider', class: 'provider', 'data-slug': p.slug, 'data-state': p.state });
      li.append(h('div', { class: 'info' },
        h('div', { id: nameId, part: 'name', class: 'name', text: p.name || p.slug }),
        p.description ? h('p', { part: 'description', class: 'desc', text: p.description }) : null,
        this._meta(p)));
      this._body(li, p, this._st(p.slug), nameId);
      const err = this._st(p.slug).error;
      if (err) li.append(h('p', { id: 'err-' + p.slug, role: 'alert', part: 'error', class: 'error row-error', 'data-role': 'error', text: err }));
      return li;
    }

    _meta() { return null; }

    _st(slug) {
      let s = this._rows.get(slug);
      if (!s) this._rows.set(slug, (s = { mode: 'view', error: '', busy: false }));
      return s;
    }

    _find(slug) { return this._providers.find((p) => p.slug === slug); }

    _li(slug) {
      for (const li of this._main.querySelectorAll('li[data-slug]')) if (li.dataset.slug === slug) return li;
      return null;
    }

    /** Re-render one row; then focus the first enabled match of `focus` (selectors). */
    _updateRow(slug, focus) {
      const old = this._li(slug);
      const p = this._find(slug);
      if (!old || !p) return null;
      clearKeys(old);
      const li = this._renderRow(p);
      old.replaceWith(li);
      if (focus) {
        for (const sel of focus) {
          const el = li.querySelector(sel);
          if (el && !el.disabled) { el.focus(); break; }
        }
      }
      return li;
    }

    _replaceProvider(np) {
      if (!np || typeof np !== 'object' || !np.slug) return;
      const i = this._providers.findIndex((p) => p.slug === np.slug);
      if (i >= 0) this._providers[i] = np;
    }

    _announce(msg) { this._live.textContent = msg; }

    _onClick(e) {
      const b = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
      if (!b || b.disabled || b.getAttribute('aria-disabled') === 'true') return;
      const action = b.dataset.action;
      if (action === 'retry') {
        this.reload();
        this._main.focus();
        return;
      }
      const li = b.closest('li[data-slug]');
      if (li) this._action(action, li.dataset.slug, b);
    }

    _onSubmit(e) { e.preventDefault(); }
    _onKeydown() {}
    _action() {}
  }

  // ---------------------------------------------------------------------------
  // <pipes-connections>: the user's own connections.
  class PipesConnections extends PipesBase {
    get _emptyKey() { return 'empty'; }

    _visible() { return this._providers.filter((p) => p && p.enabled === true); }

    _meta(p) {
      const st = p.state;
      const key = st === 'connected' ? 'connected' : st === 'needs_reauthorization' ? 'needsReauthorization' : 'disconnected';
      const meta = h('div', { class: 'meta' },
        h('span', { part: 'state', class: 'state', 'data-role': 'state', 'data-state': st, text: t(key) }));
      if (st !== 'disconnected' && p.api_key_last_4) {
        meta.append(
          h('span', { part: 'last4', class: 'last4', 'data-role': 'last4', 'aria-hidden': 'true', text: t('last4', { last4: p.api_key_last_4 }) }),
          h('span', { class: 'sr', text: t('last4Label', { last4: p.api_key_last_4 }) }));
      }
      const d = st !== 'disconnected' ? formatDate(p.updated_at) : null;
      if (d) meta.append(h('time', { class: 'updated', 'data-role': 'updated', datetime: p.updated_at, title: d.full, text: t('updated', { date: d.short }) }));
      return meta;
    }

    _body(li, p, s, nameId) {
      const name = p.name || p.slug;
      const connected = p.state !== 'disconnected';
      if (s.mode === 'form') { li.append(this._form(p, name, connected, s.error)); return; }
      if (s.mode === 'saving') {
        li.append(h('div', { class: 'pending', 'data-role': 'pending', tabindex: '-1' },
          button('submit', t('saving'), 'primary', { disabled: true, 'aria-busy': 'true' })));
        return;
      }
      if (s.mode === 'confirm' || s.mode === 'removing') {
        const busy = s.mode === 'removing';
        const qid = 'q-' + p.slug;
        li.append(h('div', { class: 'confirm', role: 'group', 'aria-labelledby': qid, 'data-role': busy ? 'pending' : 'confirm', tabindex: busy ? '-1' : null },
          h('p', { id: qid, text: t('confirmDisconnect', { name }) }),
          h('div', { class: 'buttons' },
            button('confirm-disconnect', t(busy ? 'removing' : 'confirmDisconnectButton'), 'danger solid', { disabled: busy, 'aria-busy': busy ? 'true' : null }),
            button('cancel', t('cancel'), '', { disabled: busy }))));
        return;
      }
      const actions = h('div', { class: 'actions' });
      const ctx = { 'aria-describedby': nameId };
      if (p.method === 'oauth') {
        if (p.state !== 'connected') {
          const hid = 'oauth-' + p.slug;
          const off = p.oauth_available !== true;
          const label = p.state === 'needs_reauthorization' ? t('reconnect') : t('connect');
          actions.append(button('oauth-connect', label, 'primary', off ? { disabled: true, 'aria-describedby': hid } : { 'aria-describedby': nameId, 'aria-busy': s.busy ? 'true' : null }));
          if (off) li.append(h('p', { id: hid, class: 'hint', 'data-role': 'oauth-unavailable', text: t('oauthUnavailable', { name }) }));
          if (s.waiting) li.append(h('p', { class: 'hint', role: 'status', 'data-role': 'oauth-waiting', text: t('oauthWaiting', { name }) }));
          if (s.link) {
            li.append(h('p', { class: 'hint', 'data-role': 'oauth-blocked' }, t('oauthPopupBlocked') + ' ',
              h('a', { href: s.link, target: '_blank', rel: 'noopener noreferrer', text: t('oauthContinue', { name }) })));
          }
        }
      } else if (!connected) {
        actions.append(button('connect', t('connect'), 'primary', ctx));
      } else {
        actions.append(button('replace', t('replace'), p.state === 'needs_reauthorization' ? 'primary' : '', ctx));
      }
      if (connected) actions.append(button('disconnect', t('disconnect'), 'danger', ctx));
      li.insertBefore(actions, li.querySelector('.hint'));
    }

    /** The key form. The input has no name and opts out of password managers. */
    _form(p, name, replacing, hasError) {
      const id = 'key-' + p.slug;
      const vid = 'keyhint-' + p.slug;
      return h('form', { part: 'form', class: 'form', 'data-role': 'form', novalidate: true },
        h('label', { for: id, part: 'label', text: t(replacing ? 'newKeyLabel' : 'keyLabel', { name }) }),
        h('input', {
          id, type: 'password', part: 'input', 'data-role': 'key', autocomplete: 'off', autocapitalize: 'off',
          autocorrect: 'off', spellcheck: 'false', 'data-lpignore': 'true', 'data-1p-ignore': 'true',
          'data-bwignore': 'true', 'data-form-type': 'other', required: true,
          'aria-describedby': hasError ? vid + ' err-' + p.slug : vid,
        }),
        h('p', { id: vid, part: 'error', class: 'error', 'data-role': 'validation', role: 'alert', hidden: true }),
        h('div', { class: 'buttons' },
          h('button', { type: 'submit', 'data-action': 'submit', part: 'button button-primary', class: 'primary', text: t('submit') }),
          button('cancel', t('cancel'))));
    }

    _action(action, slug) {
      const p = this._find(slug);
      if (!p) return;
      const s = this._st(slug);
      switch (action) {
        case 'connect':
        case 'replace':
          s.mode = 'form';
          s.error = '';
          this._updateRow(slug, ['[data-role="key"]']);
          break;
        case 'cancel':
          this._cancel(slug);
          break;
        case 'disconnect':
          s.mode = 'confirm';
          s.error = '';
          this._updateRow(slug, ['[data-action="cancel"]']);
          break;
        case 'confirm-disconnect':
          this._disconnect(p, s);
          break;
        case 'oauth-connect':
          this.dispatchEvent(new CustomEvent('pipes-oauth-connect', { bubbles: true, composed: true, detail: { provider: slug } }));
          this._oauthConnect(p, s);
          break;
      }
    }

    /**
     * Opens the provider's sign-in in a popup: opened at once, in the click (so popup
     * blockers allow it), pointed at the provider once the URL arrives, cut off from
     * this page (opener = null). The widget then watches the list until the account is
     * connected; the flow ends on the operator's "you can close this window" page.
     */
    async _oauthConnect(p, s) {
      const slug = p.slug;
      if (s.busy) return;
      s.busy = true;
      s.error = '';
      s.link = '';
      let win = null;
      try { win = window.open('', 'pipes-oauth-' + slug, 'popup,width=600,height=720'); } catch (e) { win = null; }
      if (win) { try { win.opener = null; } catch (e) { /* cross-origin already */ } }
      this._updateRow(slug, ['[data-action="oauth-connect"]']);
      const gen = this._gen;
      try {
        const r = await this._api('POST', '/providers/' + encodeURIComponent(slug) + '/authorize', '{}');
        if (gen !== this._gen) { if (win) win.close(); return; }
        if (win && !win.closed) win.location.href = r.url;
        else s.link = r.url;
        s.waiting = true;
        this._announce(t('oauthWaiting', { name: p.name || slug }));
        this._watchConnection(slug, gen, Date.now());
      } catch (err) {
        if (win) win.close();
        if (gen !== this._gen) return;
        s.error = errorText(err, p.name || slug);
      }
      s.busy = false;
      this._updateRow(slug, ['[data-action="oauth-connect"]']);
    }

    /** Polls the list every 2 s (for 10 minutes at most) until slug is connected. */
    _watchConnection(slug, gen, started) {
      setTimeout(async () => {
        const s = this._st(slug);
        if (gen !== this._gen || !this.isConnected || !s.waiting) return;
        if (Date.now() - started > 600000) { s.waiting = false; this._updateRow(slug); return; }
        try {
          const list = await this._api('GET', '/providers');
          const np = list && Array.isArray(list.data) ? list.data.find((x) => x && x.slug === slug) : null;
          if (gen !== this._gen) return;
          if (np && np.state === 'connected') {
            this._replaceProvider(np);
            s.waiting = false;
            s.link = '';
            this._updateRow(slug, ['[data-action="disconnect"]']);
            this._announce(t('announceConnectedNoKey', { name: np.name || slug }));
            return;
          }
        } catch (err) {
          return; // a 401 already shows the expired session
        }
        this._watchConnection(slug, gen, started);
      }, 2000);
    }

    _cancel(slug) {
      const s = this._st(slug);
      if (s.mode !== 'form' && s.mode !== 'confirm') return false;
      const wasConfirm = s.mode === 'confirm';
      s.mode = 'view';
      s.error = '';
      this._updateRow(slug, wasConfirm
        ? ['[data-action="disconnect"]']
        : ['[data-action="replace"]', '[data-action="connect"]']);
      return true;
    }

    _onKeydown(e) {
      if (e.key !== 'Escape' || !(e.target instanceof Element)) return;
      const li = e.target.closest('li[data-slug]');
      if (li && this._cancel(li.dataset.slug)) {
        e.preventDefault();
        e.stopPropagation();
      }
    }

    _onSubmit(e) {
      e.preventDefault();
      const form = e.target;
      const li = form instanceof Element ? form.closest('li[data-slug]') : null;
      const input = li && form.querySelector('[data-role="key"]');
      if (input) this._submitKey(li.dataset.slug, form, input);
    }

    async _submitKey(slug, form, input) {
      const p = this._find(slug);
      const s = this._st(slug);
      if (!p || s.mode !== 'form') return;
      // The key lives only in this local until the request body is built.
      let key = input.value.trim();
      input.value = '';
      if (!key) {
        const v = form.querySelector('[data-role="validation"]');
        v.textContent = t('keyRequired');
        v.hidden = false;
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return;
      }
      form.remove();
      s.mode = 'saving';
      s.error = '';
      const li = this._updateRow(slug);
      const pend = li && li.querySelector('[data-role="pending"]');
      if (pend) pend.focus();
      const gen = this._gen;
      let body = JSON.stringify({ secret: key });
      key = null;
      const req = this._api('PUT', '/providers/' + encodeURIComponent(slug) + '/api-key', body);
      body = null;
      try {
        const np = await req;
        if (gen !== this._gen) return;
        this._replaceProvider(np);
        s.mode = 'view';
        const cur = this._find(slug);
        this._updateRow(slug, ['[data-action="replace"]', '[data-action="connect"]', '[data-action="disconnect"]']);
        const name = cur.name || slug;
        this._announce(cur.api_key_last_4
          ? t('announceConnected', { name, last4: cur.api_key_last_4 })
          : t('announceConnectedNoKey', { name }));
      } catch (err) {
        if (gen !== this._gen) return;
        // Reopen an empty form with what went wrong so the user can try again.
        s.mode = 'form';
        s.error = errorText(err, p.name || slug, true);
        this._updateRow(slug, ['[data-role="key"]']);
      }
    }

    async _disconnect(p, s) {
      const slug = p.slug;
      if (s.mode !== 'confirm') return;
      s.mode = 'removing';
      const li = this._updateRow(slug);
      const pend = li && li.querySelector('[data-role="pending"]');
      if (pend) pend.focus();
      const gen = this._gen;
      try {
        await this._api('DELETE', '/providers/' + encodeURIComponent(slug) + '/connection');
        if (gen !== this._gen) return;
        const cur = this._find(slug);
        cur.state = 'disconnected';
        delete cur.api_key_last_4;
        delete cur.updated_at;
        s.mode = 'view';
        s.error = '';
        this._updateRow(slug, ['[data-action="connect"]', '[data-action="oauth-connect"]']);
        this._announce(t('announceDisconnected', { name: cur.name || slug }));
      } catch (err) {
        if (gen !== this._gen) return;
        s.mode = 'view';
        s.error = errorText(err, p.name || slug);
        this._updateRow(slug, ['[data-action="disconnect"]']);
      }
    }
  }

  // ---------------------------------------------------------------------------
  // <pipes-admin>: every provider with an "enabled for your organization" switch.
  class PipesAdmin extends PipesBase {
    get _emptyKey() { return 'adminEmpty'; }

    _visible() { return this._providers.filter(Boolean); }

    _body(li, p, s, nameId) {
      const on = p.enabled === true;
      li.append(h('div', { class: 'actions' },
        h('button', {
          type: 'button', role: 'switch', 'aria-checked': on ? 'true' : 'false', 'data-action': 'toggle',
          part: 'toggle', class: 'toggle', 'aria-describedby': nameId,
          'aria-busy': s.busy ? 'true' : null, 'aria-disabled': s.busy ? 'true' : null,
        },
        h('span', { class: 'track', 'aria-hidden': 'true' }, h('span', { class: 'thumb' })),
        h('span', { class: 'label', text: t('adminToggle') }))));
    }

    async _action(action, slug, btn) {
      const p = this._find(slug);
      const s = this._st(slug);
      if (action !== 'toggle' || !p || s.busy) return;
      // Busy in place (aria-disabled, not disabled) so keyboard focus stays on the switch.
      s.busy = true;
      btn.setAttribute('aria-busy', 'true');
      btn.setAttribute('aria-disabled', 'true');
      const gen = this._gen;
      const enabled = p.enabled !== true;
      try {
        const np = await this._api('PUT', '/providers/' + encodeURIComponent(slug) + '/organization',
          JSON.stringify({ enabled }));
        if (gen !== this._gen) return;
        if (np && np.slug) this._replaceProvider(np);
        else p.enabled = enabled;
        s.error = '';
        const cur = this._find(slug);
        this._announce(t(cur.enabled ? 'announceEnabled' : 'announceDisabled', { name: cur.name || slug }));
      } catch (err) {
        if (gen !== this._gen) return;
        s.error = errorText(err, p.name || slug);
      }
      s.busy = false;
      this._updateRow(slug, ['[data-action="toggle"]']);
    }
  }

  // ---------------------------------------------------------------------------
  // Public object: merge strings an app set before load, then define the elements.
  const prev = window.PipesWidget && typeof window.PipesWidget === 'object' ? window.PipesWidget : {};
  if (prev.strings && typeof prev.strings === 'object') {
    for (const k of Object.keys(prev.strings)) if (typeof prev.strings[k] === 'string') strings[k] = prev.strings[k];
  }
  PW = Object.assign(prev, {
    version: VERSION,
    strings,
    t,
    /** Re-render every mounted widget (e.g. after changing strings). Open forms close. */
    rerender() { for (const el of instances) el.render(); },
  });
  window.PipesWidget = PW;

  customElements.define(TAGS[0], PipesConnections);
  customElements.define(TAGS[1], PipesAdmin);
})();
