"""An Optax transformation that holds pruned weights at exactly zero, whatever the inner optimizer.

``optax.masked`` chooses whole leaves; SNIP needs coordinate-wise masking. :func:`masked`
wraps any ``GradientTransformation``:

1. at ``init``, every optimizer-state leaf shaped like the params is zeroed at pruned
   coordinates (e.g. Adagrad's non-zero initial accumulator);
2. incoming gradients are zeroed at pruned coordinates, so no moment ever accumulates there
   (weight decay sees zero params there, so it adds nothing either);
3. the inner optimizer runs;
4. outgoing updates are zeroed at pruned coordinates, which also covers optimizers that add a
   term independent of the gradient (e.g. noise) or transforms that mix coordinates.

With params masked once (``apply_mask``) before training, ``params + updates`` keeps every pruned
weight at exactly ``0.0`` forever, and every optimizer whose state is built from the gradients
and params it is given (all of Optax's: SGD, momentum, Adam(W), RMSProp, Lion, clipping, ...)
keeps zero state there, because it only ever sees zeros at those coordinates.

The state is deliberately not re-masked after each update. Masking both the new moments and the
updates computed from them makes XLA recompute the moment update in two fusions, and it then has
to copy every donated param and moment buffer first. Masking only gradients and updates fuses
into the optimizer's own loops, which then only read the mask as well (BENCHMARKS.md, masked vs
dense step).

The mask travels in the optimizer state (as data, not as a compile-time constant), so a jitted
step compiles once for any mask of the same shapes.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from snip_jax import masks

PyTree = Any


class UnmaskedParamsWarning(UserWarning):
  """:func:`masked` was initialised on params that are not zero at every pruned coordinate."""


def _warn_if_unmasked(params: PyTree, mask: PyTree) -> None:
  """Warns when concrete ``params`` are non-zero somewhere ``mask`` prunes (traced ones, under
  ``jit``, cannot be looked at and are not checked)."""
  leaves = jax.tree.leaves(params)
  if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
    return
  for (path, param), keep in zip(
    jax.tree.leaves_with_path(params), jax.tree.leaves(mask), strict=True
  ):
    if not masks.is_candidate(param):
      continue
    pruned = np.asarray(param)[~np.asarray(keep)]
    if np.any(pruned != 0):
      become = (
        "they are not finite there, which no update can make 0.0 (x + -x is NaN)"
        if not np.all(np.isfinite(pruned))
        else "they become exactly 0.0 at the first update only when update is given the params "
        "(tx.update(grads, state, params), as TrainState and nnx.Optimizer do)"
      )
      warnings.warn(
        f"masked(...).init got params that are not pruned (first at {masks.path_name(path)!r}): "
        f"{become}. Call params = snip_jax.apply_mask(params, mask) before init to be safe.",
        UnmaskedParamsWarning,
        stacklevel=3,
      )
      return


class MaskedState(NamedTuple):
  """State of :func:`masked`: the inner optimizer's state and the ``bool`` mask."""

  inner_state: optax.OptState
  mask: PyTree


def zero_masked_moments(state: PyTree, mask: PyTree) -> PyTree:
  """Zeroes the pruned coordinates of every part of an optimizer state shaped like the params.

  :func:`masked` calls it at ``init`` and :func:`replace_mask` at each new mask; it is public so
  that other formulations (e.g. one that also re-masks the state after every update) can be
  compared with :func:`masked`.

  Args:
    state: any pytree, e.g. an Optax optimizer state, or the one ``nnx.Optimizer`` holds (whose
      moments are a ``State`` of ``OptVariable`` where the mask's are ``Param``).
    mask: a ``bool`` mask pytree shaped like the params.

  Returns:
    ``state`` with ``mask`` applied to every subtree whose leaves have the mask's names
    (:func:`snip_jax.masks.path_name`) and shapes, whatever its containers (moments, traces,
    accumulators); other subtrees (step counts, ...) as given.
  """
  named = sorted(
    (masks.path_name(path), jnp.shape(m)) for path, m in jax.tree.leaves_with_path(mask)
  )
  if not named:
    return state

  def shaped_like_mask(node):
    leaves = jax.tree.leaves_with_path(node)
    if len(leaves) != len(named):
      return False
    return sorted((masks.path_name(path), jnp.shape(x)) for path, x in leaves) == named

  def zero(node):
    return masks.apply_mask(node, mask) if shaped_like_mask(node) else node

  return jax.tree.map(zero, state, is_leaf=shaped_like_mask)


def _pruned_to_zero(updates: PyTree, mask: PyTree, params: PyTree | None) -> PyTree:
  """``updates`` with each pruned coordinate's update ``-param`` (``0`` without params), so that
  ``params + updates`` is exactly ``+0.0`` there: ``x + (-x)`` is ``+0.0`` in IEEE arithmetic."""
  if params is None:
    return masks.apply_mask(updates, mask)

  def pruned_to_zero(update, keep, param):
    # In the wider of the two dtypes: -param rounded to a narrower update's (bfloat16 updates
    # of float32 params) would leave param + update a rounding error away from 0.
    dtype = jnp.promote_types(update.dtype, jnp.result_type(param))
    return jnp.where(keep, update.astype(dtype), -jnp.asarray(param, dtype))

  return jax.tree.map(pruned_to_zero, updates, masks.conform_mask(params, mask), params)


