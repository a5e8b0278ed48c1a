#!/usr/bin/env bash
# Builds the kubectl-pipes release archives for every platform of config/krew/pipes.yaml
# into bin/krew/, and writes the manifest filled with VERSION and their sha256 sums to
# bin/krew/pipes.yaml (upload the archives to the release VERSION, then submit it).
# Usage: hack/krew-release.sh VERSION   (make plugin-release VERSION=v0.3.0)
set -euo pipefail
version=${1:?usage: hack/krew-release.sh VERSION}
cd "$(dirname "$0")/.."
out=bin/krew
rm -rf "$out" && mkdir -p "$out"
manifest=$(sed "s/{{VERSION}}/$version/g" config/krew/pipes.yaml)
for platform in $(grep -o '{{SHA256_[a-z0-9]*_[a-z0-9]*}}' config/krew/pipes.yaml | sed 's/{{SHA256_\(.*\)}}/\1/'); do
	os=${platform%_*} arch=${platform#*_}
	dir=$(mktemp -d)
	echo "building $os/$arch"
	GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o "$dir/kubectl-pipes" ./cmd/kubectl-pipes
	cp LICENSE "$dir/"
	archive="$out/kubectl-pipes_${version}_${platform}.tar.gz"
	tar -C "$dir" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - kubectl-pipes LICENSE | gzip -n > "$archive"
	rm -rf "$dir"
	sum=$(sha256sum "$archive" | cut -d' ' -f1)
	manifest=${manifest//"{{SHA256_$platform}}"/$sum}
done
if grep -q '{{' <<<"$manifest"; then
	echo "placeholders left in the manifest:" >&2; grep '{{' <<<"$manifest" >&2; exit 1
fi
printf '%s\n' "$manifest" > "$out/pipes.yaml"
echo "wrote $out/pipes.yaml and the archives beside it"
