package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

func (a *app) getCommand() *cobra.Command {
	var output, selector string
	var allNamespaces bool
	c := &cobra.Command{
		Use:     "get [NAME...]",
		Aliases: []string{"status"},
		Short:   "List ConnectedAccounts: provider, user, org, state, key's last four, version, age",
		Example: `  kubectl pipes get
  kubectl pipes status -A -o wide
  kubectl pipes get openai-1a2b3c4d5e6f -o yaml
  kubectl pipes get -l team=payments`,
		ValidArgsFunction: a.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "", "wide", "yaml", "json", "name":
			default:
				return fmt.Errorf("unknown output format %q: use wide, yaml, json or name", output)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			var items []pipesv1.ConnectedAccount
			if len(args) > 0 {
				if allNamespaces {
					return fmt.Errorf("a name cannot be given with --all-namespaces: name the namespace with -n")
				}
				for _, name := range args {
					var ca pipesv1.ConnectedAccount
					if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: ns, Name: name}, &ca); err != nil {
						if apierrors.IsNotFound(err) {
							return fmt.Errorf("connectedaccount %q not found in namespace %q", name, ns)
						}
						return err
					}
					items = append(items, ca)
				}
			} else {
				opts := []client.ListOption{}
				if !allNamespaces {
					opts = append(opts, client.InNamespace(ns))
				}
				if selector != "" {
					sel, err := labels.Parse(selector)
					if err != nil {
						return fmt.Errorf("--selector: %w", err)
					}
					opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
				}
				var list pipesv1.ConnectedAccountList
				if err := c.List(cmd.Context(), &list, opts...); err != nil {
					return err
				}
				items = list.Items
			}
			for i := range items {
				items[i].APIVersion, items[i].Kind = pipesv1.GroupVersion.String(), "ConnectedAccount"
				items[i].ManagedFields = nil
			}
			if len(items) == 0 && (output == "" || output == "wide") {
				if allNamespaces {
					_, _ = fmt.Fprintln(a.errOut, "No resources found")
				} else {
					_, _ = fmt.Fprintf(a.errOut, "No resources found in %s namespace.\n", ns)
				}
				return nil
			}
			return printAccounts(a.out, items, output, allNamespaces, len(args) == 1)
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: wide, yaml, json or name")
	c.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. team=payments")
	c.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list accounts in every namespace")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"wide", "yaml", "json", "name"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}

func printAccounts(w io.Writer, items []pipesv1.ConnectedAccount, output string, allNamespaces, single bool) error {
	switch output {
	case "yaml", "json":
		var v any = &pipesv1.ConnectedAccountList{Items: items}
		if single {
			v = &items[0]
		} else {
			l := v.(*pipesv1.ConnectedAccountList)
			l.APIVersion, l.Kind = "v1", "List"
		}
		var b []byte
		var err error
		if output == "yaml" {
			b, err = yaml.Marshal(v)
		} else {
			b, err = json.MarshalIndent(v, "", "    ")
			b = append(b, '\n')
		}
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "name":
		for _, ca := range items {
			_, _ = fmt.Fprintf(w, "connectedaccount.pipes.dev/%s\n", ca.Name)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	header := "NAME\tPROVIDER\tUSER\tORG\tSTATE\tKEY\tVERSION\tAGE"
	if allNamespaces {
		header = "NAMESPACE\t" + header
	}
	if output == "wide" {
		header += "\tREADY\tREASON\tKEY-ID\tLAST-ROTATED\tMESSAGE"
	}
	_, _ = fmt.Fprintln(tw, header)
	for _, ca := range items {
		row := ""
		if allNamespaces {
			row = ca.Namespace + "\t"
		}
		key := none
		if ca.Status.APIKeyLast4 != "" {
			key = "••••" + ca.Status.APIKeyLast4
		}
		version := none
		if ca.Status.CredentialVersion > 0 {
			version = strconv.FormatInt(ca.Status.CredentialVersion, 10)
		}
		row += fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", ca.Name, ca.Spec.ProviderRef.Name, orNone(ca.Spec.UserID),
			orNone(ca.Spec.OrganizationID), orNone(string(ca.Status.State)), key, version, age(ca.CreationTimestamp.Time))
		if output == "wide" {
			ready, reason, message := none, none, none
			if cond := meta.FindStatusCondition(ca.Status.Conditions, pipesv1.ConditionReady); cond != nil {
				ready, reason, message = string(cond.Status), orNone(cond.Reason), orNone(cond.Message)
			}
			keyID := none
			if ca.Status.EncryptionKeyID != 0 {
				keyID = strconv.FormatInt(ca.Status.EncryptionKeyID, 10)
			}
			rotated := none
			if ca.Status.LastRotatedTime != nil {
				rotated = age(ca.Status.LastRotatedTime.Time) + " ago"
			}
			row += fmt.Sprintf("\t%s\t%s\t%s\t%s\t%s", ready, reason, keyID, rotated, message)
		}
		_, _ = fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

const none = "<none>"

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

func age(t time.Time) string {
	if t.IsZero() {
		return none
	}
	return duration.HumanDuration(time.Since(t))
}

// completeAccounts completes ConnectedAccount names in the namespace in use.
func (a *app) completeAccounts(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ns, err := a.namespace()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var list pipesv1.ConnectedAccountList
	if err := c.List(cmd.Context(), &list, client.InNamespace(ns)); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]cobra.Completion, 0, len(list.Items))
	for _, ca := range list.Items {
		names = append(names, ca.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
