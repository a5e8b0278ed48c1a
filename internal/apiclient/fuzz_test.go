package apiclient

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pipes-dev/pipes-operator/internal/apiclient/apiclienttest"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// FuzzResponse feeds the client arbitrary answers (status, Retry-After, body), as the
// vend sidecar reads them: no panic; a non-2xx is an *Error with that status, a code and
// a short valid UTF-8 message, and a Retry-After that is not negative.
func FuzzResponse(f *testing.F) {
	for _, seed := range []struct {
		status     int
		retryAfter string
		body       string
	}{
		{200, "", `{"etag":"e","changed":true,"credentials":[{"provider":"openai","user_id":"u","active":true,"credential":{"object":"credential","auth_method":"api_key","value":"sk","version":1}}]}`},
		{200, "", `{"etag":"e","changed":true,"credentials":[{"provider":"openai","user_id":"u","rotated_at":"not a time"}]}`},
		{200, "", `{"active":true,"credential":{"version":99999999999999999999999}}`},
		{200, "", `{"object":"list","data":[{"slug":1}],"list_metadata":{"after":null}}`},
		{200, "", strings.Repeat("[", 100_000)},
		{200, "", "\xff\xfe"},
		{200, "", ""},
		{204, "", "{}"},
		{400, "", `{"code":"invalid_request","message":"user_id: Required value"}`},
		{403, "", ``},
		{403, "", `{"code":"forbidden"}`},
		{429, "2", `{"code":"rate_limited","message":"slow down"}`},
		{429, "-1", ``},
		{429, "9223372036854775807", ``},
		{502, "", "<html>bad gateway</html>"},
		{503, "", strings.Repeat("\xc3", 5000)},
		{301, "", ""},
	} {
		f.Add(seed.status, seed.retryAfter, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		c := New("https://pipes.example.com", WithToken("t"), WithNamespace("ns"),
			WithHTTPClient(&http.Client{Transport: apiclienttest.Canned{Status: status, RetryAfter: retryAfter, Body: body}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}))
		ctx := context.Background()
		calls := []func() error{
			func() error {
				_, err := c.Watch(ctx, wire.WatchRequest{Credentials: []wire.CredentialRef{{Provider: "openai", UserID: "u"}}})
				return err
			},
			func() error { _, err := c.Credentials(ctx, "openai", wire.CredentialsRequest{UserID: "u"}); return err },
			func() error { _, err := c.DataProviders(ctx, "u", "", Page{Limit: 5}); return err },
			func() error { _, err := c.Authorize(ctx, "github", wire.AuthorizeRequest{UserID: "u"}); return err },
			func() error { return c.Disconnect(ctx, "u", "openai", "") },
		}
		for _, call := range calls {
			err := call()
			if status < 300 && status >= 200 {
				continue // decoded, or a decoding error
			}
			var e *Error
			if status >= 300 && !errors.As(err, &e) {
				if status < 400 && err != nil {
					continue // a redirect the client did not follow
				}
				t.Fatalf("status %d: err = %v, want an *Error", status, err)
			}
			if e == nil {
				continue
			}
			if e.Status != status || e.Code == "" || e.Message == "" || len(e.Message) > maxErrorMessage+len("…") || !utf8.ValidString(e.Message) || !utf8.ValidString(e.Code) || e.RetryAfter < 0 {
				t.Fatalf("status %d: %#v", status, e)
			}
		}
	})
}
