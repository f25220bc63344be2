"""Running a criterion's score function over scoring batches, on one device or spread over many.

:mod:`snip_jax.criteria` says what each criterion scores; this module says how one round of
scoring runs, whatever the criterion:

* **Several batches** (the paper's study of the scoring-set size): a criterion's score is the
  mean of its single-batch scores, accumulated one batch at a time (:func:`sum_over_batches`),
  so ``B`` batches never sit in memory together.
* **Several devices**: batches that are global arrays split over a mesh (see
  :mod:`snip_jax.parallel`) are scored where they lie, XLA all-reducing each batch's gradient.
  With a ``mesh`` (:func:`mean_over_devices`), the batches are instead spread over the devices,
  each scoring whole batches and summing its own; one all-reduce adds the devices' sums at the
  end.
* **Precision**: criteria whose scores overflow float32 run under :func:`precision`.

Nothing here knows the registry of criteria, so :mod:`snip_jax.criteria` imports it, never the
other way round.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from snip_jax import masks, parallel, xla

PyTree = Any
#: ``score_fn(params, mask, batch, key) -> scores``: ``batch`` is a tuple of the loss's
#: arguments after the params (``()`` for data-free criteria).
ScoreFn = Callable[[PyTree, PyTree, tuple, jax.Array], PyTree]
#: Scoring batches: a sequence of batches (each a tuple of ``loss_fn`` arguments) used in every
#: round, or ``batches(round) -> iterable of batches``, called once per round (a generator keeps
#: only one batch in memory at a time).
Batches = Sequence[Any] | Callable[[int], Iterable[Any]]


def precision(float64: bool) -> contextlib.AbstractContextManager:
  """``jax.enable_x64`` when ``float64`` is asked for and the backend has it (not TPUs).

  Args:
    float64: whether the computation wants float64.

  Returns:
    A context manager: ``jax.enable_x64(True)``, or one that changes nothing.
  """
  if float64 and jax.default_backend() != "tpu":
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def round_batches(batches: Batches, round_index: int) -> Iterable[Any]:
  """Round ``round_index``'s batches: ``batches(round_index)`` if callable, else ``batches``."""
  return batches(round_index) if callable(batches) else batches


def as_args(batch: Any) -> tuple:
  """A batch as the tuple of arguments that follow the params (a bare array is one argument)."""
  return tuple(batch) if isinstance(batch, tuple | list) else (batch,)


@jax.jit
def _add(a: PyTree, b: PyTree) -> PyTree:
  return jax.tree.map(jnp.add, a, b)


def sum_over_batches(
  score_fn: ScoreFn, params: PyTree, mask: PyTree, batches: Iterable[Any], key: jax.Array
) -> tuple[PyTree | None, int]:
  """``score_fn`` on each batch where it lies, added up one batch at a time.

  Args:
    score_fn: a compiled score function.
    params: the params.
    mask: the mask the network is scored at.
    batches: the round's batches; batch ``i`` is scored with ``fold_in(key, i)``.
    key: the round's key.

  Returns:
    The sum of the batches' scores (``None`` when there is no batch) and the number of batches.
  """
  total, count, ahead = None, 0, xla.RunAhead()
  for i, batch in enumerate(batches):
    scores = score_fn(params, mask, as_args(batch), jax.random.fold_in(key, i))
    total = ahead(scores if total is None else _add(total, scores))
    count += 1
  return total, count


@jax.jit
def sum_over_devices(per_device: PyTree) -> PyTree:
  """Sums the leading (device) axis of every leaf: the one all-reduce of a spread round.

  Args:
    per_device: scores stacked one device per row, as :func:`per_device_score_fn` returns them.

  Returns:
    The sum over the devices, replicated.
  """
  # Non-candidates' zeros are made anew, not summed: nothing to communicate.
  return jax.tree.map(
    lambda x: jnp.sum(x, axis=0) if masks.is_candidate(x) else masks.not_a_candidate(x[0]),
    per_device,
  )


