"""Sparse inference: the exported model's forward with BCOO weight matrices vs the dense one.

Each model is pruned to 95% sparsity (the top 5% of random scores, as in the train-step
section), exported with :func:`snip_jax.export.export_sparse` and read back with
:func:`snip_jax.export.load_sparse`: its ``nn.Dense`` kernels become
``jax.experimental.sparse.BCOO`` arrays, multiplied sparsely by
:func:`snip_jax.export.sparse_apply`, while convolutions stay dense (XLA has no sparse
convolution). Timed side by side, both jitted, in inference mode (``train=False``), on one fixed
batch of random images, each timed call running the forward several times:

* BCOO: ``jax.jit(export.sparse_apply(model.apply))`` on the export's variables;
* dense: ``jax.jit(model.apply)`` on the same masked params, stored dense.

No goal: a ratio below 1 is where the sparse forward pays. Both give the same logits up to
float rounding (the largest difference is recorded).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks import common
from snip_jax import export, masks, train, trees

TITLE = "Sparse inference: BCOO vs dense forward"
SPARSITY = 0.95  # common.Workload's mask.
#: profile (common.PROFILES) -> (model -> ((batch size, forwards per timed call), ...), rounds).
SETTINGS = {
  "full": ({"lenet300": ((1, 200), (1000, 5)), "lenet5": ((1, 50), (1000, 1))}, 10),
  "quick": ({"lenet300": ((16, 2),)}, 3),
  # No VGG-D: its convolutions, which stay dense, are nearly all of its forward.
  "gpu": ({"lenet300": ((1, 100), (1000, 20)), "lenet5": ((1, 100), (1000, 20))}, 15),
}


def _forwards(work: common.Workload, path: Path):
  """``(dense variables, BCOO variables, dense forward, BCOO forward)`` of ``work``'s model,
  exported to ``path``; both forwards are jitted ``f(variables, images)``."""
  filter_fn = train.filter_fn_for(work.config)
  export.export_sparse(
    path, work.params, work.mask, batch_stats=work.batch_stats or None, filter_fn=filter_fn
  )
  dense = trees.variables(masks.apply_mask(work.params, work.mask), work.batch_stats)
  sparse = export.load_sparse(path, like=dense).variables
  apply_fn = work.module.apply
  dense_fn = jax.jit(lambda v, x: apply_fn(v, x, train=False))
  sparse_fn = jax.jit(lambda v, x: export.sparse_apply(apply_fn)(v, x, train=False))
  return dense, sparse, dense_fn, sparse_fn


def _repeat(forward, variables, images, calls: int):
  """A zero-argument function running ``forward(variables, images)`` ``calls`` times."""
  return lambda: [forward(variables, images) for _ in range(calls)]


def _measure(model: str, settings, rounds: int) -> list[dict]:
  """One row per batch size of ``model``: the BCOO forward over the dense one."""
  work = common.Workload(model, batch_size=1)
  with tempfile.TemporaryDirectory() as scratch:
    dense, sparse, dense_fn, sparse_fn = _forwards(work, Path(scratch) / f"{model}.npz")
  param_bytes = {"BCOO": export.tree_bytes(sparse["params"]), "dense": export.tree_bytes(dense)}
  rows = []
  for batch_size, calls in settings:
    images = jnp.asarray(common.random_batch(work.input_shape, batch_size)[0])
    difference = float(jnp.max(jnp.abs(sparse_fn(sparse, images) - dense_fn(dense, images))))
    times = common.time_interleaved(
      {
        "BCOO": _repeat(sparse_fn, sparse, images, calls),
        "dense": _repeat(dense_fn, dense, images, calls),
      },
      rounds,
    )
    per_forward = {k: [t / calls for t in v] for k, v in times.items()}
    rows.append(
      common.row(
        f"BCOO / dense forward, {model}, batch {batch_size}, sparsity {SPARSITY:g}",
        common.ratio_stats(per_forward["BCOO"], per_forward["dense"]),
        None,
        seconds={k: common.stats(v) for k, v in per_forward.items()},
        max_abs_logit_diff=difference,
        param_bytes=param_bytes,
      )
    )
  return rows


def run(quick: bool, gpu: bool = False) -> dict:
  """The section's result: its rows at the sizes of profile ``common.profile(quick, gpu)``."""
  models, rounds = SETTINGS[common.profile(quick, gpu)]
  rows = []
  for model, settings in models.items():
    rows += _measure(model, settings, rounds)
  return {"title": TITLE, "description": __doc__, "rows": rows}
