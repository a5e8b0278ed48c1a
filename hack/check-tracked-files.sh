#!/usr/bin/env bash
# check-tracked-files.sh fails when Git tracks a build output: an executable binary (ELF,
# Mach-O, PE) or any file over 1 MiB. Build outputs belong in bin/ (ignored), not in Git.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
status=0
while IFS= read -r -d '' f; do
  [[ -f "$f" ]] || continue
  size=$(stat -c %s "$f")
  if (( size > 1048576 )); then
    echo "tracked file over 1 MiB: $f ($((size / 1048576)) MiB); build outputs belong in bin/, which is ignored" >&2
    status=1
  fi
  magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
  case "$magic" in
    7f454c46|cffaedfe|cefaedfe|feedface|feedfacf|4d5a*)
      # 4d5a ("MZ") is also how some text files start; only flag it for non-text files.
      if [[ "$magic" != 4d5a* ]] || ! grep -qI . "$f"; then
        echo "tracked executable: $f; remove it from Git (git rm --cached) and build it into bin/" >&2
        status=1
      fi ;;
  esac
done < <(git ls-files -z)
exit $status
