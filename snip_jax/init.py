"""Weight initialisers of the paper's study (Lee et al. 2019, Table 4), by name.

Kernels use the named initialiser; biases start at zero. The default, ``vs_h``, is the variance
scaling of He et al. (fan-in, scale 2, truncated normal), the paper's VS-H. ``vs_lecun`` is
LeCun's (fan-in, scale 1, truncated normal), and ``vs_lecun_tf18`` what the authors' code draws
on TF 1.8 or earlier: TF1's ``tf.variance_scaling_initializer()`` at its defaults, which up to
TF 1.8 at least cut a normal of standard deviation ``sqrt(1 / fan_in)`` at two standard
deviations without rescaling it (a variance of ``0.774 / fan_in``; tensorflow/tensorflow issues
#16344, #18706, #19081); later TF releases rescale it to ``1 / fan_in``, as ``vs_lecun`` and Flax
do.
"""

from __future__ import annotations

import jax
from flax import linen as nn

#: The standard deviation of a unit normal cut at +-2 (scipy.stats.truncnorm(-2, 2).std()).
TRUNCATED_STD = 0.87962566103423978

INITIALIZERS: dict[str, jax.nn.initializers.Initializer] = {
  # Variance scaling, He et al. 2015: Var(w) = 2 / fan_in.
  "vs_h": nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal"),
  # Variance scaling, LeCun et al. 1998: Var(w) = 1 / fan_in; TF1's variance_scaling_initializer()
  # at its defaults, which the authors' code (snip-public) uses.
  "vs_lecun": nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
  # TF1's variance_scaling_initializer() up to TF 1.8 at least: the normal of stddev
  # sqrt(1/fan_in), cut at 2 stddevs and not rescaled. Flax rescales its truncated normal by
  # 1/TRUNCATED_STD, so a scale of TRUNCATED_STD**2 undoes exactly that.
  "vs_lecun_tf18": nn.initializers.variance_scaling(TRUNCATED_STD**2, "fan_in", "truncated_normal"),
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
