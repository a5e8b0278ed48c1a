// Package apiclienttest owns test doubles for the backend API as the client sees it.
package apiclienttest

import (
	"bytes"
	"io"
	"net/http"
)

// Canned is an http.RoundTripper that answers every request with the same status,
// Retry-After and JSON body, whatever the backend API would say: for tests and fuzz
// targets of what the client and the sidecar do with an answer.
type Canned struct {
	Status     int
	RetryAfter string
	Body       []byte
}

// RoundTrip implements http.RoundTripper.
func (c Canned) RoundTrip(*http.Request) (*http.Response, error) {
	h := http.Header{"Content-Type": {"application/json"}}
	if c.RetryAfter != "" {
		h.Set("Retry-After", c.RetryAfter)
	}
	return &http.Response{StatusCode: c.Status, Header: h, Body: io.NopCloser(bytes.NewReader(c.Body))}, nil
}
