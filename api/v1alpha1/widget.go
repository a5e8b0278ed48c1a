package v1alpha1

// Widget sessions: the keyset that signs widget tokens lives in the operator's namespace.
const (
	// WidgetKeysetSecret is the Secret holding the widget token signing keyset (data key
	// keyset.json), created on first start and rotated by the leader. Losing it only ends
	// open widget sessions: nothing stored depends on it, so it needs no backup.
	WidgetKeysetSecret = "pipes-widget-keyset"
	// ComponentWidgetKeyset is LabelComponent's value on the widget keyset Secret.
	ComponentWidgetKeyset = "widget-keyset"
	// AnnotationKeyRotatedAt records (RFC 3339) when the widget keyset's primary key was
	// made: the leader rotates it once it is older than the rotation period.
	AnnotationKeyRotatedAt = "pipes.dev/key-rotated-at"
)
