"""SNIP on AlexNet-b, CIFAR-10, 90% sparsity (the paper's CIFAR-10 settings, see vgg_d_cifar10).

Run it with:

  python experiments/train.py --config experiments/configs/alexnet_b_cifar10.py

Paper (Lee et al. 2019, Table 3): 14.50% test error at 90% sparsity (reference: 13.92%).
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "alexnet_b"
  config.dataset = "cifar10"
  config.augment = True
  config.sparsity = 0.9
  # The paper's CIFAR-10 recipe (explained in vgg_d_cifar10.py; tests/test_configs.py checks
  # that every CIFAR-10 config has the same).
  config.batch_size = 128
  config.score_batch_size = 128
  config.lr_decay_every_steps = 30_000
  config.num_epochs = 427
  config.eval_batch_size = 500
  return config
