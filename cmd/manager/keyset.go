package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/keysetcmd"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

const keysetUsage = `usage: manager keyset status|rotate|prune|backup [--namespace NS] [--keyset-secret NAME] [--file FILE]
(kubectl pipes keyset does the same from your machine: docs/kubectl-plugin.md)

` + keysetcmd.Usage

// runKeyset manages the key-encryption keyset Secret through the API server.
func runKeyset(args []string) error {
	if len(args) == 0 {
		return errors.New(keysetUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("manager keyset "+verb, flag.ContinueOnError)
	keysetFlag := keysetFlags(fs)
	file := fs.String("file", "pipes-keyset.json", "backup: file to write the keyset to; - for standard output")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := adminClient()
	if err != nil {
		return err
	}
	ctx := context.Background()
	key := keysetFlag()
	switch verb {
	case "status":
		return keysetcmd.Status(ctx, c, key, os.Stdout)
	case "rotate":
		return keysetcmd.Rotate(ctx, c, key, os.Stdout)
	case "prune":
		return keysetcmd.Prune(ctx, c, key, os.Stdout)
	case "backup":
		out, save := io.Writer(os.Stdout), func() error { return nil }
		if *file != "-" {
			f, err := os.OpenFile(*file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }()
			out, save = f, f.Close
		}
		b, err := keysetcmd.WriteBackup(ctx, c, key, out, save)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "keyset %s (keys %v) saved to %s: keep it offline, apart from cluster backups\n", key, b.KeyIDs, *file)
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
