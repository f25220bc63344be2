"""SNIP on LeNet-5-Caffe, MNIST, 99% sparsity: the paper's Table 2 row.

Run it with:

  snip-jax-train --config=lenet5_mnist
  python experiments/train.py --config=lenet5_mnist  # the same, from a checkout

MNIST is fetched by the set-up (``scripts/setup.sh``; README "Data, offline"). The recipe is the
authors' code's (plain SGD at 0.1, LeCun-scaled weights drawn as TF 1.8 drew them, biases
pruned, the mask applied to a fresh initialisation) trained at the paper's text's schedule (100
epochs, x0.1 every 25k steps): ``snip_jax.train.recipes.AUTHORS_CODE_TEXT_SCHEDULE``. At the
text's own recipe (momentum 0.9 at 0.1, VS-H) this net's loss is NaN within 25 steps, dense or
98% sparse; the code's 10,000 steps leave its pruned nets underfit: RESULTS.md, "MNIST".

Paper (Lee et al. 2019, Table 2): 1.1% test error at 99% sparsity (reference: 0.9%).
"""

import ml_collections

from snip_jax.train.config import default_config
from snip_jax.train.recipes import AUTHORS_CODE_TEXT_SCHEDULE


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.model = "lenet5"
  config.dataset = "mnist"
  config.sparsity = 0.99
  config.update(AUTHORS_CODE_TEXT_SCHEDULE)
  return config
