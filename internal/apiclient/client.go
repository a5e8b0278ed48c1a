// Package apiclient is a small typed client for the backend API, used by the tests, the
// vend sidecar and the kubectl plugin. Like package wire it depends only on the
// standard library.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// Client calls one backend API.
type Client struct {
	baseURL   string
	http      *http.Client
	token     func() (string, error)
	namespace string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (e.g. one trusting the API's CA).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithToken sets a fixed bearer token.
func WithToken(token string) Option {
	return func(c *Client) { c.token = func() (string, error) { return token, nil } }
}

// WithTokenFile reads the bearer token from path on every request, so a projected
// ServiceAccount token that kubelet refreshes is always current.
func WithTokenFile(path string) Option {
	return func(c *Client) {
		c.token = func() (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("reading token file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
}

// WithNamespace targets /namespaces/{namespace}/… instead of the caller's own namespace.
func WithNamespace(ns string) Option { return func(c *Client) { c.namespace = ns } }

// New returns a client for the API at baseURL (e.g. https://pipes-api.pipes-system.svc).
func New(baseURL string, opts ...Option) *Client {
	c := &Client{baseURL: strings.TrimSuffix(baseURL, "/"), http: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// HTTPClientWithCA returns an HTTP client trusting only the PEM CA bundle at caFile.
// Each new TLS connection is verified against the file's current content (re-read when
// the connection is made, not per request), so a long-running client follows a CA
// rotation (a mounted ConfigMap the kubelet updated) without a restart, while
// established connections keep being reused.
func HTTPClientWithCA(caFile string, timeout time.Duration) (*http.Client, error) {
	roots := &caBundleFile{file: caFile}
	if _, err := roots.pool(); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Not skipped: VerifyConnection verifies the chain and the name, against the
		// bundle in the file at the time of the handshake, which RootCAs cannot follow.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection:   roots.verify,
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// HTTPClientWithCAData returns an HTTP client trusting only the PEM CA bundle given.
func HTTPClientWithCAData(pem []byte, timeout time.Duration) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("holds no PEM certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// caBundleFile is the CA bundle currently in a file. A file that cannot be read or
// parsed keeps the last good bundle, and handshakes that then fail say so.
type caBundleFile struct {
	file string

	mu   sync.Mutex
	pem  []byte
	last *x509.CertPool
}

// pool returns the bundle to trust, and why the file could not be reloaded (if so).
func (b *caBundleFile) pool() (*x509.CertPool, error) {
	pem, err := os.ReadFile(b.file)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		return b.last, fmt.Errorf("reading CA bundle: %w", err)
	}
	if b.last != nil && bytes.Equal(pem, b.pem) {
		return b.last, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return b.last, fmt.Errorf("CA bundle %s: holds no PEM certificate", b.file)
	}
	b.pem, b.last = pem, pool
	return pool, nil
}

// verify is the TLS verification RootCAs would do, against the current bundle.
func (b *caBundleFile) verify(cs tls.ConnectionState) error {
	pool, reloadErr := b.pool()
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no certificate")
	}
	opts := x509.VerifyOptions{DNSName: cs.ServerName, Roots: pool, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	if err != nil && reloadErr != nil {
		err = fmt.Errorf("%w (still trusting the last good CA bundle: %v)", err, reloadErr)
	}
	return err
}

// Error is a non-2xx answer.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("backend API: %d %s: %s", e.Status, e.Code, e.Message)
}

// An answer's error is passed on (the sidecar serves it, readiness reports it), so
// what a server, or something in its place, sends is bounded and made valid UTF-8.
const (
	maxErrorMessage = 1024
	maxRetryAfter   = 24 * 60 * 60
)

// shorten trims s, makes it valid UTF-8 and cuts it to at most n bytes.
func shorten(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	if c.namespace != "" {
		path = "/namespaces/" + url.PathEscape(c.namespace) + path
	}
	u := c.baseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != nil {
		tok, err := c.token()
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		var er wire.ErrorResponse
		if json.Unmarshal(data, &er) == nil && er.Code != "" {
			e.Code, e.Message = er.Code, er.Message
		} else {
			e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), string(data)
		}
		e.Code, e.Message = shorten(e.Code, 64), shorten(e.Message, maxErrorMessage)
		if e.Message == "" {
			e.Message = "the backend API answered " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode) + " without a message"
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 && s <= maxRetryAfter {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	return json.Unmarshal(data, out)
}

// UpsertAPIKey installs or rotates a user's API key.
func (c *Client) UpsertAPIKey(ctx context.Context, slug string, req wire.UpsertAPIKeyRequest) (*wire.ConnectedAccount, error) {
	var out wire.ConnectedAccount
	return &out, c.do(ctx, http.MethodPut, "/data-integrations/"+url.PathEscape(slug)+"/api-key", nil, req, &out)
}

// Credentials vends a user's credential.
func (c *Client) Credentials(ctx context.Context, slug string, req wire.CredentialsRequest) (*wire.CredentialsResponse, error) {
	var out wire.CredentialsResponse
	return &out, c.do(ctx, http.MethodPost, "/data-integrations/"+url.PathEscape(slug)+"/credentials", nil, req, &out)
}

// Token vends a user's OAuth access token.
func (c *Client) Token(ctx context.Context, slug string, req wire.CredentialsRequest) (*wire.CredentialsResponse, error) {
	var out wire.CredentialsResponse
	return &out, c.do(ctx, http.MethodPost, "/data-integrations/"+url.PathEscape(slug)+"/token", nil, req, &out)
}

// Page selects a page of a list.
type Page struct {
	Limit int
	After string
}

func (p Page) query(q url.Values) url.Values {
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.After != "" {
		q.Set("after", p.After)
	}
	return q
}

func orgQuery(org string) url.Values {
	q := url.Values{}
	if org != "" {
		q.Set("organization_id", org)
	}
	return q
}

// DataProviders lists the providers available to a user, with their connected accounts.
func (c *Client) DataProviders(ctx context.Context, userID, orgID string, p Page) (*wire.List[wire.DataProvider], error) {
	var out wire.List[wire.DataProvider]
	return &out, c.do(ctx, http.MethodGet, "/user_management/users/"+url.PathEscape(userID)+"/data_providers", p.query(orgQuery(orgID)), nil, &out)
}

// ConnectedAccount returns a user's connected account for a provider.
func (c *Client) ConnectedAccount(ctx context.Context, userID, slug, orgID string) (*wire.ConnectedAccount, error) {
	var out wire.ConnectedAccount
	return &out, c.do(ctx, http.MethodGet, "/user_management/users/"+url.PathEscape(userID)+"/connected_accounts/"+url.PathEscape(slug), orgQuery(orgID), nil, &out)
}

// ImportConnectedAccount creates a user's OAuth account with tokens obtained elsewhere
// (a migration).
func (c *Client) ImportConnectedAccount(ctx context.Context, userID, slug string, req wire.ImportConnectedAccountRequest) (*wire.ConnectedAccount, error) {
	var out wire.ConnectedAccount
	return &out, c.do(ctx, http.MethodPost, "/user_management/users/"+url.PathEscape(userID)+"/connected_accounts/"+url.PathEscape(slug), nil, req, &out)
}

// Disconnect removes a user's connected account and its stored credential.
func (c *Client) Disconnect(ctx context.Context, userID, slug, orgID string) error {
	return c.do(ctx, http.MethodDelete, "/user_management/users/"+url.PathEscape(userID)+"/connected_accounts/"+url.PathEscape(slug), orgQuery(orgID), nil, nil)
}

// OrganizationConfigurations lists an organization's settings for every provider.
func (c *Client) OrganizationConfigurations(ctx context.Context, orgID string, p Page) (*wire.List[wire.DataIntegrationConfiguration], error) {
	var out wire.List[wire.DataIntegrationConfiguration]
	return &out, c.do(ctx, http.MethodGet, "/organizations/"+url.PathEscape(orgID)+"/data_integration_configurations", p.query(url.Values{}), nil, &out)
}

// PutOrganizationConfiguration enables or disables a provider for an organization.
func (c *Client) PutOrganizationConfiguration(ctx context.Context, orgID, slug string, req wire.PutDataIntegrationConfigurationRequest) (*wire.DataIntegrationConfiguration, error) {
	var out wire.DataIntegrationConfiguration
	return &out, c.do(ctx, http.MethodPut, "/organizations/"+url.PathEscape(orgID)+"/data_integration_configurations/"+url.PathEscape(slug), nil, req, &out)
}

// Authorize returns the URL that connects a user to an OAuth provider (docs/oauth.md).
func (c *Client) Authorize(ctx context.Context, slug string, req wire.AuthorizeRequest) (string, error) {
	var out wire.AuthorizeResponse
	err := c.do(ctx, http.MethodPost, "/data-integrations/"+url.PathEscape(slug)+"/authorize", nil, req, &out)
	return out.URL, err
}

// WidgetToken issues a widget token for one user (docs/widget.md), as the hosted SDKs'
// widgets.getToken does.
func (c *Client) WidgetToken(ctx context.Context, req wire.WidgetTokenRequest) (string, error) {
	var out wire.WidgetTokenResponse
	err := c.do(ctx, http.MethodPost, "/widgets/token", nil, req, &out)
	return out.Token, err
}

// Watch long-polls for changes to credentials (see wire.WatchRequest). The HTTP client's
// timeout must exceed the request's timeout.
func (c *Client) Watch(ctx context.Context, req wire.WatchRequest) (*wire.WatchResponse, error) {
	var out wire.WatchResponse
	return &out, c.do(ctx, http.MethodPost, "/credentials/watch", nil, req, &out)
}
