// Command kubectl-pipes is the kubectl plugin of pipes-operator (`kubectl pipes`): list
// connected accounts, set and disconnect keys through the backend API, seal keys for
// GitOps, manage the key-encryption and sealing keysets, and check an installation
// (doctor). It takes kubectl's flags and kubeconfig; on failure it prints one line,
// "error: …", to standard error and exits 1, as kubectl does. See docs/kubectl-plugin.md.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pipes-dev/pipes-operator/internal/scheme"
)

func main() {
	if err := newRoot(os.Stdin, os.Stdout, os.Stderr).Execute(); err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "error: "+oneLine(err))
		os.Exit(1)
	}
}

// oneLine is err's message on a single line: kubectl's errors are one line.
func oneLine(err error) string {
	var parts []string
	for l := range strings.Lines(err.Error()) {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// app holds what every command shares: kubectl's flags, the operator's namespace and
// the streams.
type app struct {
	kube              *genericclioptions.ConfigFlags
	operatorNamespace string
	in                io.Reader
	out, errOut       io.Writer
}

func newRoot(in io.Reader, out, errOut io.Writer) *cobra.Command {
	a := &app{kube: genericclioptions.NewConfigFlags(true), in: in, out: out, errOut: errOut}
	root := &cobra.Command{
		Use:   "kubectl-pipes",
		Short: "Manage pipes-operator: connected accounts, API keys, sealing, the keysets, health",
		Long: `kubectl pipes manages pipes-operator from your machine, with your kubeconfig and rights.

  get / status       list ConnectedAccounts (provider, user, org, state, last four, version)
  set-key            store a user's API key through the backend API (key from stdin)
  disconnect         remove a user's connected account and its stored key
  seal               encrypt a key for a ConnectedAccount manifest (GitOps), offline if need be
  keyset             status, rotate, prune and back up the keysets (--sealing: the sealing
                     keyset); print the public sealing keyset (keyset public)
  doctor             check the installation and your rights, with a fix for each problem

Keys are read from standard input or a prompt without echo, never from arguments.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl pipes"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())
	})
	a.kube.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&a.operatorNamespace, "operator-namespace", "pipes-system", "the namespace pipes-operator runs in (its keysets, public sealing keyset, certificate and Deployment)")
	root.AddCommand(a.getCommand(), a.setKeyCommand(), a.disconnectCommand(), a.sealCommand(), a.doctorCommand())
	root.AddCommand(a.keysetCommands()...)
	return root
}

// restConfig is the kubeconfig in use, with kubectl's flags applied.
func (a *app) restConfig() (*rest.Config, error) {
	cfg, err := a.kube.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-pipes"
	return cfg, nil
}

// client talks to the API server directly (no cache).
func (a *app) client() (client.Client, error) {
	cfg, err := a.restConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme.New()})
}

// namespace is --namespace, else the kubeconfig context's, else "default".
func (a *app) namespace() (string, error) {
	ns, _, err := a.kube.ToRawKubeConfigLoader().Namespace()
	return ns, err
}
