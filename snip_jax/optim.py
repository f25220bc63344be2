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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from snip_jax import masks

PyTree = Any


class MaskedState(NamedTuple):
  """State of :func:`masked`: the inner optimizer's state and the ``bool`` mask."""

  inner_state: optax.OptState
  mask: PyTree


def zero_masked_moments(state: PyTree, mask: PyTree) -> PyTree:
  """Zeroes the pruned coordinates of every part of an optimizer state shaped like the params.

  :func:`masked` calls it once, at ``init``; it is public so that other formulations (e.g. one
  that also re-masks the state after every update) can be compared with :func:`masked`.

  Args:
    state: any pytree, e.g. an Optax optimizer state.
    mask: a ``bool`` mask pytree shaped like the params.

  Returns:
    ``state`` with ``mask`` applied to every subtree that has exactly the mask's tree structure
    and leaf shapes (moments, traces, accumulators); other subtrees (step counts, ...) as given.
  """
  mask_def = jax.tree.structure(mask)
  mask_shapes = [jnp.shape(m) for m in jax.tree.leaves(mask)]

  def shaped_like_mask(node):
    if jax.tree.structure(node) != mask_def:
      return False
    return [jnp.shape(x) for x in jax.tree.leaves(node)] == mask_shapes

  def zero(node):
    return masks.apply_mask(node, mask) if shaped_like_mask(node) else node

  return jax.tree.map(zero, state, is_leaf=shaped_like_mask)


def masked(inner: optax.GradientTransformation, mask: PyTree) -> optax.GradientTransformation:
  """Wraps ``inner`` so that pruned coordinates get zero updates and zero optimizer state.

  Args:
    inner: any Optax transformation, e.g. ``optax.chain(optax.add_decayed_weights(5e-4),
      optax.sgd(0.1, momentum=0.9))`` or ``optax.adamw(1e-3)``.
    mask: a ``bool`` mask pytree shaped like the params (``True`` = keep).

  Returns:
    A ``GradientTransformation`` whose state is a :class:`MaskedState`.
  """

  def init_fn(params):
    masks.check_mask(params, mask)
    bool_mask = jax.tree.map(lambda m: jnp.asarray(m, bool), mask)
    inner_state = zero_masked_moments(inner.init(params), bool_mask)
    return MaskedState(inner_state=inner_state, mask=bool_mask)

  def update_fn(updates, state, params=None):
    grads = masks.apply_mask(updates, state.mask)
    updates, inner_state = inner.update(grads, state.inner_state, params)
    return masks.apply_mask(updates, state.mask), MaskedState(inner_state, state.mask)

  return optax.GradientTransformation(init_fn, update_fn)
