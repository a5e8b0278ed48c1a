package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/keysetcmd"
)

// keysetCommands are `keyset status|rotate|prune|backup` and the top-level `rotate-keyset`
// and `prune`.
func (a *app) keysetCommands() []*cobra.Command {
	var secretName string
	keyset := &cobra.Command{
		Use:   "keyset",
		Short: "Status, rotate, prune and back up the key-encryption keyset",
		Long: `The keyset (Secret pipes-keyset in the operator's namespace) holds the keys that wrap
every stored credential. These commands act on it through the API server with your
rights (get, update and patch on that Secret, and list on Secrets to count credentials).

` + keysetcmd.Usage,
	}
	keyset.PersistentFlags().StringVar(&secretName, "keyset-secret", "pipes-keyset", "Secret holding the keyset, in --operator-namespace")
	run := func(f func(c client.Client, key types.NamespacedName, cmd *cobra.Command) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return f(c, types.NamespacedName{Namespace: a.operatorNamespace, Name: secretName}, cmd)
		}
	}
	status := func() *cobra.Command {
		return &cobra.Command{
			Use: "status", Short: "Show the keys, the credentials each wraps, and the last backup", Args: cobra.NoArgs,
			Example: "  kubectl pipes keyset status",
			RunE: run(func(c client.Client, key types.NamespacedName, cmd *cobra.Command) error {
				return keysetcmd.Status(cmd.Context(), c, key, a.out)
			}),
		}
	}
	rotate := func(use string) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: "Add a new primary key; managers re-encrypt every credential under it", Args: cobra.NoArgs,
			Example: "  kubectl pipes keyset rotate && kubectl pipes keyset backup --file pipes-keyset.json",
			RunE: run(func(c client.Client, key types.NamespacedName, cmd *cobra.Command) error {
				return keysetcmd.Rotate(cmd.Context(), c, key, a.out)
			}),
		}
	}
	prune := func(use string) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: "Remove old keys that no stored credential uses any more", Args: cobra.NoArgs,
			Example: "  kubectl pipes keyset status   # 0 still on old keys?\n  kubectl pipes keyset prune",
			RunE: run(func(c client.Client, key types.NamespacedName, cmd *cobra.Command) error {
				return keysetcmd.Prune(cmd.Context(), c, key, a.out)
			}),
		}
	}
	var file string
	backup := &cobra.Command{
		Use:   "backup",
		Short: "Save the keyset to a file (0600) and record the backup on the Secret",
		Long: `Save the keyset's key material to --file (mode 0600), in the form the restore takes:

  kubectl create secret generic -n pipes-system pipes-keyset --from-file=keyset.json=FILE

then record on the Secret when and which keys were saved (annotations
pipes.dev/keyset-backed-up-at and pipes.dev/keyset-backed-up-key-ids), which doctor
checks. Keep the file offline, apart from cluster backups: with it, anyone holding the
credential Secrets can read every key.`,
		Example: "  kubectl pipes keyset backup --file pipes-keyset.json",
		Args:    cobra.NoArgs,
		RunE: run(func(c client.Client, key types.NamespacedName, cmd *cobra.Command) error {
			out, save := a.out, func() error { return nil }
			if file != "-" {
				f, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
				if err != nil {
					return err
				}
				defer func() { _ = f.Close() }()
				out, save = f, func() error {
					if err := f.Sync(); err != nil {
						return err
					}
					return f.Close()
				}
			}
			b, err := keysetcmd.WriteBackup(cmd.Context(), c, key, out, save)
			if err != nil {
				return err
			}
			_, _ = fmt.Fprintf(a.errOut, "keyset %s (keys %v) saved to %s: keep it offline, apart from cluster backups\n", key, b.KeyIDs, file)
			return nil
		}),
	}
	backup.Flags().StringVarP(&file, "file", "f", "pipes-keyset.json", "file to write; - for standard output")
	keyset.AddCommand(status(), rotate("rotate"), prune("prune"), backup)

	rotateKeyset, pruneKeys := rotate("rotate-keyset"), prune("prune")
	for _, c := range []*cobra.Command{rotateKeyset, pruneKeys} {
		c.Short += " (keyset " + map[string]string{"rotate-keyset": "rotate", "prune": "prune"}[c.Name()] + ")"
		c.Flags().StringVar(&secretName, "keyset-secret", "pipes-keyset", "Secret holding the keyset, in --operator-namespace")
	}
	return []*cobra.Command{keyset, rotateKeyset, pruneKeys}
}
