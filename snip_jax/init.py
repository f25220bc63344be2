"""Weight initialisers of the paper's study (Lee et al. 2019, Table 4), by name.

Kernels use the named initialiser; biases start at zero. The default, ``vs_h``, is the variance
scaling of He et al. (fan-in, scale 2, truncated normal), the paper's VS-H. ``vs_lecun`` (fan-in,
scale 1, truncated normal) is what the authors' code draws: TF1's
``tf.variance_scaling_initializer()`` at its defaults.
"""

from __future__ import annotations

import jax
from flax import linen as nn

INITIALIZERS: dict[str, jax.nn.initializers.Initializer] = {
  # Variance scaling, He et al. 2015: Var(w) = 2 / fan_in.
  "vs_h": nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal"),
  # Variance scaling, LeCun et al. 1998: Var(w) = 1 / fan_in; TF1's variance_scaling_initializer()
  # at its defaults, which the authors' code (snip-public) uses.
  "vs_lecun": nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
  # Variance scaling, Glorot & Bengio 2010: Var(w) = 2 / (fan_in + fan_out).
  "vs_x": nn.initializers.variance_scaling(1.0, "fan_avg", "truncated_normal"),
  # The paper's "random normal" and "truncated random normal" (stddev 0.1).
  "normal": nn.initializers.normal(stddev=0.1),
  "truncated_normal": nn.initializers.truncated_normal(stddev=0.1),
}


def get_initializer(name: str) -> jax.nn.initializers.Initializer:
  """The kernel initialiser called ``name``; raises ``ValueError`` naming the choices."""
  try:
    return INITIALIZERS[name]
  except KeyError:
    raise ValueError(f"Unknown init {name!r}; choose one of {sorted(INITIALIZERS)}.") from None
