package devenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Kustomize renders dir (a kustomization, relative to the checkout root) as
// `kubectl apply -k` would, with the source-built kubectl, and returns its objects by
// "Kind/name". Tests check the manifests users deploy through it.
func Kustomize(root, dir string) (map[string]*unstructured.Unstructured, error) {
	assets, err := Assets(root)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(root, dir)).Output() //nolint:gosec // the source-built kubectl on the checkout's own kustomizations
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w", dir, err)
	}
	objects := map[string]*unstructured.Unstructured{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objects, nil
		} else if err != nil {
			return nil, fmt.Errorf("kubectl kustomize %s: %w", dir, err)
		}
		objects[u.GetKind()+"/"+u.GetName()] = &u
	}
}
