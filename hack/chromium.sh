#!/usr/bin/env bash
# Prints the path of a Chromium for the widget's browser suite (test/widget), installing
# Debian's chromium package first when it is missing (as root, like hack/e2e-cluster.sh
# installs its packages). CHROMIUM, when set, is used as it is.
set -euo pipefail

if [[ -n "${CHROMIUM:-}" ]]; then
  echo "$CHROMIUM"
  exit 0
fi
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null; then
    command -v "$b"
    exit 0
  fi
done
if [[ $EUID -ne 0 ]]; then
  echo "Chromium is missing and installing it needs root: sudo apt-get install chromium (or set CHROMIUM to a Chromium or Chrome binary)" >&2
  exit 1
fi
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
opts=(-y -q --no-install-recommends)
echo "installing Debian's chromium package for the widget's browser suite" >&2
if ! apt-get install "${opts[@]}" chromium >"$log" 2>&1; then
  apt-get update -q >>"$log" 2>&1 && apt-get install "${opts[@]}" chromium >>"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; echo "apt-get install chromium failed (see $log)" >&2; exit 1; }
fi
rm -f "$log"
command -v chromium
