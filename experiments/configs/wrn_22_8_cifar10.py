"""SNIP on WRN-22-8, CIFAR-10, 95% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  python experiments/train.py --config experiments/configs/wrn_22_8_cifar10.py

Paper (Lee et al. 2019, Table 3): 5.85% test error at 95% sparsity (reference: 6.14%).
"""

import ml_collections

from configs import vgg_d_cifar10


def get_config() -> ml_collections.ConfigDict:
  config = vgg_d_cifar10.get_config()
  config.model = "wrn_22_8"
  return config
