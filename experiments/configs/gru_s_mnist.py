"""SNIP on GRU-s (128 units), sequential MNIST, 95% sparsity (settings: lstm_s_mnist).

Run it with:

  python experiments/train.py --config experiments/configs/gru_s_mnist.py

Paper (Lee et al. 2019, Table 3): 2.41% test error at 95% sparsity (reference: 1.87%).
"""

import ml_collections

from configs import lstm_s_mnist


def get_config() -> ml_collections.ConfigDict:
  config = lstm_s_mnist.get_config()
  config.model = "gru_s"
  return config
