package operator

import (
	"net/http"
	"strings"
	"testing"

	"github.com/pipes-dev/pipes-operator/internal/backendapi"
	"github.com/pipes-dev/pipes-operator/internal/public"
)

// A replica is not ready, so takes no Service traffic, until its backend API serves
// (which it does once the caches have synced).
func TestReadyzWaitsForTheBackendAPI(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "/readyz", nil)
	o := Options{DisableWebhooks: true}
	if err := readyz(nil, o, nil, nil)(req); err != nil {
		t.Errorf("without a backend API, ready: %v", err)
	}
	err := readyz(nil, o, &backendapi.Server{}, nil)(req)
	if err == nil || !strings.Contains(err.Error(), "backend API is not serving yet") {
		t.Errorf("with a backend API not yet listening: %v, want not ready", err)
	}
	err = readyz(nil, o, nil, &public.Server{})(req)
	if err == nil || !strings.Contains(err.Error(), "public listener (widget) is not serving yet") {
		t.Errorf("with a public listener not yet listening: %v, want not ready", err)
	}
}
