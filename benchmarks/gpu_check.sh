#!/usr/bin/env bash
# The GPU check, for a borrowed GPU machine without a package registry (~10 minutes on one H200,
# compiles included): installs offline what fails to import, runs the core tests and the
# benchmark sections with GPU sizes (a short VGG-D training on mock CIFAR-10 among them), and
# writes JSON under OUT/<machine id>/ with a preview of the report in OUT/BENCHMARKS.md.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--wheels DIR] [--out DIR] [--sections LIST]
#
# --wheels DIR  the wheels fetched beforehand on a machine with internet (default: wheels); the
#               commands: python -m benchmarks.gpu_check fetch, or BENCHMARKS.md's GPU part.
# --out DIR     where the results go (default: benchmarks/results; with --dry-run a new
#               temporary folder).
# --sections LIST  only these of the GPU sections (comma-separated; default all): to rerun one
#               that failed, or a quicker rehearsal.
# --dry-run     the same plumbing on the CPU at tiny sizes: prints what it would install
#               (installs nothing), runs the first core test file, the quick sections, renders.
#
# PYTHON names the interpreter (default: python3). snip_jax is not installed: it runs from this
# checkout (PYTHONPATH). Exits non-zero when a test or a section failed, after running the rest.
set -euo pipefail

usage() {
  echo "usage: bash benchmarks/gpu_check.sh [--dry-run] [--wheels DIR] [--out DIR] [--sections LIST]" >&2
  exit 2
}
fail() {
  echo "gpu_check: $*" >&2
  exit 1
}
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac }

DRY_RUN=0
WHEELS=wheels
OUT=""
CHOSEN=""
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --wheels) (($# >= 2)) || usage; WHEELS="$2"; shift ;;
    --wheels=*) WHEELS="${1#*=}" ;;
    --out) (($# >= 2)) || usage; OUT="$2"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    --sections) (($# >= 2)) || usage; CHOSEN="$2"; shift ;;
    --sections=*) CHOSEN="${1#*=}" ;;
    *) usage ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$(absolute "$WHEELS")"
if [[ -n $OUT ]]; then
  OUT="$(absolute "$OUT")"
elif ((DRY_RUN)); then
  OUT="$(mktemp -d "${TMPDIR:-/tmp}/snip_jax_gpu_check_XXXXXX")"
else
  OUT="$ROOT/benchmarks/results"
fi
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# One XLA compilation cache for the tests and the benchmarks (they compile some programs alike).
if [[ -z ${JAX_COMPILATION_CACHE_DIR:-} ]]; then
  JAX_COMPILATION_CACHE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/snip_jax_xla_cache_XXXXXX")"
  export JAX_COMPILATION_CACHE_DIR
  trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
fi
if ((DRY_RUN)); then
  export JAX_PLATFORMS=cpu
fi
SECONDS=0
step() { echo "== gpu_check [${SECONDS} s]: $*"; }
gpu_check() { "$PYTHON" -m benchmarks.gpu_check "$@" | tail -n 1; }

# The sections, checked before anything is installed or run (an unknown one is refused, naming
# the sections; the module imports only the standard library).
SECTIONS="$(gpu_check sections ${CHOSEN:+"$CHOSEN"})"

# 1. What fails to import, installed offline from the wheels (never snip_jax itself).
step "what fails to import"
# (Each answer is assigned first, so that a failing command stops the check: set -e.)
answer="$(gpu_check missing)"
read -ra MISSING <<<"$answer"
answer="$(gpu_check missing_optional)"
read -ra OPTIONAL <<<"$answer"
for dist in "${OPTIONAL[@]}"; do
  echo "gpu_check: $dist is not installed: the rows that need it will say 'not run'."
