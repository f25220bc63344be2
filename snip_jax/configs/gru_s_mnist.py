"""SNIP on GRU-s (128 units), sequential MNIST (28 rows of 28 pixels), 95% sparsity.

The paper's MNIST settings, which are the defaults (SGD momentum 0.9, batch 100, lr 0.1 x0.1
every 25k steps, weight decay 5e-4).

Run it with:

  snip-jax-train --config=gru_s_mnist
  python experiments/train.py --config=gru_s_mnist  # the same, from a checkout

Paper (Lee et al. 2019, Table 3): 2.41% test error at 95% sparsity (reference: 1.87%).
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "gru_s"
  config.dataset = "mnist"
  config.sparsity = 0.95
  return config
