"""SNIP on WRN-16-10, CIFAR-10, 95% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  python experiments/train.py --config experiments/configs/wrn_16_10_cifar10.py

Paper (Lee et al. 2019, Table 3): 6.43% test error at 95% sparsity (reference: 5.91%).
"""

from pathlib import Path

import ml_collections

from snip_jax.train.config import load_config


def get_config() -> ml_collections.ConfigDict:
  # The paper's CIFAR-10 recipe, which vgg_d_cifar10.py sets out (a file beside this one, loaded
  # by its path so that this config loads from anywhere).
  config = load_config(Path(__file__).with_name("vgg_d_cifar10.py"))
  config.model = "wrn_16_10"
  return config
