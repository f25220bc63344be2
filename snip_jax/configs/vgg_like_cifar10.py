"""SNIP on VGG-like, CIFAR-10, 97% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  snip-jax-train --config=vgg_like_cifar10
  python experiments/train.py --config=vgg_like_cifar10  # the same, from a checkout

Paper (Lee et al. 2019, Table 3): 8.00% test error at 97% sparsity (reference: 8.26%).
"""

import ml_collections

from snip_jax.train.config import load_config


def get_config() -> ml_collections.ConfigDict:
  config = load_config("vgg_d_cifar10")  # The paper's CIFAR-10 recipe, set out there.
  config.model = "vgg_like"
  config.sparsity = 0.97
  return config
