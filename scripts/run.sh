#!/usr/bin/env bash
# The main job: set up, then run the default SNIP experiment (LeNet-300-100, Fashion-MNIST,
# 98% sparsity). The set-up installs the runtime only (no test tools). Extra arguments go to
# snip-jax-train (= experiments/train.py), e.g. --config.sparsity=0; --help lists them all.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" runtime
exec .venv/bin/snip-jax-train "$@"
