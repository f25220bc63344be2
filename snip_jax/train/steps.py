"""The train state and the per-step functions: what runs, benchmarks and users' loops reuse.

:func:`train_step` and :func:`eval_step` are pure functions of a :class:`TrainState` and a
batch, compiled once each; :func:`sharded_train_step` and :func:`sharded_eval_step` jit them for a
device mesh (the state replicated, the batch split), and :func:`evaluate` runs a whole split.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state
from jax.sharding import Mesh

from snip_jax import data, masks, optim, parallel, trees, xla

Batch = tuple[jax.Array, jax.Array]


class TrainState(train_state.TrainState):
  """Flax ``TrainState`` plus batch-norm statistics and the run's RNG key.

  The mask lives in the optimizer state: ``tx`` is :func:`snip_jax.optim.masked`, whose state
  carries the mask, so ``apply_gradients`` keeps pruned weights at zero and :attr:`mask` reads
  it back. ``batch_stats`` is the model's ``batch_stats`` collection (``{}`` without batch
  norm); it is never pruned.
  """

  batch_stats: Any
  rng: jax.Array

  @property
  def mask(self):
    return self.opt_state.mask


def cross_entropy(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)


def forward(
  apply_fn, params, batch_stats, images, *, train: bool, rngs=None
) -> tuple[jax.Array, Any]:
  """``(logits, batch_stats)``: the model on a batch, the one forward pass SNIP and SGD share.

  With ``train=True`` batch norm normalises with the batch's statistics and the returned
  ``batch_stats`` are the updated running averages; otherwise it uses (and returns unchanged)
  ``batch_stats``. For a model without batch norm ``batch_stats`` is ``{}``.
  """
  variables = trees.variables(params, batch_stats)
  if train and batch_stats:
    logits, updates = apply_fn(variables, images, train=True, rngs=rngs, mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return apply_fn(variables, images, train=train, rngs=rngs), batch_stats


@functools.partial(jax.jit, static_argnames="tx")
def _masked_init(params, mask, tx: optax.GradientTransformation):
  """``(params, opt_state)`` of :func:`create_train_state`, compiled once per optimizer and
  shapes (a run builds its state twice: to train, and as the template it restores into)."""
  # Flax's ``create`` calls ``tx.init``; the transformation built here on the traced mask lives
  # only in this trace: the train state gets one built on the real mask.
  state = TrainState.create(
    apply_fn=None,
    params=masks.apply_mask(params, mask),
    tx=optim.masked(tx, mask),
    batch_stats={},
    rng=None,
  )
  return state.params, state.opt_state


def create_train_state(
  model: nn.Module,
  params,
  mask,
  tx: optax.GradientTransformation,
  rng: jax.Array,
  batch_stats=None,
) -> TrainState:
  """A train state whose params are masked and whose optimizer keeps them masked.

  The masking and the optimizer's ``init`` run as one compiled program (:func:`_masked_init`):
  run eagerly, each of their per-leaf ops would compile a program of its own (VGG-D: ~1 s of
  set-up).
  """
  params, opt_state = _masked_init(params, mask, tx)
  return TrainState(
    step=0,
    apply_fn=model.apply,
    params=params,
    tx=optim.masked(tx, mask),
    opt_state=opt_state,
    batch_stats=batch_stats or {},
    rng=rng,
  )


def _loss_and_grads(state: TrainState, batch: Batch):
  """``((loss, (logits, batch_stats)), grads)`` of the training loss on ``batch`` at the state's
  params, with the step's dropout key: what :func:`train_step` takes its gradient from."""
  images, labels = batch
  rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}

  def loss_fn(params):
    logits, batch_stats = forward(
      state.apply_fn, params, state.batch_stats, images, train=True, rngs=rngs
    )
    return jnp.mean(cross_entropy(logits, labels)), (logits, batch_stats)

  return jax.value_and_grad(loss_fn, has_aux=True)(state.params)