@functools.lru_cache(maxsize=8)  # Compiled once per prune() call, not once per round.
def per_device_score_fn(score_fn: ScoreFn, mesh: Mesh, key_impl: Any) -> Callable[..., PyTree]:
  """``score_fn`` on every device of ``mesh`` at once, each on a whole batch of its own.

  Args:
    score_fn: a score function (traced inside ``shard_map``).
    mesh: a mesh with the one axis :data:`snip_jax.parallel.BATCH_AXIS`.
    key_impl: the implementation of the keys whose data is passed (``jax.random.key_impl``).

  Returns:
    A jitted ``(params, mask, batch, key_data) -> scores``: ``params`` and ``mask`` replicated;
    every leaf of ``batch`` and ``key_data`` (``jax.random.key_data`` of keys of ``key_impl``)
    stacks one batch or key per device along a leading axis split over the mesh; the scores come
    back stacked the same way. No communication.
  """
  spec = PartitionSpec(parallel.BATCH_AXIS)

  @functools.partial(xla.jit, mesh=mesh)
  @functools.partial(
    jax.shard_map,
    mesh=mesh,
    in_specs=(PartitionSpec(), PartitionSpec(), spec, spec),
    out_specs=spec,
  )
  def device_scores(params, mask, batch, key_data):
    # Each device holds one batch (leading axis 1) and its key. The params and mask vary by
    # device from here on: otherwise the gradient w.r.t. them (replicated values) would be
    # summed over the devices, and a device's scores would no longer be its batch's.
    params, mask = jax.lax.pcast((params, mask), parallel.BATCH_AXIS, to="varying")
    one_batch = tuple(x[0] for x in batch)
    key = jax.random.wrap_key_data(key_data[0], impl=key_impl)
    scores = score_fn(params, mask, one_batch, key)
    return jax.tree.map(lambda s: s[None], scores)

  return device_scores


def mean_over_devices(
  score_fn: ScoreFn,
  params: PyTree,
  mask: PyTree,
  batches: Iterable[Any],
  key: jax.Array,
  mesh: Mesh,
) -> PyTree:
  """One round with the batches spread over ``mesh``: each device scores whole batches.

  This process's batches are taken ``L`` at a time (``L``: its devices in ``mesh``) and stacked,
  one batch per device, so that every device runs ``score_fn`` on a whole batch of its own (each
  batch's scores as one device computes them) and adds them to its running sum, with no
  communication. At the end one all-reduce adds the devices' sums.

  Args:
    score_fn: a score function.
    params: the params, replicated on ``mesh``.
    mask: the mask, replicated on ``mesh``.
    batches: this process's batches, a positive multiple of its devices in ``mesh``; the
      ``i``-th batch over all processes is scored with ``fold_in(key, i)``.
    key: the round's key.
    mesh: the mesh to spread the batches over.

  Returns:
    The mean of every process's batch scores, replicated.

  Raises:
    ValueError: the batches are not a positive multiple of this process's devices.
  """
  local = len(mesh.local_devices)
  stacked = NamedSharding(mesh, PartitionSpec(parallel.BATCH_AXIS))
  device_scores = per_device_score_fn(score_fn, mesh, jax.random.key_impl(key))

  def place(arrays):
    return jax.make_array_from_process_local_data(stacked, np.stack(arrays))

  sums, group, count, ahead = None, [], 0, xla.RunAhead()
  first = jax.process_index() * local  # This process's first batch in each group of mesh.size.
  for batch in batches:
    group.append(tuple(np.asarray(x) for x in as_args(batch)))
    if len(group) < local:
      continue
    indices = [count + first + j for j in range(local)]
    keys = [np.asarray(jax.random.key_data(jax.random.fold_in(key, i))) for i in indices]
    arrays = tuple(place(field) for field in zip(*group, strict=True))
    scores = device_scores(params, mask, arrays, place(keys))
    sums = ahead(scores if sums is None else _add(sums, scores))
    group, count = [], count + mesh.devices.size
  if group or sums is None:
    raise ValueError(
      f"Spreading the scoring batches over {mesh.devices.size} devices needs a positive multiple "
      f"of {local} batches in each process, got {count // mesh.devices.size * local + len(group)}."
    )
  # Non-candidates' integer zeros stay integers (masks.not_a_candidate).
  return jax.tree.map(lambda t: t / count if masks.is_candidate(t) else t, sum_over_devices(sums))
