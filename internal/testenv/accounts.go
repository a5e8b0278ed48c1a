package testenv

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/pipes-dev/pipes-operator/internal/devenv"
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

// ManagerServiceAccount is the manager's ServiceAccount as config/default deploys it.
const ManagerServiceAccount = "pipes-controller-manager"

// ManagerKubeconfig gives a manager process the identity a cluster gives it: it creates
// the ServiceAccount and RBAC objects of config/default (rendered as `kubectl apply -k`
// renders them: ClusterRoles, bindings, the leader-election Role) and returns a
// kubeconfig with a token of that ServiceAccount, valid for validFor. Suites running
// the manager binary use it so that authentication and authorization cost what they cost
// in a cluster (a bearer token, RBAC), and so that a permission missing from
// config/rbac fails them.
func (e *Env) ManagerKubeconfig(ctx context.Context, validFor time.Duration) ([]byte, error) {
	root, err := devenv.Root()
	if err != nil {
		return nil, err
	}
	objects, err := devenv.Kustomize(root, "config/default")
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(maps.Keys(objects))
	for _, name := range names {
		switch u := objects[name]; u.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := e.Client.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("%s from config/default: %w", name, err)
			}
		}
	}
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, err
	}
	tr, err := cs.CoreV1().ServiceAccounts(OperatorNamespace).CreateToken(ctx, ManagerServiceAccount, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(validFor.Seconds()))},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.Config.CAData}
	cfg.AuthInfos["manager"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["manager"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "manager"}
	cfg.CurrentContext = "manager"
	return clientcmd.Write(*cfg)
}
