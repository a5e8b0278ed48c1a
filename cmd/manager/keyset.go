package main

import (
	"context"
	"errors"
	"flag"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/operator"
)

const keysetUsage = `usage: manager keyset status|rotate|prune|backup [--sealing] [--namespace NS] [--keyset-secret NAME] [--file FILE]
(kubectl pipes keyset does the same from your machine: docs/kubectl-plugin.md)

` + keyadmin.Usage + `

  --sealing   act on the sealing keyset (Secret pipes-sealing-keyset) instead of the
              key-encryption keyset (Secret pipes-keyset)`

// runKeyset manages the key-encryption or sealing keyset Secret through the API server;
// the verbs are package keyadmin's, shared with the kubectl plugin.
func runKeyset(args []string) error {
	if len(args) == 0 {
		return errors.New(keysetUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("manager keyset "+verb, flag.ContinueOnError)
	keysetFlag := keysetFlags(fs, true)
	file := fs.String("file", "", "backup: file to write the keyset to (default pipes-keyset.json, or pipes-sealing-keyset.json with --sealing); - for standard output")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := adminClient()
	if err != nil {
		return err
	}
	ctx := context.Background()
	k := keysetFlag()
	switch verb {
	case "status":
		return k.WriteStatus(ctx, c, os.Stdout)
	case "rotate":
		return k.Rotate(ctx, c, os.Stdout)
	case "prune":
		return k.Prune(ctx, c, os.Stdout)
	case "backup":
		return k.BackupToFile(ctx, c, *file, os.Stdout, os.Stderr)
	default:
		return errors.New(keysetUsage)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// keysetFlags binds the flags naming the keyset Secret (and, if sealing, --sealing to
// choose the sealing keyset); the returned function reads them once parsed.
func keysetFlags(fs *flag.FlagSet, sealing bool) func() keyadmin.Keyset {
	ns := fs.String("namespace", envOr("POD_NAMESPACE", "pipes-system"), "the operator's namespace (holding the keyset)")
	help := "Secret holding the keyset"
	if sealing {
		help += " (default pipes-keyset, or pipes-sealing-keyset with --sealing)"
	}
	name := fs.String("keyset-secret", "", help)
	sealingKeyset := new(bool)
	if sealing {
		fs.BoolVar(sealingKeyset, "sealing", false, "act on the sealing keyset (spec.apiKey.sealed) instead of the key-encryption keyset")
	}
	return func() keyadmin.Keyset { return keyadmin.Select(*ns, *name, *sealingKeyset) }
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
