package testenv

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// EtcdOccurrences finds every occurrence of needle in the raw bytes of etcd's data
// directory (database and write-ahead log) and attributes each to the object stored
// there: the registry key ("/registry/secrets/ns/name") that precedes it, since etcd
// writes an object's key before its value. It returns counts per key; "?" counts
// occurrences no key precedes within 64 KiB.
func EtcdOccurrences(dir string, needle []byte) (map[string]int, error) {
	found := map[string]int{}
	prefix := []byte("/registry/")
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path) //nolint:gosec // G122: reads etcd's own data dir, which the test created and nothing else writes to
		if err != nil {
			return err
		}
		for off := 0; ; {
			i := bytes.Index(data[off:], needle)
			if i < 0 {
				break
			}
			at := off + i
			windowStart := max(0, at-64<<10)
			k := bytes.LastIndex(data[windowStart:at], prefix)
			key := "?"
			if k >= 0 {
				start := windowStart + k
				end := start
				for end < at && isPathByte(data[end]) {
					end++
				}
				key = string(data[start:end])
			}
			found[key]++
			off = at + len(needle)
		}
		return nil
	})
	return found, err
}

func isPathByte(b byte) bool {
	return b == '/' || b == '.' || b == '-' || b == '_' || b == ':' ||
		('a' <= b && b <= 'z') || ('A' <= b && b <= 'Z') || ('0' <= b && b <= '9')
}

// APIObjectsContaining lists every object of every listable resource in every namespace
// and returns "resource namespace/name" for those whose JSON contains needle.
func APIObjectsContaining(ctx context.Context, cfg *rest.Config, needle []byte) ([]string, error) {
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	lists, err := disco.ServerPreferredResources()
	if err != nil {
		return nil, err
	}
	var hits []string
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			return nil, err
		}
		for _, r := range list.APIResources {
			if !slices.Contains(r.Verbs, "list") {
				continue
			}
			objs, err := dyn.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("listing %s: %w", r.Name, err)
			}
			for _, o := range objs.Items {
				raw, err := json.Marshal(o.Object)
				if err != nil {
					return nil, err
				}
				// Secrets' data is base64 in JSON: look for both forms.
				if bytes.Contains(raw, needle) || bytes.Contains(raw, []byte(base64Std(needle))) {
					hits = append(hits, fmt.Sprintf("%s %s/%s", r.Name, o.GetNamespace(), o.GetName()))
				}
			}
		}
	}
	return hits, nil
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
