package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// writeBinaries puts a stand-in executable per architecture under dir/linux_ARCH/.
func writeBinaries(t *testing.T, dir string, mtime time.Time) {
	t.Helper()
	for _, arch := range []string{"amd64", "arm64"} {
		p := filepath.Join(dir, "linux_"+arch, "manager")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("manager for "+arch), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func layoutOptions(src, out string) options {
	return options{
		tag: "pipes-operator/manager:v1", ociLayout: out, user: "65532:65532", workdir: "/",
		binaries:  pairs{{src: filepath.Join(src, "linux_{arch}", "manager"), dst: "/manager"}},
		platforms: []string{"linux/amd64", "linux/arm64"},
		labels:    map[string]string{"org.opencontainers.image.version": "v1"},
	}
}

// The same inputs give the same digest, whenever and wherever they are packed; every
// platform gets its own binary, non-root, with the labels.
func TestOCILayoutIsReproducibleAndMultiPlatform(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeBinaries(t, a, time.Unix(1, 0))
	writeBinaries(t, b, time.Now())
	var digests []v1.Hash
	for _, src := range []string{a, b} {
		out := filepath.Join(t.TempDir(), "layout")
		if err := run(layoutOptions(src, out)); err != nil {
			t.Fatal(err)
		}
		idx, err := layout.ImageIndexFromPath(out)
		if err != nil {
			t.Fatal(err)
		}
		ii, err := idx.ImageIndex(mustDigest(t, idx))
		if err != nil {
			t.Fatal(err)
		}
		d, err := ii.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		manifest, err := ii.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(manifest.Manifests) != 2 {
			t.Fatalf("index holds %d images, want amd64 and arm64", len(manifest.Manifests))
		}
		for _, desc := range manifest.Manifests {
			img, err := ii.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			arch := desc.Platform.Architecture
			if cf.Architecture != arch || cf.OS != "linux" {
				t.Errorf("%s image's config says %s/%s", arch, cf.OS, cf.Architecture)
			}
			if cf.Config.User != "65532:65532" {
				t.Errorf("%s image runs as %q, want non-root 65532:65532", arch, cf.Config.User)
			}
			if cf.Config.Labels["org.opencontainers.image.version"] != "v1" || cf.Config.Labels["org.opencontainers.image.source"] == "" {
				t.Errorf("%s image labels %v", arch, cf.Config.Labels)
			}
			if got := fileIn(t, img, "manager"); got != "manager for "+arch {
				t.Errorf("%s image holds %q", arch, got)
			}
		}
	}
	if digests[0] != digests[1] {
		t.Fatalf("the same binaries packed twice (different mtimes and paths) gave %s and %s", digests[0], digests[1])
	}
}

func TestDockerArchiveForOnePlatform(t *testing.T) {
	src := t.TempDir()
	writeBinaries(t, src, time.Now())
	o := layoutOptions(src, "")
	o.ociLayout, o.out, o.platforms = "", filepath.Join(t.TempDir(), "manager.tar"), []string{"linux/arm64"}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(o.out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileIn(t, img, "manager"); got != "manager for arm64" {
		t.Fatalf("image holds %q", got)
	}
	o.platforms = []string{"linux/amd64", "linux/arm64"}
	if err := run(o); err == nil {
		t.Fatal("a docker archive cannot hold two platforms; want an error")
	}
}

func mustDigest(t *testing.T, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("layout index: %v, %v", m, err)
	}
	return m.Manifests[0].Digest
}

// fileIn returns the content of name in img's single layer.
func fileIn(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s not in the layer", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

// The whole pipeline `make images` runs, for the sidecar on arm64: built twice from the
// same source (once with an empty build cache, so nothing is reused), packed twice, the
// same image digest. Skipped with -short: the cold build compiles the standard library.
func TestVendImageIsReproducibleFromSource(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the sidecar from scratch")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for i, cache := range []string{"", t.TempDir()} {
		bin := filepath.Join(t.TempDir(), "linux_arm64", "vend")
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", bin, "./cmd/vend")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
		if cache != "" {
			cmd.Env = append(cmd.Env, "GOCACHE="+cache)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, out)
		}
		out := filepath.Join(t.TempDir(), "layout")
		o := options{tag: "pipes-operator/vend:test", ociLayout: out, user: "65532:65532", workdir: "/",
			binaries:  pairs{{src: filepath.Join(filepath.Dir(filepath.Dir(bin)), "linux_{arch}", "vend"), dst: "/vend"}},
			platforms: []string{"linux/arm64"}}
		if err := run(o); err != nil {
			t.Fatal(err)
		}
		idx, err := layout.ImageIndexFromPath(out)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, mustDigest(t, idx).String())
	}
	if digests[0] != digests[1] {
		t.Fatalf("the same source built and packed twice gave %s and %s", digests[0], digests[1])
	}
}
