"""SNIP on LeNet-5-Caffe, MNIST, 99% sparsity: the paper's Table 2 row.

Run it with:

  snip-jax-train --config=lenet5_mnist
  python experiments/train.py --config=lenet5_mnist  # the same, from a checkout

MNIST is fetched by the set-up (``scripts/setup.sh``; README "Data, offline"). The recipe is the
paper's text's (SGD with momentum 0.9, learning rate 0.1 decayed x0.1 every 25k steps, weight
decay 5e-4, VS-H weights, 100 epochs: ``_recipes.PAPER_TEXT``). The dense network does not
train at it (``--config.sparsity=0``: the loss is NaN within 10 steps); RESULTS.md, "MNIST",
reports it at the authors' code's recipe (``_recipes.AUTHORS_CODE``) and gives that command.

Paper (Lee et al. 2019, Table 2): 1.1% test error at 99% sparsity (reference: 0.9%).
"""

import ml_collections

from snip_jax.configs._recipes import PAPER_TEXT
from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "lenet5"
  config.dataset = "mnist"
  config.sparsity = 0.99
  config.update(PAPER_TEXT)
  return config
