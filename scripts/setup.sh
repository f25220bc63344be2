#!/usr/bin/env bash
# Sets up a fresh machine for snip-jax, idempotently:
#   - Debian's dataset-fashion-mnist (real Fashion-MNIST IDX files) where apt-get is available;
#   - a virtual environment .venv with requirements-dev.txt and the package (pip install -e .),
#     reinstalled only when a requirements file or pyproject.toml changes.
# Sourced by scripts/run.sh and scripts/test.sh; progress messages go to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

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
STAMP=.venv/.snip-jax-installed
WANT="$(cat requirements.txt requirements-dev.txt benchmarks/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "setup: installing requirements into .venv (a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -e . >&2
  echo "$WANT" >"$STAMP"
fi
