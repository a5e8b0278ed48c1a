package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"

	"github.com/pipes-dev/pipes-operator/internal/backup"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyring"
)

const backupUsage = `usage: manager backup export|import [--file FILE] [--namespace NS] [--keyset-secret NAME]

  export   write every ConnectedAccount and its credential, still encrypted, as JSON
           (to --file, default standard output); keep it with the keyset backup: neither
           is of use without the other
  import   in a new cluster, after restoring the keyset Secret and the Providers: create
           the accounts and store each credential re-bound to its new account (read from
           --file, default standard input); a credential newer than the backup's is kept`

// runBackup exports or imports stored credentials through the API server, with the
// rights of the kubeconfig in use.
func runBackup(args []string) error {
	if len(args) == 0 {
		return errors.New(backupUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("manager backup "+verb, flag.ContinueOnError)
	file := fs.String("file", "-", "backup file; - for standard output (export) or input (import)")
	keysetFlag := keysetFlags(fs, false)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := adminClient()
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch verb {
	case "export":
		f, err := backup.Export(ctx, c)
		if err != nil {
			return err
		}
		out := io.Writer(os.Stdout)
		if *file != "-" {
			w, err := os.OpenFile(*file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer func() { _ = w.Close() }()
			out = w
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(f); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "exported %d account(s)\n", len(f.Accounts))
	case "import":
		in := io.Reader(os.Stdin)
		if *file != "-" {
			r, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer func() { _ = r.Close() }()
			in = r
		}
		var f backup.File
		if err := json.NewDecoder(in).Decode(&f); err != nil {
			return fmt.Errorf("reading the backup: %w", err)
		}
		var s corev1.Secret
		key := keysetFlag().Secret
		if err := c.Get(ctx, key, &s); err != nil {
			return fmt.Errorf("reading keyset Secret %s (restore it from its backup before importing): %w", key, err)
		}
		ks, err := keyring.FromSecret(&s)
		if err != nil {
			return err
		}
		results, err := backup.Import(ctx, c, credential.NewStore(c, keyring.New(ks)), &f)
		if err != nil {
			return err
		}
		failed := 0
		for _, r := range results {
			if r.Err != nil {
				failed++
				fmt.Printf("%-60s %s: %v\n", r.Account, r.Outcome, r.Err)
				continue
			}
			fmt.Printf("%-60s %s\n", r.Account, r.Outcome)
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d account(s) not restored", failed, len(results))
		}
	default:
		return errors.New(backupUsage)
	}
	return nil
}