done
if ((${#MISSING[@]} == 0)); then
  echo "nothing to install"
elif ((DRY_RUN)); then
  echo "would install from $WHEELS: ${MISSING[*]}"
else
  for dist in "${MISSING[@]}"; do
    log="$(mktemp "${TMPDIR:-/tmp}/snip_jax_pip_XXXXXX")"
    install=("$PYTHON" -m pip install --no-index --find-links "$WHEELS" "$dist")
    echo "installing $dist from $WHEELS"
    if ! "${install[@]}" >"$log" 2>&1; then
      if grep -q externally-managed-environment "$log" &&
        "${install[@]}" --break-system-packages >"$log" 2>&1; then
        continue
      fi
      needed="$(grep -o 'No matching distribution found for [^ ]*' "$log" | tail -n 1 || true)"
      if [[ -n $needed ]]; then
        what="${needed##* }"
        [[ $what == "$dist" ]] || what="$what (needed by $dist)"
        fail "no wheel of $what in $WHEELS (pip's log: $log); fetch the wheels on a machine" \
          "with internet: $(gpu_check fetch "$WHEELS" "$dist")"
      fi
      fail "pip could not install $dist: $(tail -n 1 "$log") (pip's log: $log)"
    fi
  done
  answer="$(gpu_check missing)"
  read -ra STILL <<<"$answer"
  if ((${#STILL[@]})); then
    fail "installed, yet ${STILL[*]} fail to import: run $PYTHON -c 'import ...' to see why."
  fi
fi

ID="$(gpu_check machine_id)"
if ((!DRY_RUN)) && [[ $ID == cpu-* ]]; then
  fail "JAX sees no accelerator here (machine $ID): check jax.devices() and JAX's CUDA build;" \
    "--dry-run is the rehearsal on a CPU."
fi
DIR="$OUT/$ID"
mkdir -p "$DIR"
echo "machine $ID: results in $DIR"

# 2. The core tests, stopped at a time limit (SIGINT: pytest still writes its report).
answer="$(gpu_check core_tests $( ((DRY_RUN)) && echo --dry-run))"
read -ra TESTS <<<"$answer"
# (A rehearsal's limit is generous: on a busy CPU its one file may take minutes.)
LIMIT=$( ((DRY_RUN)) && echo 600 || echo 150)
step "core tests (${TESTS[*]}; at most $LIMIT s)"
tests_rc=0
timeout --signal=INT --kill-after=30 "$LIMIT" "$PYTHON" -m pytest -q -p no:cacheprovider \
  -p no:xdist -m "not slow" --junitxml="$DIR/core_tests.xml" "${TESTS[@]}" || tests_rc=$?
gpu_check summarise "$DIR/core_tests.xml" "$DIR/core_tests.json" \
  "pytest -m \"not slow\" ${TESTS[*]}" "$LIMIT" "$tests_rc" ||
  echo "gpu_check: could not summarise the core tests; going on with the benchmarks." >&2

# 3. The benchmark sections with GPU sizes (tiny ones for a dry run), then the report.
PROFILE=$( ((DRY_RUN)) && echo --quick || echo --profile=gpu)
step "benchmarks $PROFILE --sections=$SECTIONS"
bench_rc=0
"$PYTHON" -m benchmarks.run "$PROFILE" --sections="$SECTIONS" --out="$DIR" --results="$OUT" \
  --keep_going || bench_rc=$?

# What the check did, for the record (the sections' JSON and core_tests.json hold the rest).
printf '{"dry_run": %s, "failed_to_import": [%s], "installed": %s, "core_tests_returncode": %d, "benchmarks_returncode": %d, "seconds": %d}\n' \
  "$( ((DRY_RUN)) && echo true || echo false)" \
  "$(for d in ${MISSING[@]+"${MISSING[@]}"}; do printf '"%s", ' "$d"; done | sed 's/, $//')" \
  "$( ((DRY_RUN || ${#MISSING[@]} == 0)) && echo false || echo true)" \
  "$tests_rc" "$bench_rc" "$SECONDS" >"$DIR/gpu_check.json"
step "done: the results in $DIR, the report rendered from $OUT (its path above)"
if ((tests_rc || bench_rc)); then
  fail "core tests exited $tests_rc, benchmarks $bench_rc: see above and $DIR."
fi
