"""Runs a SNIP experiment: prune at initialisation, train with the mask fixed, evaluate.

  python experiments/train.py                       # LeNet-300-100, Fashion-MNIST, sparsity 98%
  python experiments/train.py --config experiments/configs/lenet5_fashion_mnist.py \
      --workdir runs/lenet5 --config.sparsity=0.95 --config.seed=1
  python experiments/train.py --config.criterion=synflow --config.distribution=erk

This file only parses flags; the experiment is snip_jax.train.train_and_evaluate.
"""

import logging
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from snip_jax import train

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  str(Path(__file__).parent / "configs" / "lenet300_fashion_mnist.py"),
  "Experiment config file; override fields with --config.<field>=<value>.",
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Directory for the results files (default: runs/<model>_<dataset>_sp<s>_seed<n>).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)
  config = _CONFIG.value
  try:
    train.train_and_evaluate(config, _WORKDIR.value or train.default_workdir(config))
  except (ValueError, FileNotFoundError) as e:  # Bad config or missing data: the message says
    raise SystemExit(f"error: {e}") from e  # what to fix; a traceback would only bury it.


if __name__ == "__main__":
  app.run(main)
