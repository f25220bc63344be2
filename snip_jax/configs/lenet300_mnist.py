"""SNIP on LeNet-300-100, MNIST, 98% sparsity: the paper's Table 2 row.

Run it with:

  snip-jax-train --config=lenet300_mnist
  python experiments/train.py --config=lenet300_mnist  # the same, from a checkout

MNIST is fetched by the set-up (``scripts/setup.sh``; README "Data, offline"). The recipe is the
paper's text's (SGD with momentum 0.9, learning rate 0.1 decayed x0.1 every 25k steps, weight
decay 5e-4, VS-H weights, 100 epochs: ``snip_jax.train.recipes.PAPER_TEXT``); RESULTS.md,
"MNIST", compares it with the authors' code's (``snip_jax.train.recipes.AUTHORS_CODE``).

Paper (Lee et al. 2019, Table 2): 2.4% test error at 98% sparsity (reference: 1.7%).
"""

import ml_collections

from snip_jax.train.config import default_config
from snip_jax.train.recipes import PAPER_TEXT


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.dataset = "mnist"
  config.update(PAPER_TEXT)
  return config
