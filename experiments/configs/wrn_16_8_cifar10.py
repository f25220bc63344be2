"""SNIP on WRN-16-8, CIFAR-10, 95% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  python experiments/train.py --config experiments/configs/wrn_16_8_cifar10.py

Paper (Lee et al. 2019, Table 3): 6.63% test error at 95% sparsity (reference: 6.21%).
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "wrn_16_8"
  config.dataset = "cifar10"
  config.augment = True
  config.sparsity = 0.95
  # The paper's CIFAR-10 recipe (explained in vgg_d_cifar10.py; tests/test_configs.py checks
  # that every CIFAR-10 config has the same).
  config.batch_size = 128
  config.score_batch_size = 128
  config.lr_decay_every_steps = 30_000
  config.num_epochs = 427
  config.eval_batch_size = 500
  return config
