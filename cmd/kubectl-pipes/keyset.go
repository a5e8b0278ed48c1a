package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
)

// keysetCommands are `keyset status|rotate|prune|backup|public` and the top-level
// `rotate-keyset` and `prune`. The verbs are package keyadmin's, which `manager keyset`
// calls too.
func (a *app) keysetCommands() []*cobra.Command {
	keyset := &cobra.Command{
		Use:   "keyset",
		Short: "Status, rotate, prune and back up the keysets (key-encryption; --sealing: sealing); print the public sealing keyset",
		Long: `The key-encryption keyset (Secret pipes-keyset in the operator's namespace) holds the
keys that wrap every stored credential; the sealing keyset (Secret pipes-sealing-keyset,
with --sealing) the private keys that open spec.apiKey.sealed values. These commands act
on them through the API server with your rights: get, update and patch on that Secret,
and list on Secrets (key-encryption) or ConnectedAccounts (sealing) cluster-wide to count
what each key seals.

` + keyadmin.Usage + `
  public   print the public sealing keyset, for sealing offline (seal --public-keyset)`,
	}
	// verb is one keyset verb on the keyset its flags select.
	verb := func(c *cobra.Command, run func(k keyadmin.Keyset, cl client.Client, cmd *cobra.Command) error) *cobra.Command {
		var secret string
		var sealing bool
		c.Args = cobra.NoArgs
		c.Flags().StringVar(&secret, "keyset-secret", "", "Secret holding the keyset, in --operator-namespace (default pipes-keyset, or pipes-sealing-keyset with --sealing)")
		c.Flags().BoolVar(&sealing, "sealing", false, "act on the sealing keyset (spec.apiKey.sealed) instead of the key-encryption keyset")
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			return run(keyadmin.Select(a.operatorNamespace, secret, sealing), cl, cmd)
		}
		return c
	}
	status := func() *cobra.Command {
		return verb(&cobra.Command{
			Use: "status", Short: "Show the keys, what each one seals, and the last backup",
			Example: "  kubectl pipes keyset status\n  kubectl pipes keyset status --sealing",
		}, func(k keyadmin.Keyset, c client.Client, cmd *cobra.Command) error {
			return k.WriteStatus(cmd.Context(), c, a.out)
		})
	}
	rotate := func(use string) *cobra.Command {
		return verb(&cobra.Command{
			Use: use, Short: "Add a new primary key (key-encryption: managers re-encrypt every credential under it; sealing: the public keyset seals with it)",
			Example: "  kubectl pipes keyset rotate && kubectl pipes keyset backup --file pipes-keyset.json\n" +
				"  kubectl pipes keyset rotate --sealing && kubectl pipes keyset backup --sealing --file pipes-sealing-keyset.json",
		}, func(k keyadmin.Keyset, c client.Client, cmd *cobra.Command) error {
			return k.Rotate(cmd.Context(), c, a.out)
		})
	}
	prune := func(use string) *cobra.Command {
		return verb(&cobra.Command{
			Use: use, Short: "Remove old keys that nothing uses any more (no stored credential; with --sealing no spec.apiKey.sealed)",
			Example: "  kubectl pipes keyset status   # 0 still on old keys?\n  kubectl pipes keyset prune",
		}, func(k keyadmin.Keyset, c client.Client, cmd *cobra.Command) error {
			return k.Prune(cmd.Context(), c, a.out)
		})
	}
	var file string
	backup := verb(&cobra.Command{
		Use:   "backup",
		Short: "Save the keyset to a file (0600) and record the backup on the Secret",
		Long: `Save the keyset's key material to --file (mode 0600), in the form the restore takes:

  kubectl create secret generic -n pipes-system pipes-keyset --from-file=keyset.json=FILE
  kubectl create secret generic -n pipes-system pipes-sealing-keyset --from-file=keyset.json=FILE   # --sealing

then record on the Secret when and which keys were saved (annotations
pipes.dev/keyset-backed-up-at and pipes.dev/keyset-backed-up-key-ids), which keyset
status and doctor check. Keep the file offline, apart from cluster backups: with the
key-encryption keyset, anyone holding the credential Secrets can read every key; with the
sealing keyset, anyone holding the Git repository can open every sealed key.`,
		Example: "  kubectl pipes keyset backup --file pipes-keyset.json\n  kubectl pipes keyset backup --sealing --file pipes-sealing-keyset.json",
	}, func(k keyadmin.Keyset, c client.Client, cmd *cobra.Command) error {
		return k.BackupToFile(cmd.Context(), c, file, a.out, a.errOut)
	})
	backup.Flags().StringVarP(&file, "file", "f", "", "file to write (default pipes-keyset.json, or pipes-sealing-keyset.json with --sealing); - for standard output")
	keyset.AddCommand(status(), rotate("rotate"), prune("prune"), backup, a.publicKeysetCommand())

	rotateKeyset, pruneKeys := rotate("rotate-keyset"), prune("prune")
	rotateKeyset.Short += " (keyset rotate)"
	pruneKeys.Short += " (keyset prune)"
	return []*cobra.Command{keyset, rotateKeyset, pruneKeys}
}

// publicKeysetCommand is `keyset public`: the public sealing keyset, fetched and checked,
// for sealing where there is no cluster (seal --public-keyset).
func (a *app) publicKeysetCommand() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "public",
		Short: "Print the operator's public sealing keyset, for sealing offline (seal --public-keyset)",
		Long: `Print the public sealing keyset the operator publishes in ConfigMap
pipes-sealing-public-keyset (readable by every authenticated user), checked to hold
public HPKE keys only, to standard output or --file. Commit it beside your manifests for
air-gapped CI, and review its changes like a certificate pin: it changes only when the
sealing keyset is rotated.`,
		Example: "  kubectl pipes keyset public > pipes-sealing-public-keyset.json\n" +
			"  kubectl pipes seal --public-keyset pipes-sealing-public-keyset.json -n apps --patch apps/user-123-openai.yaml < key.txt",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := a.fetchPublicKeyset(cmd)
			if err != nil {
				return err
			}
			out := strings.TrimRight(string(pub), "\n") + "\n"
			if file == "" || file == "-" {
				_, err = fmt.Fprint(a.out, out)
				return err
			}
			if err := os.WriteFile(file, []byte(out), 0o644); err != nil { //nolint:gosec // G306: public keys, to commit
				return err
			}
			_, _ = fmt.Fprintf(a.errOut, "public sealing keyset written to %s\n", file)
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "file to write instead of standard output")
	return c
}
