"""SNIP on VGG-D, CIFAR-10, 95% sparsity: the paper's CIFAR-10 setting, which every other
CIFAR-10 config loads from this file and changes only in its model and sparsity.

Run it with (a GPU or TPU; one step takes seconds on a CPU):

  snip-jax-train --config=vgg_d_cifar10
  python experiments/train.py --config=vgg_d_cifar10  # the same, from a checkout

Paper (Lee et al. 2019, Table 3): 7.09% test error at 95% sparsity (reference dense: 6.76%).
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "vgg_d"
  config.dataset = "cifar10"
  config.augment = True
  config.sparsity = 0.95
  # Paper, CIFAR: batch 128, SGD momentum 0.9, weight decay 5e-4, lr 0.1 x0.1 every 30k steps.
  config.batch_size = 128
  config.score_batch_size = 128
  config.lr_decay_every_steps = 30_000
  # The paper does not state the total number of iterations; 427 epochs of the 45,000
  # training images (351 steps each) are 149,877 steps: five stages, lr 0.1 down to 1e-5.
  config.num_epochs = 427
  config.eval_batch_size = 500
  return config
