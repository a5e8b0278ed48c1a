package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

const keysetUsage = `usage: manager keyset rotate|prune|status [--sealing] [--namespace NS] [--keyset-secret NAME]

  rotate   add a new key and make it primary. Key-encryption keyset: running managers
           re-encrypt every stored credential under it in the background (watch
           pipes_credentials_on_old_keys or 'keyset status' reach 0). Sealing keyset
           (--sealing): the published public keyset seals with it from then on; values
           sealed with old keys keep opening until pruned
  prune    remove old keys that nothing uses any more: no stored credential, or with
           --sealing no ConnectedAccount's spec.apiKey.sealed (reseal those first)
  status   show the keys and how many credentials (sealed values) each one wraps

  --sealing   act on the sealing keyset (Secret pipes-sealing-keyset) instead of the
              key-encryption keyset (Secret pipes-keyset)`

// runKeyset manages the key-encryption or sealing keyset Secret through the API server;
// the logic is package keyadmin's, shared with the kubectl plugin.
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
	key, sealingKeyset := keysetFlag()
	status, rotate, prune := keyadmin.KeysetStatus, keyadmin.RotateKeyset, keyadmin.PruneKeyset
	if sealingKeyset {
		status, rotate, prune = keyadmin.SealingKeysetStatus, keyadmin.RotateSealingKeyset, keyadmin.PruneSealingKeyset
	}
	switch verb {
	case "status":
		s, err := status(ctx, c, key)
		if err != nil {
			return err
		}
		return s.Write(os.Stdout)
	case "rotate":
		oldID, newID, err := rotate(ctx, c, key)
		if err != nil {
			return err
		}
		if sealingKeyset {
			fmt.Printf("new primary sealing key %d (was %d); the manager publishes the new public keyset: reseal values with it, apply them, then prune\n", newID, oldID)
			return nil
		}
		fmt.Printf("new primary key %d (was %d); the manager re-encrypts stored credentials in the background\n", newID, oldID)
	case "prune":
		removed, err := prune(ctx, c, key)
		if err != nil {
			return err
		}
		if len(removed) == 0 {
			if sealingKeyset {
				fmt.Println("nothing to prune: every old sealing key still seals a value in some ConnectedAccount's spec.apiKey.sealed; reseal those ('keyset status --sealing')")
				return nil
			}
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

// keysetFlags binds the flags naming the keyset Secret; the returned function reads them
// once parsed, and whether --sealing was given.
func keysetFlags(fs *flag.FlagSet) func() (types.NamespacedName, bool) {
	ns := fs.String("namespace", envOr("POD_NAMESPACE", "pipes-system"), "the operator's namespace (holding the keyset)")
	name := fs.String("keyset-secret", "", "Secret holding the keyset (default pipes-keyset, or pipes-sealing-keyset with --sealing)")
	sealingKeyset := fs.Bool("sealing", false, "act on the sealing keyset (spec.apiKey.sealed) instead of the key-encryption keyset")
	return func() (types.NamespacedName, bool) {
		n := *name
		if n == "" {
			n = "pipes-keyset"
			if *sealingKeyset {
				n = pipesv1.SealingKeysetSecret
			}
		}
		return types.NamespacedName{Namespace: *ns, Name: n}, *sealingKeyset
	}
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
