"""SNIP on LeNet-5-Caffe, Fashion-MNIST, 99% sparsity.

Run it with:

  snip-jax-train --config=lenet5_fashion_mnist
  python experiments/train.py --config=lenet5_fashion_mnist  # the same, from a checkout

The paper (Lee et al. 2019, Table 1) reports 1.1% test error on MNIST at 99% sparsity (dense:
0.9%). Fashion-MNIST is harder; compare the gap to dense, not the error.
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "lenet5"
  config.sparsity = 0.99
  return config
