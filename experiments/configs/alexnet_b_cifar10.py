"""SNIP on AlexNet-b, CIFAR-10, 90% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  python experiments/train.py --config experiments/configs/alexnet_b_cifar10.py

Paper (Lee et al. 2019, Table 3): 14.50% test error at 90% sparsity (reference: 13.92%).
"""

import ml_collections

from configs import vgg_d_cifar10


def get_config() -> ml_collections.ConfigDict:
  config = vgg_d_cifar10.get_config()
  config.model = "alexnet_b"
  config.sparsity = 0.9
  return config
