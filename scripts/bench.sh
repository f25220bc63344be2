#!/usr/bin/env bash
# The benchmarks: set up (PyTorch included, for the comparison), then run the suite, which
# writes benchmarks/results/<machine id>/*.json and BENCHMARKS.md. Extra arguments go to
# benchmarks/run.py (e.g. --quick, --sections=selection). setup.sh leaves us in the repository root, where
# `python -m benchmarks.run` finds the benchmarks package.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" bench
exec .venv/bin/python -m benchmarks.run "$@"
