"""Convolutions on XLA:CPU: Flax's ``nn.Conv`` against our im2col ``Conv``, the measurement
behind the models' default.

``snip_jax.models.layers.Conv`` has ``nn.Conv``'s parameters and results but computes the
convolution as one matmul over the concatenated shifted slices of the input (see its
docstring). Timed, forward and backward (gradients w.r.t. input and kernel) of
``sum(sin(conv(x)))``, jitted:

* every distinct conv of LeNet-5-Caffe (batch 100) and VGG-D (batch 128);
* whole masked train steps: LeNet-5-Caffe and VGG-D with each conv.

No goal: these ratios are the measurement behind the default. AlexNet, VGG and WRN use im2col;
LeNet-5-Caffe keeps ``nn.Conv`` (its ``conv`` field), because its whole step is not faster
with im2col: its first conv needs no input gradient, and its second is cheap either way.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from flax import linen as nn

from benchmarks import common
from snip_jax import train
from snip_jax.models import layers, lenet

TITLE = "Convolutions: im2col vs XLA's"
# (batch, H, W, C in, C out, kernel, padding) of each distinct conv.
LENET5 = ((100, 28, 28, 1, 20, 5, "VALID"), (100, 12, 12, 20, 50, 5, "VALID"))
VGG_D = tuple(
  (128, size, size, c_in, c_out, 3, "SAME")
  for size, c_in, c_out in (
    (32, 3, 64),
    (32, 64, 64),
    (16, 64, 128),
    (16, 128, 128),
    (8, 128, 256),
    (8, 256, 256),
    (4, 256, 512),
    (4, 512, 512),
    (2, 512, 512),
  )
)
#: (conv shapes, rounds, models for the whole step and their rounds).
SETTINGS = {
  False: (LENET5 + VGG_D, 5, {"lenet5": (100, 10), "vgg_d": (128, 3)}),
  True: (((4, 12, 12, 3, 4, 3, "SAME"),), 2, {"lenet5": (4, 2)}),
}


def _conv_rows(shapes, rounds) -> list[dict]:
  rows = []
  for batch, h, w, c_in, c_out, size, padding in shapes:
    x = jax.random.normal(jax.random.key(0), (batch, h, w, c_in))
    fns = {}
    for name, cls in (("im2col", layers.Conv), ("nn.Conv", nn.Conv)):
      module = cls(c_out, (size, size), padding=padding, use_bias=False)
      params = module.init(jax.random.key(1), x[:1])
      grad = jax.jit(jax.grad(lambda p, x, m=module: jnp.sum(jnp.sin(m.apply(p, x))), (0, 1)))
      fns[name] = lambda g=grad, p=params, x=x: g(p, x)
    times = common.time_interleaved(fns, rounds)
    rows.append(
      common.row(
        f"im2col / nn.Conv, {size}x{size} {padding} conv {h}x{w}x{c_in} -> {c_out}, batch {batch}",
        common.ratio_stats(times["im2col"], times["nn.Conv"]),
        None,
        seconds={k: common.stats(v) for k, v in times.items()},
      )
    )
  return rows


@contextlib.contextmanager
def _layers_conv(cls):
  """AlexNet, VGG and WRN built and traced with ``cls`` as ``layers.conv``'s module."""
  saved = layers.Conv
  layers.Conv = cls
  try:
    yield
  finally:
    layers.Conv = saved


def _step_row(model: str, batch_size: int, rounds: int) -> dict:
  fns = {}
  ours = layers.Conv
  for name, cls in (("im2col", ours), ("nn.Conv", nn.Conv)):
    with _layers_conv(cls):
      work = common.Workload(model, batch_size)
      if isinstance(work.module, lenet.LeNet5Caffe):
        work.module = work.module.clone(conv=cls)  # The same params, named alike.
      state = work.masked_state()
      # Compiled here, while the model's convs are ``cls``.
      step = jax.jit(train.train_step, donate_argnums=0).lower(state, work.batch).compile()
    fns[name] = common.stepper(step, state, work.batch)
  times = common.time_interleaved(fns, rounds)
  return common.row(
    f"im2col / nn.Conv, whole masked train step, {model}, batch {work.batch_size}",
    common.ratio_stats(times["im2col"], times["nn.Conv"]),
    None,
    seconds={k: common.stats(v) for k, v in times.items()},
  )


def run(quick: bool) -> dict:
  shapes, rounds, steps = SETTINGS[quick]
  rows = _conv_rows(shapes, rounds)
  rows += [_step_row(model, *setting) for model, setting in steps.items()]
  return {"title": TITLE, "description": __doc__, "rows": rows}