def dense_grads(state: TrainState, batch: Batch):
  """The gradient of the training loss on ``batch`` at every coordinate, pruned ones included
  (their weights are 0, their gradients generally not): RigL's grow scores. Jit it; the state
  is unchanged."""
  return _loss_and_grads(state, batch)[1]


def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on a batch; the masked optimizer zeroes pruned coordinates of the update.

  Stochastic layers (dropout) get ``fold_in(state.rng, state.step)``, so a step's randomness
  depends only on the run's key and the step number.

  Returns:
    ``(state, metrics)``: the updated state, and the batch's mean ``loss``, its ``accuracy`` and
    ``grad_norm``, the global L2 norm of the loss's gradient on the kept coordinates (what the
    masked optimizer is given; every coordinate without a masked optimizer), before weight
    decay.
  """
  labels = batch[1]
  (loss, (logits, batch_stats)), grads = _loss_and_grads(state, batch)
  # Masked as the masked optimizer masks them: the pruned coordinates' gradients are not zero,
  # but they never move a weight, so they would only blur how large the steps are. A state
  # whose optimizer is not masked (a dense baseline) moves every weight.
  if isinstance(state.opt_state, optim.MaskedState):
    grads_kept = masks.apply_mask(grads, state.mask)
  else:
    grads_kept = grads
  grad_norm = optax.tree.norm(grads_kept)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return state, {"loss": loss, "accuracy": accuracy, "grad_norm": grad_norm}


def eval_step(state: TrainState, batch) -> dict[str, jax.Array]:
  """Weighted sums of loss and correct predictions on a (padded) batch, on masked params."""
  images, labels, weights = batch
  params = masks.apply_mask(state.params, state.mask)
  logits, _ = forward(state.apply_fn, params, state.batch_stats, images, train=False)
  return {
    "loss": jnp.sum(weights * cross_entropy(logits, labels)),
    "correct": jnp.sum(weights * (jnp.argmax(logits, -1) == labels)),
    "count": jnp.sum(weights),
  }


def sharded_train_step(mesh: Mesh):
  """:func:`train_step` jitted for ``mesh``: the state replicated (and donated), the batch split.

  XLA partitions the step: each device computes on its slice of the batch, and the mean loss's
  gradients (and batch norm's batch statistics) are all-reduced across the devices. Compiled
  with :func:`snip_jax.xla.compiler_options` (XLA's own convolutions on one CPU device).
  """
  state_sharding = parallel.replicated(mesh)
  return xla.jit(
    train_step,
    mesh=mesh,
    in_shardings=(state_sharding, parallel.batch_sharded(mesh)),
    out_shardings=(state_sharding, parallel.replicated(mesh)),
    donate_argnums=0,
  )


def sharded_eval_step(mesh: Mesh):
  """:func:`eval_step` jitted for ``mesh``: the state replicated, the batch split."""
  return xla.jit(
    eval_step,
    mesh=mesh,
    in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
    out_shardings=parallel.replicated(mesh),
  )


def evaluate(
  jit_eval_step, state: TrainState, split: data.Split, batch_size: int, mesh: Mesh | None = None
) -> tuple[float, float]:
  """``(mean loss, accuracy)`` over every example of ``split``.

  With a ``mesh`` the batches are split over its devices (see :func:`sharded_eval_step`); in a
  multi-process run ``split`` is this process's range and ``batch_size`` the global batch.
  """
  local_size = parallel.local_share(batch_size)
  # Every process takes as many steps as the one with the most examples.
  num_batches = parallel.most_over_processes(-(-len(split) // local_size))
  batches = data.eval_batches(split, local_size, num_batches)
  if mesh is not None:
    batches = (parallel.shard_batch(b, mesh) for b in batches)
  ahead = xla.RunAhead()
  # Added up on the host: adding on the devices would dispatch three more computations a batch.
  totals = jax.device_get([ahead(jit_eval_step(state, b)) for b in batches])
  totals = jax.tree.map(lambda *xs: sum(xs), *totals)
  return float(totals["loss"] / totals["count"]), float(totals["correct"] / totals["count"])
