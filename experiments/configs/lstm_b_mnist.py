"""SNIP on LSTM-b (256 units), sequential MNIST, 95% sparsity (settings: lstm_s_mnist).

Run it with:

  python experiments/train.py --config experiments/configs/lstm_b_mnist.py

Paper (Lee et al. 2019, Table 3): 1.35% test error at 95% sparsity (reference: 1.15%).
"""

import ml_collections

from configs import lstm_s_mnist


def get_config() -> ml_collections.ConfigDict:
  config = lstm_s_mnist.get_config()
  config.model = "lstm_b"
  return config
