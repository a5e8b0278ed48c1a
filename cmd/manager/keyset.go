package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

const keysetUsage = `usage: manager keyset rotate|prune|status [--namespace NS] [--keyset-secret NAME]

  rotate   add a new AES-256-GCM key and make it primary; running managers re-encrypt
           every stored credential under it in the background (watch
           pipes_credentials_on_old_keys or 'keyset status' reach 0)
  prune    remove old keys that no stored credential uses any more
  status   show the keys and how many credentials each one wraps`

// runKeyset manages the key-encryption keyset Secret through the API server.
func runKeyset(args []string) error {
	if len(args) == 0 {
		return errors.New(keysetUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("manager keyset "+verb, flag.ContinueOnError)
	keysetFlag := keysetFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := adminClient()
	if err != nil {
		return err
	}
	ctx := context.Background()
	key := keysetFlag()
	inUse, err := credential.KeyUsage(ctx, c)
	if err != nil {
		return err
	}
	switch verb {
	case "status":
		var secret corev1.Secret
		if err := c.Get(ctx, key, &secret); err != nil {
			return fmt.Errorf("reading keyset Secret %s: %w", key, err)
		}
		ks, err := keyring.FromSecret(&secret)
		if err != nil {
			return err
		}
		fmt.Printf("keyset %s: primary key %d\n", key, ks.PrimaryKeyID())
		for _, id := range ks.KeyIDs() {
			role := "old"
			if id == ks.PrimaryKeyID() {
				role = "primary"
			}
			fmt.Printf("  key %-12d %-8s wraps %d credential(s)\n", id, role, inUse[id])
		}
		stored, stale := inUse.Stale(ks.PrimaryKeyID())
		fmt.Printf("%d credential(s) stored, %d still on old keys\n", stored, stale)
	case "rotate":
		oldID, newID, err := keyring.RotateSecret(ctx, c, key)
		if err != nil {
			return err
		}
		fmt.Printf("new primary key %d (was %d); the manager re-encrypts stored credentials in the background\n", newID, oldID)
	case "prune":
		removed, err := keyring.PruneSecret(ctx, c, key, credentialUsage(c))
		if err != nil {
			return err
		}
		if len(removed) == 0 {
			fmt.Println("nothing to prune: every old key still wraps credentials; wait for re-encryption to finish ('keyset status')")
			return nil
		}
		fmt.Printf("removed key(s) %v\n", removed)
	default:
		return errors.New(keysetUsage)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// credentialUsage counts stored credentials per key id, from their ciphertexts, through c
// (the API server, never a cache).
func credentialUsage(c client.Reader) keyring.Usage {
	return func(ctx context.Context) (map[uint32]int, error) { return credential.KeyUsage(ctx, c) }
}

// keysetFlags binds the flags naming the keyset Secret; the returned function reads them
// once parsed.
func keysetFlags(fs *flag.FlagSet) func() types.NamespacedName {
	ns := fs.String("namespace", envOr("POD_NAMESPACE", "pipes-system"), "the operator's namespace (holding the keyset)")
	name := fs.String("keyset-secret", "pipes-keyset", "Secret holding the keyset")
	return func() types.NamespacedName { return types.NamespacedName{Namespace: *ns, Name: *name} }
}

// adminClient talks to the API server (never a cache) with the kubeconfig in use, or the
// in-cluster identity when run in the manager's pod.
func adminClient() (client.Client, error) {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: operator.Scheme()})
}
