// Command image packs static binaries into a single-layer container image, with no
// container engine and no registry. It writes either a docker-archive tarball ("docker
// save" format, one platform), which `ctr images import` loads into containerd (the e2e
// harness makes its images so), or an OCI image layout holding a multi-platform index
// (`make images`), which any OCI tool (crane, skopeo, oras) can push to a registry.
//
// The output is reproducible: the same binaries, flags and labels give the same digest
// (sorted entries, zero mtimes, root ownership, a fixed creation time).
//
// The image holds the binaries, a minimal /etc/passwd and /etc/group (root and the
// non-root user), a world-writable sticky /tmp, and runs as the non-root user 65532 unless
// --user says otherwise.
//
// Usage:
//
//	go run ./hack/image --tag pipes.local/manager:e2e \
//	  --binary bin/manager=/manager --entrypoint /manager --out bin/e2e/manager.tar
//	go run ./hack/image --tag pipes-operator/manager:v1 --platform linux/amd64 --platform linux/arm64 \
//	  --binary 'bin/linux_{arch}/manager=/manager' --label org.opencontainers.image.version=v1 \
//	  --oci-layout bin/images/manager
//
// --binary, --file, --platform, --label and --env may be repeated; {arch} in a --binary
// or --file source is replaced by each platform's architecture; --entrypoint and --cmd
// take a comma-separated list.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// pair is one SRC=DST argument.
type pair struct{ src, dst string }

type pairs []pair

func (p *pairs) String() string {
	s := make([]string, 0, len(*p))
	for _, x := range *p {
		s = append(s, x.src+"="+x.dst)
	}
	return strings.Join(s, ",")
}

func (p *pairs) Set(v string) error {
	src, dst, ok := strings.Cut(v, "=")
	if !ok || src == "" || dst == "" {
		return fmt.Errorf("want SRC=DST (host path = absolute path in the image), got %q", v)
	}
	if !path.IsAbs(dst) {
		return fmt.Errorf("destination %q must be an absolute path in the image", dst)
	}
	*p = append(*p, pair{src: src, dst: path.Clean(dst)})
	return nil
}

type options struct {
	tag        string
	out        string
	binaries   pairs
	files      pairs
	entrypoint string
	cmd        string
	user       string
	workdir    string
	env        []string
	arch       string
	platforms  []string
	labels     map[string]string
	ociLayout  string
}

func main() {
	o := options{labels: map[string]string{}}
	flag.StringVar(&o.tag, "tag", "", "image reference, e.g. pipes.local/manager:e2e (required)")
	flag.StringVar(&o.out, "out", "", "output docker-archive tarball path (one platform; this or --oci-layout)")
	flag.StringVar(&o.ociLayout, "oci-layout", "", "output OCI image layout directory, holding an index of every --platform")
	flag.Func("platform", "os/arch of an image in the --oci-layout index, e.g. linux/arm64 (repeatable; default linux/--arch)", func(v string) error {
		if goos, arch, ok := strings.Cut(v, "/"); !ok || goos != "linux" || arch == "" {
			return fmt.Errorf("want linux/ARCH, got %q", v)
		}
		o.platforms = append(o.platforms, v)
		return nil
	})
	flag.Func("label", "KEY=VALUE image label, e.g. org.opencontainers.image.version=v1 (repeatable)", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		o.labels[k] = val
		return nil
	})
	flag.Var(&o.binaries, "binary", "SRC=DST: host executable SRC at image path DST, mode 0755 (repeatable)")
	flag.Var(&o.files, "file", "SRC=DST: host file SRC at image path DST, mode 0644 (repeatable)")
	flag.StringVar(&o.entrypoint, "entrypoint", "", "comma-separated entrypoint, e.g. /kit,pause (default: the first --binary)")
	flag.StringVar(&o.cmd, "cmd", "", "comma-separated default arguments")
	flag.StringVar(&o.user, "user", "65532:65532", "user the image runs as (uid:gid)")
	flag.StringVar(&o.workdir, "workdir", "/", "working directory")
	flag.StringVar(&o.arch, "arch", runtime.GOARCH, "image architecture")
	flag.Func("env", "KEY=VALUE environment variable (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		o.env = append(o.env, v)
		return nil
	})
	flag.Usage = func() {
		_, _ = fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./hack/image --tag REF --binary SRC=DST [--binary ...] --out FILE.tar [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.tag == "" || (o.out == "") == (o.ociLayout == "") || len(o.binaries) == 0 {
		flag.Usage()
		return errors.New("--tag, one of --out and --oci-layout, and at least one --binary are required")
	}
	ref, err := name.NewTag(o.tag, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("--tag %q: %w", o.tag, err)
	}
	if o.ociLayout != "" {
		return writeLayout(o, ref)
	}
	if len(o.platforms) > 1 {
		return errors.New("--out holds one platform; use --oci-layout for several")
	}
	if len(o.platforms) == 1 {
		o.arch = strings.TrimPrefix(o.platforms[0], "linux/")
	}
	img, err := buildImage(o, o.arch)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(o.out); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: a build output directory, readable like bin/
			return err
		}
	}
	tmp := o.out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	if err := os.Rename(tmp, o.out); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", o.out, ref.String(), digest)
	return nil
}

