package testenv

import (
	"context"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// ServiceAccountToken creates the ServiceAccount ns/name (if missing), binds it to
// clusterRole in bindNamespace (no binding when clusterRole is ""), and mints a one-hour
// token for it with the TokenRequest API, for audiences (the API server's when none).
func (e *Env) ServiceAccountToken(ctx context.Context, ns, name, clusterRole, bindNamespace string, audiences ...string) (string, error) {
	err := e.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	if clusterRole != "" {
		role := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterRole}
		if err := e.Bind(ctx, bindNamespace, name+"-"+clusterRole, role, ns, name); err != nil {
			return "", err
		}
	}
	return e.Token(ctx, ns, name, audiences...)
}

// Bind creates a RoleBinding in ns granting role to the ServiceAccount saNamespace/sa.
func (e *Env) Bind(ctx context.Context, ns, name string, role rbacv1.RoleRef, saNamespace, sa string) error {
	return e.Client.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    role,
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: saNamespace, Name: sa}},
	})
}

// Token mints a one-hour token for the ServiceAccount ns/name.
func (e *Env) Token(ctx context.Context, ns, name string, audiences ...string) (string, error) {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return "", err
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}
