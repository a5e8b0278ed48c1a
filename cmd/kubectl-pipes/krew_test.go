package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// krewPlugin is the part of krew's Plugin manifest (v1alpha2) krew validates.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// config/krew/pipes.yaml is a template hack/krew-release.sh fills: once filled it must be
// a manifest krew accepts, installing this binary as kubectl-pipes (so `kubectl pipes`
// finds it) from the archive built for each platform it lists.
func TestKrewManifest(t *testing.T) {
	raw, err := os.ReadFile("../../config/krew/pipes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	placeholders := regexp.MustCompile(`{{[A-Za-z0-9_]+}}`).FindAllString(string(raw), -1)
	filled := strings.ReplaceAll(string(raw), "{{VERSION}}", "v1.2.3")
	filled = regexp.MustCompile(`{{SHA256_[a-z0-9]+_[a-z0-9]+}}`).ReplaceAllString(filled, strings.Repeat("ab", 32))
	if strings.Contains(filled, "{{") {
		t.Fatalf("placeholders hack/krew-release.sh does not fill: %v", placeholders)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict([]byte(filled), &p); err != nil {
		t.Fatalf("config/krew/pipes.yaml: %v", err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "pipes" {
		t.Fatalf("not krew's Plugin pipes: %s %s %s", p.APIVersion, p.Kind, p.Metadata.Name)
	}
	if p.Spec.Version != "v1.2.3" || p.Spec.ShortDescription == "" || p.Spec.Homepage == "" || len(p.Spec.Platforms) == 0 {
		t.Fatalf("spec incomplete: %+v", p.Spec)
	}
	seen := map[string]bool{}
	for _, pl := range p.Spec.Platforms {
		goos, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		platform := goos + "_" + arch
		if seen[platform] || goos == "" || arch == "" {
			t.Fatalf("platform %q listed twice or without os and arch", platform)
		}
		seen[platform] = true
		if pl.Bin != "kubectl-pipes" {
			t.Errorf("%s: bin %q, want kubectl-pipes (the name kubectl looks up for `kubectl pipes`)", platform, pl.Bin)
		}
		if want := fmt.Sprintf("https://github.com/pipes-dev/pipes-operator/releases/download/v1.2.3/kubectl-pipes_v1.2.3_%s.tar.gz", platform); pl.URI != want {
			t.Errorf("%s: uri %q, want %q (the archive hack/krew-release.sh builds)", platform, pl.URI, want)
		}
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(pl.SHA256) || !strings.Contains(string(raw), "{{SHA256_"+platform+"}}") {
			t.Errorf("%s: sha256 is not the placeholder {{SHA256_%s}}", platform, platform)
		}
		if len(pl.Files) == 0 || pl.Files[0].From != "kubectl-pipes" {
			t.Errorf("%s: files do not install kubectl-pipes: %+v", platform, pl.Files)
		}
	}
}
