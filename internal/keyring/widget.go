package keyring

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/widgettoken"
)

// WidgetSigning is the widget token signing keyset (Secret pipes-widget-keyset). Nothing
// stored depends on it: a lost one is simply made again, ending open widget sessions.
var WidgetSigning = Kind[*widgettoken.Keyset]{
	What: "widget signing keyset", Component: pipesv1.ComponentWidgetKeyset, Protects: "it signs widget sessions only, so it needs no backup: a lost one is made again, ending open sessions", Sealed: "widget token",
	Parse: widgettoken.ParseKeyset, New: widgettoken.NewKeyset,
	Dependent: func(context.Context, client.Reader) (string, error) { return "", nil },
}
