#!/usr/bin/env bash
# The tests: set up, then format check and lint (ruff), then the test suite (pytest), one test
# file per worker on up to 4 cores (pytest-xdist). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" dev
.venv/bin/ruff format --check .
.venv/bin/ruff check .
# Several test files read the real Fashion-MNIST and MNIST from the default TFDS directory:
# prepare them once here (idempotent; ~30 s each the first time) rather than in several workers
# at once.
.venv/bin/python -c "
from snip_jax import data
for name in ('fashion_mnist', 'mnist'):
  try:
    data.load_dataset(name)
  except data.DataNotFoundError:
    pass  # Its tests skip (and fail in CI, where it must be installed).
"
exec .venv/bin/python -m pytest --numprocesses=auto --maxprocesses=4 --dist=loadfile "$@"
