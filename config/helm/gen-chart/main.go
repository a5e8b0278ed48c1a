// Command gen-chart writes the generated files of the Helm chart (config/helm/pipes-operator)
// from config/default, and removes generated files config/default no longer produces.
// Run it with `make chart`; see package helmchart.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	helmchart "github.com/pipes-dev/pipes-operator/config/helm"
)

func main() {
	root := flag.String("root", "../..", "the repository root (config/default is under it)")
	chart := flag.String("chart", helmchart.ChartDir, "the chart directory to write into")
	flag.Parse()
	if err := run(*root, *chart); err != nil {
		fmt.Fprintln(os.Stderr, "gen-chart:", err)
		os.Exit(1)
	}
}

func run(root, chart string) error {
	files, err := helmchart.Generate(root)
	if err != nil {
		return err
	}
	stale, err := helmchart.GeneratedFiles(chart)
	if err != nil {
		return err
	}
	for _, path := range stale {
		if _, ok := files[path]; !ok {
			fmt.Println("removed", filepath.Join(chart, path))
			if err := os.Remove(filepath.Join(chart, path)); err != nil {
				return err
			}
		}
	}
	for _, path := range slices.Sorted(maps.Keys(files)) {
		content := files[path]
		full := filepath.Join(chart, path)
		if old, err := os.ReadFile(full); err == nil && bytes.Equal(old, content) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			return err
		}
		if err := os.WriteFile(full, content, 0o644); err != nil { //nolint:gosec // a chart file, as readable as the rest of the tree
			return err
		}
		fmt.Println("wrote", full)
	}
	return nil
}