def masked(
  inner: optax.GradientTransformation, mask: PyTree
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` so that pruned coordinates get zero updates and zero optimizer state.

  Sparsity is a guarantee, not a convention: when ``update`` is given the params (as
  ``optax`` losses and Flax's ``TrainState`` do), a pruned coordinate's update is ``-param``,
  so after the first update every pruned param is exactly ``0.0`` even if the params were
  never ``apply_mask``-ed (unless one was NaN or infinite), and stays so. Given no params, the
  update there is ``0``, which keeps params that were masked at zero: so ``init`` warns
  (:class:`UnmaskedParamsWarning`) when the params it is given are not zero at every pruned
  coordinate (unless traced, under ``jit``).

  Extra keyword arguments of ``update`` (``value=loss`` for ``optax.contrib.momo``,
  ``reduce_on_plateau``, ``polyak_sgd``, ...) are passed on to ``inner``.

  Args:
    inner: any Optax transformation, e.g. ``optax.chain(optax.add_decayed_weights(5e-4),
      optax.sgd(0.1, momentum=0.9))`` or ``optax.adamw(1e-3)``.
    mask: a ``bool`` mask pytree shaped like the params (``True`` = keep).

  Returns:
    A ``GradientTransformationExtraArgs`` whose state is a :class:`MaskedState`.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    bool_mask = jax.tree.map(lambda m: jnp.asarray(m, bool), masks.conform_mask(params, mask))
    _warn_if_unmasked(params, bool_mask)
    inner_state = zero_masked_moments(inner.init(params), bool_mask)
    return MaskedState(inner_state=inner_state, mask=bool_mask)

  def update_fn(updates, state, params=None, **extra_args):
    grads = masks.apply_mask(updates, state.mask)
    updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
    return _pruned_to_zero(updates, state.mask, params), MaskedState(inner_state, state.mask)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def replace_mask(params: PyTree, state: MaskedState, mask: PyTree) -> tuple[PyTree, MaskedState]:
  """Installs a new ``mask`` in the state of :func:`masked`, for methods that change the mask
  during training (:mod:`snip_jax.dynamic`).

  Every coordinate the new mask prunes becomes exactly ``0.0`` in the params and in every
  params-shaped part of the optimizer state (moments, traces, accumulators), so a dropped weight
  leaves nothing behind; a coordinate it grows starts at ``0.0`` in both too (RigL's rule), even
  where a transform that mixes coordinates (``optax.centralize``) left state at pruned ones,
  and where the inner optimizer starts its state elsewhere (``optax.adagrad``'s accumulator:
  :func:`masked`'s ``init`` zeroes it at pruned coordinates too).
  Other state (step counts) is kept. The new mask is stored in the containers of the old one
  (an ``nnx.Optimizer``'s ``OptVariable`` included), so the jitted step needs no recompilation:
  the mask is data of the state.

  Args:
    params: the current params.
    state: a :class:`MaskedState` (the ``opt_state`` of a train state or an ``nnx.Optimizer``
      built with :func:`masked`).
    mask: the new ``bool`` mask, shaped like the params.

  Returns:
    ``(params, state)`` under the new mask.
  """
  if not isinstance(state, MaskedState):
    raise ValueError(
      f"replace_mask needs the state of snip_jax.masked (a MaskedState), got a "
      f"{type(state).__name__}; build the optimizer with snip_jax.masked(inner, mask)."
    )
  masks.check_mask(params, mask)
  mask = jax.tree.map(lambda m: jnp.asarray(m, bool), masks.conform_mask(state.mask, mask))
  # The state survives only where the weight was kept and stays kept.
  kept_through = jax.tree.map(jnp.logical_and, state.mask, mask)
  inner_state = zero_masked_moments(state.inner_state, kept_through)
  return masks.apply_mask(params, mask), MaskedState(inner_state, mask)


def schedule_free_eval_params(state: PyTree, params: PyTree) -> PyTree:
  """``optax.contrib.schedule_free_eval_params`` for a state that holds a schedule-free state
  anywhere inside (that of :func:`masked` around ``optax.contrib.schedule_free_*``, a chain),
  with the pruned coordinates exactly ``0.0``.

  Raises:
    ValueError: ``state`` holds no schedule-free state, or more than one.
  """
  kind = optax.contrib.ScheduleFreeState
  found = [
    s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kind)) if isinstance(s, kind)
  ]
  if len(found) != 1:
    raise ValueError(
      f"schedule_free_eval_params needs a state holding exactly one schedule-free state; this "
      f"one holds {len(found)}. Pass the state of optax.contrib.schedule_free_* (or of masked "
      "around it)."
    )
  eval_params = optax.contrib.schedule_free_eval_params(found[0], params)
  mask = getattr(state, "mask", None)
  return eval_params if mask is None else masks.apply_mask(eval_params, mask)
