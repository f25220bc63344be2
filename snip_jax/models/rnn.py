"""LSTM and GRU classifiers of the paper on sequential MNIST (one image row per time step).

An image ``[H, W, C]`` is read as a sequence of ``H`` rows of ``W * C`` values (28 steps of 28
inputs for MNIST). A linear input layer maps each row to ``hidden`` features, one recurrent
layer of ``hidden`` units (Flax's LSTM/GRU cell, scanned over time by ``nn.RNN``) reads the
sequence, and a linear classifier reads its last output.

The input layer is not in the paper's text; it is what its parameter counts imply: with it,
LSTM-s/-b and GRU-s/-b have 136,586 / 535,306 / 103,818 / 404,234 parameters (paper: 137k /
536k / 104k / 404k); without it an LSTM of 128 units on 28 inputs has only 81,674.
Input-to-hidden and hidden-to-hidden kernels are all prunable (they have ``ndim == 2``).
"""

from __future__ import annotations

import jax
from flax import linen as nn

_CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}


class RNNClassifier(nn.Module):
  """A ``cell`` ('lstm' or 'gru') of ``hidden`` units over the rows of an image."""

  cell: str = "lstm"
  hidden: int = 128
  num_classes: int = 10
  kernel_init: jax.nn.initializers.Initializer = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # No dropout or normalisation.
    if self.cell not in _CELLS:
      raise ValueError(f"Unknown cell {self.cell!r}; choose one of {sorted(_CELLS)}.")
    b, steps = x.shape[:2]
    x_BxTxD = x.reshape(b, steps, -1)
    x_BxTxH = nn.Dense(self.hidden, kernel_init=self.kernel_init, name="input")(x_BxTxD)
    # The paper's init study applies one initialiser to every kernel, recurrent ones included.
    cell = _CELLS[self.cell](
      self.hidden,
      kernel_init=self.kernel_init,
      recurrent_kernel_init=self.kernel_init,
      name=self.cell,
    )
    # The zero initial state takes the dtype the cell computes in, so the same module also
    # runs in float64 (SynFlow's scoring) where Flax's default float32 state would not match.
    carry = jax.tree.map(
      lambda c: c.astype(x_BxTxH.dtype),
      cell.initialize_carry(jax.random.key(0), x_BxTxH[:, 0].shape),
    )
    outputs_BxTxH = nn.RNN(cell)(x_BxTxH, initial_carry=carry)
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="fc")(outputs_BxTxH[:, -1])
