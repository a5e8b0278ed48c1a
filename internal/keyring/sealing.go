package keyring

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
)

// Sealing is the sealing keyset (Secret pipes-sealing-keyset): the private half of
// what `kubectl pipes seal` seals spec.apiKey.sealed values with.
var Sealing = Kind[*sealing.Keyset]{
	What: "sealing keyset", Component: pipesv1.ComponentSealingKeyset, BackupFile: "pipes-sealing-keyset.json",
	Protects: "no sealed API key in Git (spec.apiKey.sealed) opens without it", Sealed: "sealed value",
	Parse: sealing.ParseKeyset, New: sealing.NewKeyset,
	Dependent: func(ctx context.Context, r client.Reader) (string, error) {
		usage, example, err := sealedUsage(ctx, r)
		if err != nil || len(usage) == 0 {
			return "", err
		}
		return "ConnectedAccounts with spec.apiKey.sealed do (for example " + example + ")", nil
	},
	Discard: "to start over with a new sealing keyset on purpose, remove spec.apiKey.sealed from those accounts (their stored keys stay) and reseal them with the new public keyset once the operator runs",
}

// SealedUsage counts the values in every ConnectedAccount's spec.apiKey.sealed per
// sealing key id, read from each value itself; values that are not sealed values count
// under id 0, which no Tink key has. r should read from the API server.
func SealedUsage(ctx context.Context, r client.Reader) (map[uint32]int, error) {
	usage, _, err := sealedUsage(ctx, r)
	return usage, err
}

func sealedUsage(ctx context.Context, r client.Reader) (map[uint32]int, string, error) {
	var list pipesv1.ConnectedAccountList
	if err := r.List(ctx, &list); err != nil {
		return nil, "", err
	}
	usage := map[uint32]int{}
	example := ""
	for i := range list.Items {
		ca := &list.Items[i]
		if ca.Spec.APIKey == nil || ca.Spec.APIKey.Sealed == "" {
			continue
		}
		id, _ := sealing.KeyIDOf(ca.Spec.APIKey.Sealed)
		usage[id]++
		if example == "" {
			example = "ConnectedAccount " + ca.Namespace + "/" + ca.Name
		}
	}
	return usage, example, nil
}

// PublicKeysetConfigMap builds the ConfigMap publishing ks's public half; existing (may
// be nil) supplies identity and resourceVersion for an update.
func PublicKeysetConfigMap(namespace string, ks *sealing.Keyset, existing *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	pub, err := ks.PublicKeysetJSON()
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	if existing != nil {
		cm = existing.DeepCopy()
	}
	cm.Namespace, cm.Name = namespace, pipesv1.SealingPublicKeysetConfigMap
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[pipesv1.LabelManagedBy] = pipesv1.ManagedByValue
	cm.Labels[pipesv1.LabelComponent] = pipesv1.ComponentSealingPublicKeyset
	cm.Data = map[string]string{pipesv1.SealingPublicKeysetKey: string(pub)}
	return cm, nil
}

// PublishPublicKeyset creates or updates the public-keyset ConfigMap in namespace to
// hold ks's public half, and reports whether it wrote. It reads through r (the manager's
// cache holds managed ConfigMaps) and writes through c; a conflict is returned, to retry.
func PublishPublicKeyset(ctx context.Context, r client.Reader, c client.Writer, namespace string, ks *sealing.Keyset) (bool, error) {
	var existing corev1.ConfigMap
	err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: pipesv1.SealingPublicKeysetConfigMap}, &existing)
	switch {
	case apierrors.IsNotFound(err):
		cm, err := PublicKeysetConfigMap(namespace, ks, nil)
		if err != nil {
			return false, err
		}
		if err := c.Create(ctx, cm); err != nil {
			return false, fmt.Errorf("publishing the public sealing keyset: %w", err)
		}
		return true, nil
	case err != nil:
		return false, err
	}
	cm, err := PublicKeysetConfigMap(namespace, ks, &existing)
	if err != nil {
		return false, err
	}
	if bytes.Equal([]byte(existing.Data[pipesv1.SealingPublicKeysetKey]), []byte(cm.Data[pipesv1.SealingPublicKeysetKey])) && len(existing.Data) == 1 &&
		existing.Labels[pipesv1.LabelComponent] == pipesv1.ComponentSealingPublicKeyset {
		return false, nil
	}
	if err := c.Update(ctx, cm); err != nil {
		return false, fmt.Errorf("publishing the public sealing keyset: %w", err)
	}
	return true, nil
}
