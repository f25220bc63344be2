"""Runs a SNIP experiment: prune at initialisation, train with the mask fixed, evaluate.

  python experiments/train.py                       # the default config: LeNet-300-100 at 98%
  python experiments/train.py --config=lenet5_fashion_mnist --workdir=runs/lenet5 \
      --config.sparsity=0.95 --config.seed=1
  python experiments/train.py --config.criterion=synflow --config.distribution=erk
  python experiments/train.py --help                # every flag and config field

The same command as the installed ``snip-jax-train`` (:mod:`snip_jax.cli`): a checkout runs it
without installing the console script. Running the same command again resumes the run from its
newest checkpoint in the workdir; on SIGTERM the run saves a checkpoint and exits with status 143.
"""

import sys

from snip_jax import cli

if __name__ == "__main__":
  sys.exit(cli.train_main())
