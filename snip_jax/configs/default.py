"""The default experiment: SNIP on LeNet-300-100, Fashion-MNIST, 98% sparsity, the paper's recipe.

Run it with:

  python experiments/train.py                       # --config defaults to this file
  python experiments/train.py --config experiments/configs/default.py --config.sparsity=0.95

Every field of a config is here at its default, and is documented, with the check its values
must pass, in the table ``FIELDS`` of ``snip_jax/train/config.py`` (``python
experiments/train.py --helpfull`` lists them too). The other files of this directory start from
this config and override only what differs for their row of the paper.
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  return default_config()
