"""Convolutions on XLA:CPU: the measurements behind ``layers.Conv``'s ``'auto'`` choice and
``snip_jax.xla``'s compile options.

``snip_jax.models.layers.Conv`` has ``nn.Conv``'s parameters and results and two formulations:
XLA's convolution (``impl='xla'``, what ``nn.Conv`` runs) and im2col (``impl='im2col'``: one
matmul over the concatenated shifted slices of the input). ``'auto'`` takes im2col only for
outputs of at most 2x2 pixels. Steps are compiled with ``snip_jax.xla.compiler_options()``
(on CPU, XLA's own convolutions rather than YNNPACK's), as runs compile them. Timed:

* forward and backward (gradients w.r.t. input and kernel) of ``sum(sin(conv(x)))``, jitted,
  for every distinct conv of LeNet-5-Caffe (batch 100) and VGG-D (batch 128): im2col / XLA's
  convolution, both with our options; the seconds also show XLA's convolution compiled with
  XLA's default options;
* whole masked train steps of LeNet-5-Caffe and VGG-D: with XLA's default options / with ours,
  and im2col for every conv / ``'auto'``. A conv alone and a whole step can disagree: LeNet-5-
  Caffe's convs alone are faster as im2col, its step is faster with XLA's (whose layouts suit
  the pooling and the first conv, which needs no input gradient).

No goal: these ratios are the measurements behind the defaults.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp

from benchmarks import common
from snip_jax import train, xla
from snip_jax.models import layers, lenet

TITLE = "Convolutions: im2col vs XLA's, and the compile options"
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
  variants = {  # name -> (impl, compiler options)
    "im2col": ("im2col", xla.compiler_options()),
    "XLA's conv": ("xla", xla.compiler_options()),
    "XLA's conv, XLA's default options": ("xla", None),
  }
  for batch, h, w, c_in, c_out, size, padding in shapes:
    x = jax.random.normal(jax.random.key(0), (batch, h, w, c_in))
    fns = {}
    for name, (impl, options) in variants.items():
      module = layers.Conv(c_out, (size, size), padding=padding, use_bias=False, impl=impl)
      params = module.init(jax.random.key(1), x[:1])
      loss = lambda p, x, m=module: jnp.sum(jnp.sin(m.apply(p, x)))  # noqa: E731
      grad = jax.jit(jax.grad(loss, (0, 1)), compiler_options=options)
      fns[name] = lambda g=grad, p=params, x=x: g(p, x)
    times = common.time_interleaved(fns, rounds)
    rows.append(
      common.row(
        f"im2col / XLA's conv, {size}x{size} {padding} conv {h}x{w}x{c_in} -> {c_out}, "
        f"batch {batch}",
        common.ratio_stats(times["im2col"], times["XLA's conv"]),
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


def _step_rows(model: str, batch_size: int, rounds: int) -> list[dict]:
  variants = {  # name -> (impl, compiler options); the first is what runs use.
    "ours": ("auto", xla.compiler_options()),
    "XLA's default options": ("auto", None),
    "im2col everywhere": ("im2col", xla.compiler_options()),
  }
  fns = {}
  for name, (impl, options) in variants.items():
    conv = functools.partial(layers.Conv, impl=impl)
    with _layers_conv(conv):
      work = common.Workload(model, batch_size)
      if isinstance(work.module, lenet.LeNet5Caffe):
        work.module = work.module.clone(conv=conv)  # The same params, named alike.
      state = work.masked_state()
      # Compiled here, while the model's convs are ``conv``.
      step = jax.jit(train.train_step, donate_argnums=0, compiler_options=options)
      step = step.lower(state, work.batch).compile()
    fns[name] = common.stepper(step, state, work.batch)
  times = common.time_interleaved(fns, rounds)
  seconds = {k: common.stats(v) for k, v in times.items()}
  setting = f"whole masked train step, {model}, batch {work.batch_size}"
  return [
    common.row(
      f"{other} / ours, {setting}",
      common.ratio_stats(times[other], times["ours"]),
      None,
      seconds={"ours": seconds["ours"], other: seconds[other]},
    )
    for other in list(variants)[1:]
  ]


def run(quick: bool) -> dict:
  shapes, rounds, steps = SETTINGS[quick]
  rows = _conv_rows(shapes, rounds)
  for model, setting in steps.items():
    rows += _step_rows(model, *setting)
  return {"title": TITLE, "description": __doc__, "rows": rows}
