"""SNIP on VGG-like, CIFAR-10, 97% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  python experiments/train.py --config experiments/configs/vgg_like_cifar10.py

Paper (Lee et al. 2019, Table 3): 8.00% test error at 97% sparsity (reference: 8.26%).
"""

import ml_collections

from configs import vgg_d_cifar10


def get_config() -> ml_collections.ConfigDict:
  config = vgg_d_cifar10.get_config()
  config.model = "vgg_like"
  config.sparsity = 0.97
  return config
