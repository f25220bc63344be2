"""SNIP on WRN-16-10, CIFAR-10, 95% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  snip-jax-train --config=wrn_16_10_cifar10
  python experiments/train.py --config=wrn_16_10_cifar10  # the same, from a checkout

Paper (Lee et al. 2019, Table 3): 6.43% test error at 95% sparsity (reference: 5.91%).
"""

import ml_collections

from snip_jax.train.config import load_config


def get_config() -> ml_collections.ConfigDict:
  config = load_config("vgg_d_cifar10")  # The paper's CIFAR-10 recipe, set out there.
  config.model = "wrn_16_10"
  return config
