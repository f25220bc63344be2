"""SNIP on LeNet-300-100, MNIST, 98% sparsity: the paper's Table 2 row (needs the MNIST IDX files).

Run it with:

  snip-jax-train --config=lenet300_mnist
  python experiments/train.py --config=lenet300_mnist  # the same, from a checkout

Paper (Lee et al. 2019, Table 2): 2.4% test error at 98% sparsity (reference: 1.7%).
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.dataset = "mnist"
  return config
