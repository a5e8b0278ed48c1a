package credential

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// RecordStored emits the event for a credential just stored: Connected when none was
// stored before (replaced false), Rotated when it replaced one. via says who stored it
// ("" for the reconciler).
func RecordStored(rec events.EventRecorder, ca *pipesv1.ConnectedAccount, what string, stored Stored, replaced bool, via string) {
	detail := fmt.Sprintf("version %d", stored.Version)
	if stored.Last4 != "" {
		detail += ", ending …" + stored.Last4
	}
	if !replaced {
		rec.Eventf(ca, nil, corev1.EventTypeNormal, pipesv1.EventConnected, pipesv1.ActionConnect, "%s stored encrypted%s (%s)", what, via, detail)
		return
	}
	rec.Eventf(ca, nil, corev1.EventTypeNormal, pipesv1.EventRotated, pipesv1.ActionRotate, "%s replaced%s (%s); the previous one is no longer stored", what, via, detail)
}
