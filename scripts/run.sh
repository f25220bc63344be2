#!/usr/bin/env bash
# The main job: set up, then run the default SNIP experiment (LeNet-300-100, Fashion-MNIST,
# 98% sparsity). Extra arguments go to experiments/train.py, e.g. --config.sparsity=0.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/python experiments/train.py "$@"
