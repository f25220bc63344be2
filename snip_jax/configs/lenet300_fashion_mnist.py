"""SNIP on LeNet-300-100, Fashion-MNIST, 98% sparsity: the default experiment.

Run it with:

  snip-jax-train --config=lenet300_fashion_mnist
  python experiments/train.py --config=lenet300_fashion_mnist  # the same, from a checkout

The paper (Lee et al. 2019, Table 1) reports 2.4% test error on MNIST at 98% sparsity (dense:
1.7%). Fashion-MNIST is a harder drop-in replacement; compare the gap to dense, not the error.

Every field is at its default (``default.py``; documented in ``snip_jax/train/config.py``): this
file names the paper's row that the default config is.
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  return default_config()
