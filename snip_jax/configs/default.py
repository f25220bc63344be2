"""The default experiment: SNIP on LeNet-300-100, Fashion-MNIST, 98% sparsity, the paper's recipe.

Run it with:

  snip-jax-train                                    # --config defaults to this file
  snip-jax-train --config=default --config.sparsity=0.95
  python experiments/train.py                       # the same, from a checkout

Every field of a config is here at its default, and is documented, with the check its values
must pass, in the table ``FIELDS`` of ``snip_jax/train/config.py`` (``snip-jax-train --help``
lists them). The other configs of this package start from this one and override only what
differs for their row of the paper.
"""

import ml_collections

from snip_jax.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  return default_config()
