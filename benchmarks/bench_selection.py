"""Exact global top-κ at the sizes of the paper's nets: ours vs ``jax.lax.top_k`` vs NumPy.

The score vectors have the sizes of LeNet-300-100's, LeNet-5-Caffe's and VGG-D's prunable
weights (266,200, 430,500 and 15,239,872), drawn as ``|N(0, 1)|`` with 10% exact zeros (dead
units score 0, so real scores tie), and κ keeps 2, 5 and 10% of them. Timed:

* ours: :func:`snip_jax.selection.top_k_mask` end to end, as a run calls it, on a one-leaf
  tree (the scores as a ``[n, 1]`` kernel on the device): argument and finiteness checks, the
  exact top-κ, the mask back on the device. On CPU its selection runs in NumPy on a zero-copy
  view of the scores (an introselect, then one pass to resolve ties; see the module docstring
  of ``snip_jax/topk.py``);
* ``lax.top_k``: the whole flattened vector, jitted, indices scattered into a mask;
* ``np.partition``: the κ-th largest on the host (no mask: a lower bound for any exact
  selection);
* for the record, our XLA radix select (the path for scores on an accelerator: 32 counting
  passes), jitted, compiled for this CPU.

On a GPU or TPU, ours takes that radix select on the device (the scores live there), and the
"radix (XLA)" time is the same kernel without the checks; ``np.partition`` runs on the host.

Goals: ours within 3x of ``np.partition`` and no slower than ``lax.top_k``, with exactly
``lax.top_k``'s mask (ties to the lower index).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from snip_jax import selection, topk

TITLE = "Selection at scale: exact top-κ"
SIZES = {"lenet300": 266_200, "lenet5": 430_500, "vgg_d": 15_239_872}
KEEP = (0.02, 0.05, 0.10)
#: profile (common.PROFILES) -> (sizes, keep fractions, rounds, rounds of lax.top_k).
SETTINGS = {
  "full": (SIZES, KEEP, 7, 3),
  "quick": ({"small": 20_000}, (0.05,), 2, 1),
  "gpu": (SIZES, KEEP, 7, 3),
}


@functools.partial(jax.jit, static_argnames="k")
def _lax_top_k_mask(flat, k):
  _, idx = jax.lax.top_k(flat, k)
  return jnp.zeros(flat.shape, bool).at[idx].set(True)


def _ours(tree, fraction):
  return selection.top_k_mask(tree, 1.0 - fraction)


@jax.jit
def _radix(flat, budgets):
  return topk.select_device(flat, None, None, budgets, sizes=flat.shape, per_leaf=False)


def run(quick: bool, gpu: bool = False) -> dict:
  """The section's result: its rows at the sizes of profile ``common.profile(quick, gpu)``."""
  sizes, keep, rounds, top_k_rounds = SETTINGS[common.profile(quick, gpu)]
  rows = []
  for model, n in sizes.items():
    rng = np.random.default_rng(0)
    host = np.abs(rng.standard_normal(n)).astype(np.float32)
    host[rng.random(n) < 0.1] = 0.0
    flat = jnp.asarray(host)
    for fraction in keep:
      rows += _measure(model, host, flat, fraction, rounds, top_k_rounds)
  return {"title": TITLE, "description": __doc__, "rows": rows}


def _measure(model, host, flat, fraction, rounds, top_k_rounds) -> list[dict]:
  """The two rows of one size and κ: ours over ``np.partition`` and over ``lax.top_k``."""
  n = host.size
  k = selection.num_kept(n, 1.0 - fraction)
  budgets = jnp.asarray([k], jnp.int32)
  tree = {"kernel": flat[:, None]}
  ours = _ours(tree, fraction)["kernel"][:, 0]
  same = bool(jnp.array_equal(ours, _lax_top_k_mask(flat, k))) and int(ours.sum()) == k
  fns = {
    "ours": lambda: _ours(tree, fraction),
    "np.partition": lambda: np.partition(host, n - k),
    "radix (XLA)": lambda: _radix(flat, budgets),
  }
  times = common.time_interleaved(fns, rounds)
  times["lax.top_k"] = common.time_interleaved(
    {"lax.top_k": lambda: _lax_top_k_mask(flat, k)}, top_k_rounds
  )["lax.top_k"]
  seconds = {name: common.stats(v) for name, v in times.items()}
  setting = f"{n:,} scores ({model}), keep {fraction:.0%}"
  rows = []
  rows.append(
    common.row(
      f"ours / np.partition, {setting}",
      common.ratio_stats(times["ours"], times["np.partition"]),
      3.0,
      seconds=seconds,
      same_mask_as_lax_top_k=same,
    )
  )
  # lax.top_k gets fewer rounds (seconds each on CPU): compare with its median.
  lax_median = seconds["lax.top_k"]["median"]
  rows.append(
    common.row(
      f"ours / lax.top_k, {setting}",
      common.stats([t / lax_median for t in times["ours"]]),
      1.0,
      seconds={"ours": seconds["ours"], "lax.top_k": seconds["lax.top_k"]},
      same_mask_as_lax_top_k=same,
    )
  )
  for row in rows:  # A different mask meets no goal, however fast.
    row["met"] = row["met"] and same
  return rows
