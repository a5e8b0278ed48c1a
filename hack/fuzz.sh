#!/usr/bin/env bash
# fuzz.sh is `make fuzz`: run every fuzz target in the repository (every `func FuzzXxx` in
# a _test.go file, found anew on each run, in every Go module here) for FUZZTIME each
# (default 30s), one at a time with one worker, and fail if any fails. A failing input is
# written by Go to the package's testdata/fuzz/<Target>/: commit it with the fix, and it
# runs as a regression test with every `go test` from then on.
#
#   FUZZTIME=10s hack/fuzz.sh              # every target, 10 s each
#   FUZZ_FILTER=backendapi hack/fuzz.sh    # only targets whose "package Target" matches
#   FUZZ_LIST=1 hack/fuzz.sh               # list the targets, run none
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FUZZTIME="${FUZZTIME:-30s}"
FUZZ_FILTER="${FUZZ_FILTER:-}"
# Go's own test timeout, for the seed corpus run and the fuzzing together.
FUZZ_TEST_TIMEOUT="${FUZZ_TEST_TIMEOUT:-30m}"

# Each target as "MODULE_DIR PACKAGE_DIR TARGET", the package relative to its module.
targets=()
while IFS= read -r file; do
  dir=$(dirname "$file")
  mod=$dir
  while [[ ! -f "$mod/go.mod" ]]; do mod=$(dirname "$mod"); done
  rel=${dir#"$mod"}; rel=./${rel#/}
  while IFS= read -r name; do
    targets+=("$mod $rel $name")
  done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file")
done < <(grep -rl --include='*_test.go' --exclude-dir=.git --exclude-dir=bin --exclude-dir=testdata -e '^func Fuzz' . | sed 's|^\./||' | sort)

if [[ ${#targets[@]} -eq 0 ]]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi

failed=()
ran=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
for t in "${targets[@]}"; do
  read -r mod pkg name <<<"$t"
  label="${mod#.}${pkg#.} $name"; label=${label#/}
  if [[ -n "$FUZZ_FILTER" ]] && ! grep -qE -- "$FUZZ_FILTER" <<<"$label"; then
    continue
  fi
  if [[ -n "${FUZZ_LIST:-}" ]]; then
    echo "$label"
    continue
  fi
  echo "fuzz: $label for $FUZZTIME" >&2
  t0=$SECONDS
  corpus="${mod%/}/${pkg#./}/testdata/fuzz/$name"
  before=$(ls "$corpus" 2>/dev/null | sort || true)
  # A run can fail with a bare "context deadline exceeded" when -fuzztime ends while a
  # worker is busy: a race in Go's fuzzing coordinator (golang/go#75804, unfixed in Go
  # 1.26), not an input of ours. It writes no failing input, so such a run is repeated
  # (at most twice); a run that wrote an input, or failed otherwise, fails at once.
  for attempt in 1 2 3; do
    # -short: fuzz targets need no envtest, and a TestMain that would start one for the
    # package's suites (cmd/kubectl-pipes) skips it, in the coordinator and in each worker.
    # The progress lines are left out; with pipefail the status is go test's.
    if go -C "$mod" test "$pkg" -short -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -parallel 1 -timeout "$FUZZ_TEST_TIMEOUT" 2>&1 |
      { grep -v '^fuzz: elapsed: ' || true; } | tee "$log"; then
      status=passed
      break
    fi
    status=FAILED
    after=$(ls "$corpus" 2>/dev/null | sort || true)
    if [[ "$after" == "$before" && $attempt -lt 3 ]] &&
      grep -qx -- "--- FAIL: $name ([0-9.]*s)" "$log" && grep -qx '    context deadline exceeded' "$log"; then
      echo "fuzz: $label ended on Go's fuzzing-coordinator race (golang/go#75804) with no failing input; running it again" >&2
      continue
    fi
    break
  done
  if [[ $status == passed ]]; then
    echo "fuzz: $label passed ($((SECONDS - t0)) s)" >&2
  else
    echo "fuzz: $label FAILED ($((SECONDS - t0)) s); a failing input, if one was found, is in ${corpus#./}/" >&2
    failed+=("$label")
  fi
  ran=$((ran + 1))
done
[[ -n "${FUZZ_LIST:-}" ]] && exit 0

echo "fuzz: $ran targets in $((SECONDS - start)) s" >&2
if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
