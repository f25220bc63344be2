"""snip-jax: SNIP pruning at initialisation for JAX/Flax/Optax.

The library API a user's own loop needs::

  scores = snip_jax.connection_sensitivity(loss_fn, params, x, y)     # one jax.grad
  mask = snip_jax.top_k_mask(scores, sparsity=0.98)                   # exact global top-κ
  tx = snip_jax.masked(optax.sgd(0.1, momentum=0.9), mask)            # pruned weights stay 0
  params = snip_jax.apply_mask(params, mask)

and for SNIP's baselines (``snip_jax.criteria``)::

  task = snip_jax.Task(loss_fn=loss_fn, forward=forward, input_shape=(28, 28, 1))
  mask = snip_jax.prune("synflow", params, 0.98, task, distribution="erk")

Structured selections: ``top_k_mask(scores, 0.5, distribution="2:4")`` (N:M),
``top_k_mask(scores, 0.98, layer_sparsity={"Dense_0": 0.5})`` (per-layer sparsities). The sanity
checks of a mask (``snip_jax.sanity``): ``sanity.shuffle_within_layers(mask, key)``,
``sanity.layerwise_random(mask, key)``, ``prune(..., invert=True)``.

On several devices (``snip_jax.parallel``): ``mesh = parallel.make_mesh()``, the state
``parallel.replicate``-d, each batch ``parallel.shard_batch``-ed, the step jitted with
``in_shardings``/``out_shardings`` (``snip_jax.train.sharded_train_step``).

To keep only the kept weights on disk and in memory (``snip_jax.export``):
``export.export_sparse(path, params, mask)``, then ``export.load_sparse(path)`` gives the
params with BCOO weight matrices that ``export.sparse_apply(model.apply)`` runs.
"""

from snip_jax.criteria import CRITERIA, Reach, Task, has_path, prune, reach, score
from snip_jax.masks import (
  apply_mask,
  check_mask,
  collapsed_layers,
  count_prunable,
  excluded_leaves,
  exclusion,
  format_layer_summary,
  is_prunable,
  kernels,
  kernels_and_biases,
  kernels_and_embeddings,
  layer_sparsities,
  layer_summary,
  load_mask,
  ones_like,
  overlap,
  save_mask,
  sparsity,
)
from snip_jax.optim import MaskedState, UnmaskedParamsWarning, masked
from snip_jax.selection import (
  DISTRIBUTIONS,
  ZeroScoresWarning,
  layer_budgets,
  num_kept,
  top_k_like,
  top_k_mask,
)
from snip_jax.sensitivity import connection_sensitivity

__version__ = "0.1.0"

__all__ = [
  "CRITERIA",
  "DISTRIBUTIONS",
  "MaskedState",
  "Reach",
  "Task",
  "UnmaskedParamsWarning",
  "ZeroScoresWarning",
  "apply_mask",
  "check_mask",
  "collapsed_layers",
  "connection_sensitivity",
  "count_prunable",
  "excluded_leaves",
  "exclusion",
  "format_layer_summary",
  "has_path",
  "is_prunable",
  "kernels",
  "kernels_and_biases",
  "kernels_and_embeddings",
  "layer_budgets",
  "layer_sparsities",
  "layer_summary",
  "load_mask",
  "masked",
  "num_kept",
  "ones_like",
  "overlap",
  "prune",
  "reach",
  "save_mask",
  "score",
  "sparsity",
  "top_k_like",
  "top_k_mask",
]
