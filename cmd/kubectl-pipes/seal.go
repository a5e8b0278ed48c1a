package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
	"github.com/pipes-dev/pipes-operator/internal/credential"
	"github.com/pipes-dev/pipes-operator/internal/keyadmin"
	"github.com/pipes-dev/pipes-operator/internal/sealing"
)

func (a *app) sealCommand() *cobra.Command {
	var publicKeyset, patch string
	var sc sealing.Context
	c := &cobra.Command{
		Use:   "seal --provider PROVIDER --user-id USER_ID [--organization-id ORG_ID] [--name NAME] [--patch FILE]",
		Short: "Encrypt an API key for a ConnectedAccount manifest (spec.apiKey.sealed), for GitOps",
		Long: `Encrypt a user's API key to the operator's public sealing keyset, so that the
ConnectedAccount manifest holding it can be committed: only the operator can open it,
and only for that account (namespace, name, provider, user and organization are bound
into the ciphertext; a copy into another account does not decrypt).

The key is read from standard input, or prompted for without echo on a terminal; never
from an argument. The public keyset is read from ConfigMap ` + pipesv1.SealingPublicKeysetConfigMap + ` in
--operator-namespace (readable by every authenticated user), or from --public-keyset
FILE with no cluster at all (air-gapped CI; kubectl pipes keyset public prints it).

Without --patch, a ConnectedAccount manifest is printed. With --patch FILE, the
ConnectedAccount in FILE gets spec.apiKey.sealed (replacing any other key source); its
namespace, name, provider, user and organization are taken from the file.`,
		Example: `  # print a manifest (the name defaults to the one the backend API would give)
  op read op://vault/openai/key | kubectl pipes seal -n apps --provider openai --user-id user-123 > account.yaml
  # update a committed manifest, offline
  kubectl pipes seal --public-keyset public-keyset.json --patch apps/user-123-openai.yaml < key.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var doc *yaml.Node
			if patch != "" {
				var err error
				if doc, err = readAccountManifest(patch, &sc); err != nil {
					return err
				}
			}
			if sc.Namespace == "" {
				ns, err := a.namespace()
				if err != nil {
					return err
				}
				sc.Namespace = ns
			}
			if sc.Provider == "" || sc.User == "" {
				return errors.New("seal needs --provider and --user-id (or --patch FILE naming them)")
			}
			if sc.Name == "" {
				sc.Name = credential.AccountName(sc.Provider, sc.User, sc.Organization)
			}
			pub, err := a.publicKeyset(cmd, publicKeyset)
			if err != nil {
				return err
			}
			key, err := a.readKey(fmt.Sprintf("API key to seal for %s (user %s): ", sc.Provider, sc.User))
			if err != nil {
				return err
			}
			defer clear(key)
			sealed, err := sealing.Seal(pub, key, sc)
			if err != nil {
				return fmt.Errorf("sealing: %w", err)
			}
			var v any = accountManifest(sc, sealed)
			if doc != nil {
				setSealed(doc, sc.Namespace, sealed)
				v = doc
			}
			var buf bytes.Buffer
			enc := yaml.NewEncoder(&buf)
			enc.SetIndent(2)
			if err := enc.Encode(v); err != nil {
				return err
			}
			if doc == nil {
				_, err := a.out.Write(buf.Bytes())
				return err
			}
			if err := os.WriteFile(patch, buf.Bytes(), 0o644); err != nil { //nolint:gosec // G306: a manifest to commit, sealed
				return err
			}
			_, _ = fmt.Fprintf(a.errOut, "%s: spec.apiKey.sealed set for connectedaccount %s/%s\n", patch, sc.Namespace, sc.Name)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&sc.Provider, "provider", "", "the Provider's name")
	f.StringVar(&sc.User, "user-id", "", "the application's user ID")
	f.StringVar(&sc.Organization, "organization-id", "", "the organization ID, for an organization-scoped account")
	f.StringVar(&sc.Name, "name", "", "the ConnectedAccount's name (default: the name the backend API gives it)")
	f.StringVar(&publicKeyset, "public-keyset", "", "the operator's public sealing keyset (JSON), instead of reading ConfigMap "+pipesv1.SealingPublicKeysetConfigMap+" (kubectl pipes keyset public prints it)")
	f.StringVar(&patch, "patch", "", "set spec.apiKey.sealed in the ConnectedAccount manifest in this file, in place")
	return c
}

// publicKeyset is --public-keyset FILE, else the operator's published one; either is
// checked to hold public sealing keys only.
func (a *app) publicKeyset(cmd *cobra.Command, file string) ([]byte, error) {
	if file == "" {
		return a.fetchPublicKeyset(cmd)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--public-keyset: %w", err)
	}
	if _, err := sealing.ParsePublicKeyset(raw); err != nil {
		return nil, fmt.Errorf("--public-keyset %s: %w", file, err)
	}
	return raw, nil
}

// fetchPublicKeyset reads the public sealing keyset the operator publishes in
// --operator-namespace (keyadmin.PublicKeyset).
func (a *app) fetchPublicKeyset(cmd *cobra.Command) ([]byte, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	pub, err := keyadmin.PublicKeyset(cmd.Context(), c, a.operatorNamespace)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("ConfigMap %s/%s not found: is the operator (a version that seals) running there? Or pass --public-keyset FILE", a.operatorNamespace, pipesv1.SealingPublicKeysetConfigMap)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (or pass --public-keyset FILE)", err)
	}
	return pub, nil
}

// sealedAccount is the ConnectedAccount manifest seal prints, fields in kubectl's order.
type sealedAccount struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec struct {
		ProviderRef struct {
			Name string `yaml:"name"`
		} `yaml:"providerRef"`
		UserID         string `yaml:"userID"`
		OrganizationID string `yaml:"organizationID,omitempty"`
		APIKey         struct {
			Sealed string `yaml:"sealed"`
		} `yaml:"apiKey"`
	} `yaml:"spec"`
}

// accountManifest is the ConnectedAccount holding the sealed key.
func accountManifest(sc sealing.Context, sealed string) *sealedAccount {
	m := &sealedAccount{APIVersion: pipesv1.GroupVersion.String(), Kind: "ConnectedAccount"}
	m.Metadata.Name, m.Metadata.Namespace = sc.Name, sc.Namespace
	m.Spec.ProviderRef.Name, m.Spec.UserID, m.Spec.OrganizationID = sc.Provider, sc.User, sc.Organization
	m.Spec.APIKey.Sealed = sealed
	return m
}

// readAccountManifest parses the ConnectedAccount in file (comments and order kept) and
// takes the sealing context from it; flags given must agree with it.
func readAccountManifest(file string, sc *sealing.Context) (*yaml.Node, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if dec.Decode(&yaml.Node{}) == nil {
		return nil, fmt.Errorf("%s holds more than one YAML document: --patch takes a file with one ConnectedAccount", file)
	}
	var ca struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct{ Name, Namespace string }
		Spec       struct {
			ProviderRef struct{ Name string } `yaml:"providerRef"`
			UserID      string                `yaml:"userID"`
			OrgID       string                `yaml:"organizationID"`
		}
	}
	if err := doc.Decode(&ca); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if ca.Kind != "ConnectedAccount" || ca.APIVersion != pipesv1.GroupVersion.String() {
		return nil, fmt.Errorf("%s is a %s %s, not a %s ConnectedAccount", file, ca.APIVersion, ca.Kind, pipesv1.GroupVersion)
	}
	fromFile := sealing.Context{Namespace: ca.Metadata.Namespace, Name: ca.Metadata.Name, Provider: ca.Spec.ProviderRef.Name, User: ca.Spec.UserID, Organization: ca.Spec.OrgID}
	for _, f := range []struct {
		flag       string
		given, has *string
	}{{"--name", &sc.Name, &fromFile.Name}, {"--provider", &sc.Provider, &fromFile.Provider}, {"--user-id", &sc.User, &fromFile.User}, {"--organization-id", &sc.Organization, &fromFile.Organization}} {
		if *f.given != "" && *f.given != *f.has {
			return nil, fmt.Errorf("%s %q disagrees with %s, which says %q: the key is bound to the account in the file; drop the flag", f.flag, *f.given, file, *f.has)
		}
	}
	if fromFile.Name == "" {
		return nil, fmt.Errorf("%s: the ConnectedAccount has no metadata.name, which the sealed key is bound to", file)
	}
	*sc = fromFile
	return &doc, nil
}

// setSealed sets metadata.namespace (the key is bound to it) and spec.apiKey to
// {sealed: …} in the ConnectedAccount document.
func setSealed(doc *yaml.Node, namespace, sealed string) {
	root := doc
	if root.Kind == yaml.DocumentNode {
		root = root.Content[0]
	}
	setScalar(mapping(root, "metadata"), "namespace", namespace)
	apiKey := mapping(mapping(root, "spec"), "apiKey")
	apiKey.Content = nil // one source: sealed replaces a secretKeyRef
	setScalar(apiKey, "sealed", sealed)
}

// mapping returns the mapping under key in m, adding an empty one if missing.
func mapping(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			if v.Kind != yaml.MappingNode {
				*v = yaml.Node{Kind: yaml.MappingNode}
			}
			return v
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
	return v
}

func setScalar(m *yaml.Node, key, value string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			*m.Content[i+1] = yaml.Node{Kind: yaml.ScalarNode, Value: value}
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Value: value})
}
