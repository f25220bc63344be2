"""SNIP on AlexNet-s, CIFAR-10, 90% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  snip-jax-train --config=alexnet_s_cifar10
  python experiments/train.py --config=alexnet_s_cifar10  # the same, from a checkout

Paper (Lee et al. 2019, Table 3): 14.99% test error at 90% sparsity (reference: 14.12%).
"""

import ml_collections

from snip_jax.train.config import load_config


def get_config() -> ml_collections.ConfigDict:
  config = load_config("vgg_d_cifar10")  # The paper's CIFAR-10 recipe, set out there.
  config.model = "alexnet_s"
  config.sparsity = 0.9
  return config