// writeLayout writes an OCI image layout whose index holds one image per platform,
// replacing whatever was in the directory.
func writeLayout(o options, ref name.Tag) error {
	platforms := o.platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/" + o.arch}
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		arch := strings.TrimPrefix(p, "linux/")
		img, err := buildImage(o, arch)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: arch},
		}})
	}
	if err := os.RemoveAll(o.ociLayout); err != nil {
		return err
	}
	// The layout's index.json points at the multi-platform index, named by its tag, as
	// `oci:DIR:TAG` in skopeo and crane expect.
	l, err := layout.Write(o.ociLayout, empty.Index)
	if err == nil {
		err = l.AppendIndex(idx, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref.TagStr(),
			"io.containerd.image.name":          ref.String(),
		}))
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", o.ociLayout, err)
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s (%s)\n", o.ociLayout, ref.String(), digest, strings.Join(platforms, ", "))
	return nil
}

// buildImage packs the binaries and files for arch ({arch} in their sources replaced).
func buildImage(o options, arch string) (v1.Image, error) {
	uid, gid, err := parseUser(o.user)
	if err != nil {
		return nil, err
	}
	o.binaries, o.files = o.binaries.forArch(arch), o.files.forArch(arch)
	layerTar, err := buildLayer(o, uid, gid)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	base := empty.Image
	if o.ociLayout != "" {
		base = mutate.MediaType(base, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = arch
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	for i := range cf.History {
		cf.History[i].Created = cf.Created
		cf.History[i].CreatedBy = "hack/image"
	}
	cf.Config.User = o.user
	cf.Config.WorkingDir = o.workdir
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"}, o.env...)
	if o.entrypoint != "" {
		cf.Config.Entrypoint = splitList(o.entrypoint)
	} else {
		cf.Config.Entrypoint = []string{o.binaries[0].dst}
	}
	if o.cmd != "" {
		cf.Config.Cmd = splitList(o.cmd)
	}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.source": "github.com/pipes-dev/pipes-operator"}
	for k, v := range o.labels {
		cf.Config.Labels[k] = v
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// forArch replaces {arch} in the sources.
func (p pairs) forArch(arch string) pairs {
	out := make(pairs, len(p))
	for i, x := range p {
		out[i] = pair{src: strings.ReplaceAll(x.src, "{arch}", arch), dst: x.dst}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func parseUser(u string) (uid, gid int, err error) {
	us, gs, hasGroup := strings.Cut(u, ":")
	if _, err = fmt.Sscanf(us, "%d", &uid); err != nil {
		return 0, 0, fmt.Errorf("--user %q: want numeric uid[:gid]", u)
	}
	gid = uid
	if hasGroup {
		if _, err = fmt.Sscanf(gs, "%d", &gid); err != nil {
			return 0, 0, fmt.Errorf("--user %q: want numeric uid[:gid]", u)
		}
	}
	return uid, gid, nil
}

// entry is one file of the layer.
type entry struct {
	hdr  tar.Header
	data []byte
}

// buildLayer returns an uncompressed, reproducible (sorted, mtime 0, owner root) layer tar.
func buildLayer(o options, uid, gid int) ([]byte, error) {
	epoch := time.Unix(0, 0).UTC()
	entries := map[string]*entry{}
	dir := func(p string, mode int64) {
		entries[p] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode}}
	}
	file := func(p string, mode int64, data []byte) {
		entries[p] = &entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}, data: data}
	}
	parents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := entries[strings.TrimPrefix(d, "/")]; !ok {
				dir(strings.TrimPrefix(d, "/"), 0o755)
			}
		}
	}

	dir("etc", 0o755)
	dir("tmp", 0o1777)
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" //nolint:gosec // G101: the image's /etc/passwd, which holds no password
	group := "root:x:0:\n"
	if uid != 0 {
		passwd += fmt.Sprintf("nonroot:x:%d:%d:nonroot:/tmp:/sbin/nologin\n", uid, gid)
	}
	if gid != 0 {
		group += fmt.Sprintf("nonroot:x:%d:\n", gid)
	}
	file("etc/passwd", 0o644, []byte(passwd))
	file("etc/group", 0o644, []byte(group))
	file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))

	add := func(ps pairs, mode int64, wantExec bool) error {
		for _, p := range ps {
			st, err := os.Stat(p.src)
			if err != nil {
				return err
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("%s is not a regular file", p.src)
			}
			if wantExec && st.Mode().Perm()&0o111 == 0 {
				return fmt.Errorf("%s is not executable", p.src)
			}
			data, err := os.ReadFile(p.src)
			if err != nil {
				return err
			}
			if wantExec && !isStaticELF(data) {
				fmt.Fprintf(os.Stderr, "image: warning: %s does not look like a static binary; the image has no libc (build with CGO_ENABLED=0)\n", p.src)
			}
			parents(p.dst)
			file(strings.TrimPrefix(p.dst, "/"), mode, data)
		}
		return nil
	}
	if err := add(o.binaries, 0o755, true); err != nil {
		return nil, err
	}
	if err := add(o.files, 0o644, false); err != nil {
		return nil, err
	}

	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		e.hdr.ModTime, e.hdr.Uid, e.hdr.Gid, e.hdr.Format = epoch, 0, 0, tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// isStaticELF reports whether data is an ELF file without a PT_INTERP program header
// (a dynamically linked binary would not start in an image without libc).
func isStaticELF(data []byte) bool {
	if len(data) < 64 || string(data[:4]) != "\x7fELF" || data[4] != 2 /* 64-bit */ || data[5] != 1 /* little endian */ {
		return true // not something we know how to inspect: do not warn
	}
	le := func(b []byte) uint64 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v
	}
	phoff, phentsize, phnum := le(data[32:40]), le(data[54:56]), le(data[56:58])
	for i := uint64(0); i < phnum; i++ {
		off := phoff + i*phentsize
		if off+4 > uint64(len(data)) {
			break
		}
		if le(data[off:off+4]) == 3 { // PT_INTERP
			return false
		}
	}
	return true
}
