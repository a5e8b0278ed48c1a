package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"golang.org/x/term"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/wire"
)

// maxKeyBytes bounds what is read as a key (the API refuses longer ones anyway).
const maxKeyBytes = 64 << 10

func (a *app) setKeyCommand() *cobra.Command {
	var b backendFlags
	var user, org string
	c := &cobra.Command{
		Use:   "set-key PROVIDER --user-id USER_ID [--organization-id ORG_ID]",
		Short: "Store a user's API key through the backend API (key from standard input or a prompt, never an argument)",
		Long: `Store (or rotate) a user's API key through the backend API, which encrypts it before
anything is stored: the same call as PUT /data-integrations/{provider}/api-key. The key
is read from standard input, or prompted for without echo when standard input is a
terminal; it is never taken from an argument, where shell history and ps would see it.

The API is reached through a port-forward to a ready manager pod (or --api-url), its
certificate verified against ConfigMap pipes-api-ca (or --api-ca), and called with the
kubeconfig's bearer token or a short-lived token for --as-serviceaccount.`,
		Example: `  # from a password manager, as the backend's ServiceAccount
  op read op://vault/openai/key | kubectl pipes set-key openai --user-id user-123 -n apps --as-serviceaccount apps/backend
  # prompted, without echo
  kubectl pipes set-key openai --user-id user-123 --organization-id org-9`,
		Args: exactArgs(1, "PROVIDER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			key, err := a.readKey(fmt.Sprintf("API key for %s (user %s): ", args[0], user))
			if err != nil {
				return err
			}
			defer clear(key)
			api, stop, err := a.backend(cmd.Context(), &b, ns)
			if err != nil {
				return err
			}
			defer stop()
			ca, err := api.UpsertAPIKey(cmd.Context(), args[0], wire.UpsertAPIKeyRequest{UserID: user, OrganizationID: org, Secret: string(key)})
			if err != nil {
				return apiError(err, &b)
			}
			last4 := ""
			if ca.APIKeyLast4 != "" {
				last4 = " (••••" + ca.APIKeyLast4 + ")"
			}
			_, _ = fmt.Fprintf(a.out, "connectedaccount/%s key stored%s: %s\n", credential.AccountName(args[0], user, org), last4, ca.State)
			return nil
		},
	}
	c.Flags().StringVar(&user, "user-id", "", "the application's user ID (required)")
	c.Flags().StringVar(&org, "organization-id", "", "the user's organization ID, for an organization-scoped account")
	_ = c.MarkFlagRequired("user-id")
	b.add(c)
	return c
}

func (a *app) disconnectCommand() *cobra.Command {
	var b backendFlags
	var user, org string
	c := &cobra.Command{
		Use:   "disconnect (NAME | PROVIDER --user-id USER_ID [--organization-id ORG_ID])",
		Short: "Remove a user's connected account and its stored key through the backend API",
		Long: `Disconnect a user from a provider through the backend API (DELETE
/user_management/users/{user}/connected_accounts/{provider}): the account and its
encrypted key are deleted. Name the account (kubectl pipes get lists them), or give
the provider with --user-id (and --organization-id).`,
		Example: `  kubectl pipes disconnect openai-1a2b3c4d5e6f -n apps --as-serviceaccount apps/backend
  kubectl pipes disconnect openai --user-id user-123 -n apps`,
		Args:              exactArgs(1, "NAME or PROVIDER"),
		ValidArgsFunction: a.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			provider, name := args[0], args[0]
			if user == "" {
				c, err := a.client()
				if err != nil {
					return err
				}
				var ca pipesv1.ConnectedAccount
				if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: ns, Name: args[0]}, &ca); err != nil {
					if apierrors.IsNotFound(err) {
						return fmt.Errorf("connectedaccount %q not found in namespace %q (to name a provider instead, add --user-id)", args[0], ns)
					}
					return err
				}
				provider, user, org = ca.Spec.ProviderRef.Name, ca.Spec.UserID, ca.Spec.OrganizationID
			} else {
				name = credential.AccountName(provider, user, org)
			}
			api, stop, err := a.backend(cmd.Context(), &b, ns)
			if err != nil {
				return err
			}
			defer stop()
			if err := api.Disconnect(cmd.Context(), user, provider, org); err != nil {
				return apiError(err, &b)
			}
			_, _ = fmt.Fprintf(a.out, "connectedaccount/%s disconnected\n", name)
			return nil
		},
	}
	c.Flags().StringVar(&user, "user-id", "", "the user ID (then the argument is the provider)")
	c.Flags().StringVar(&org, "organization-id", "", "the organization ID, with --user")
	b.add(c)
	return c
}

// readKey reads a key from standard input: with a prompt and no echo on a terminal,
// else everything piped in, less the trailing newline.
func (a *app) readKey(prompt string) ([]byte, error) {
	if f, ok := a.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		_, _ = fmt.Fprint(a.errOut, prompt)
		key, err := term.ReadPassword(int(f.Fd()))
		_, _ = fmt.Fprintln(a.errOut)
		if err != nil {
			return nil, fmt.Errorf("reading the key: %w", err)
		}
		return nonEmpty(key)
	}
	key, err := io.ReadAll(io.LimitReader(a.in, maxKeyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the key from standard input: %w", err)
	}
	if len(key) > maxKeyBytes {
		clear(key)
		return nil, fmt.Errorf("standard input holds more than %d bytes: that is not an API key", maxKeyBytes)
	}
	return nonEmpty(bytes.TrimRight(key, "\r\n"))
}

func nonEmpty(key []byte) ([]byte, error) {
	if len(key) == 0 {
		return nil, errors.New("no key on standard input: pipe it in (… | kubectl pipes …) or run in a terminal to be prompted; keys are never taken from arguments")
	}
	return key, nil
}

// exactArgs is cobra.ExactArgs with a message naming the argument.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d argument (%s), got %d (see '%s --help')", cmd.CommandPath(), n, what, len(args), cmd.CommandPath())
		}
		return nil
	}
}
