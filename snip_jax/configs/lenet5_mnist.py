"""SNIP on LeNet-5-Caffe, MNIST, 99% sparsity: the paper's Table 2 row (needs the MNIST IDX files).

Run it with:

  snip-jax-train --config=lenet5_mnist
  python experiments/train.py --config=lenet5_mnist  # the same, from a checkout

Paper (Lee et al. 2019, Table 2): 1.1% test error at 99% sparsity (reference: 0.9%).
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "lenet5"
  config.dataset = "mnist"
  config.sparsity = 0.99
  return config
