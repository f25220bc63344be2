"""SNIP on VGG-C, CIFAR-10, 95% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  snip-jax-train --config=vgg_c_cifar10
  python experiments/train.py --config=vgg_c_cifar10  # the same, from a checkout

Paper (Lee et al. 2019, Table 3): 7.27% test error at 95% sparsity (reference: 6.82%).
"""

import ml_collections

from snip_jax.train.config import load_config


def get_config() -> ml_collections.ConfigDict:
  config = load_config("vgg_d_cifar10")  # The paper's CIFAR-10 recipe, set out there.
  config.model = "vgg_c"
  return config
