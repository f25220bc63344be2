"""Pruning-at-initialisation criteria: SNIP and the baselines it is compared with.

Every criterion is a score function with one signature,
``score_fn(params, mask, batch, key) -> scores`` (larger = keep), built from a :class:`Task`
that says what it may look at: a loss for the data-driven criteria, a forward function for
the data-free one. :func:`score` averages a criterion's scores over scoring batches;
:func:`prune` turns scores into a mask through :func:`snip_jax.selection.top_k_mask` (exact κ,
global or per-layer), in one shot or over several rounds.

========================  ========================================================  ======
name                      score of connection ``j`` (``θ = w ⊙ mask``)              rounds
========================  ========================================================  ======
``snip``                  ``|∂L/∂c_j|`` at ``c = mask`` (Lee et al. 2019), normalised  1
``random``                uniform on [0, 1) from ``key``                            1
``magnitude``             ``|w_j|``                                                 1
``grasp``                 ``(θ ⊙ Hg)_j``, ``g = ∇L(θ)`` (Wang et al. 2020)          1
``synflow``               ``θ̂_j ∂R/∂θ̂_j``, ``R = 1ᵀ f(|θ|, 1)`` (Tanaka et al. 2020)  100
``iterative_snip``        SNIP of the pruned network, rescored each round             100
                          (de Jorge et al. 2021, "Iter SNIP")
========================  ========================================================  ======

With several rounds the kept fraction shrinks exponentially to its target,
``(1 - sparsity) ** (k / rounds)`` after round ``k``, and a connection pruned in one round stays
pruned (selection is restricted to the previous mask). Any criterion can be iterated
(``rounds=``); ``synflow`` and ``iterative_snip`` are iterated by default.

Details that decide what the numbers mean:

* **Several batches, several devices**: a criterion's score is the mean of its single-batch
  scores, accumulated one batch at a time; with ``mesh=`` the batches are spread over the
  devices, whole batches on each (:mod:`snip_jax.scoring` runs both).
* **GraSP** keeps the connections whose removal reduces gradient flow least. Wang et al. remove
  the largest ``-θ ⊙ Hg``; we keep the largest ``θ ⊙ Hg``, the same ranking. ``Hg`` is a
  Hessian-vector product, ``jax.jvp`` of ``jax.grad`` with tangent ``g``, never a Hessian; ``g``
  is the gradient over the prunable leaves, zero on the rest (biases, norm scales), as in the
  GraSP authors' code, which differentiates the conv and linear weights only. The
  GraSP authors divide the logits by a temperature (200) in the loss; the CLI does the same
  (``config.grasp_temperature``); a :class:`Task` takes the loss as given.
* **SynFlow** is data-free: ``R`` is the sum of the outputs of the network with every parameter
  replaced by its absolute value (masked), on one all-ones input; ``forward`` must run the model
  deterministically (batch norm with its running statistics, no dropout). ``R`` is a product over
  layers that overflows float32 for deep nets, so, like the authors' float64 code, it is computed
  in float64 (``jax.enable_x64``) on CPU and GPU; TPUs lack float64, and there an overflow
  surfaces as non-finite scores, which selection refuses with a clear error.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from snip_jax import masks, sanity, scoring, selection, sensitivity, xla
from snip_jax.scoring import Batches, ScoreFn

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Task:
  """What a criterion may look at besides the params.

  Attributes:
    loss_fn: ``loss_fn(params, *batch) -> scalar``, e.g. the mean cross-entropy on a batch;
      needed by ``snip``, ``grasp`` and ``iterative_snip``.
    forward: ``forward(params, inputs) -> outputs``, the model in inference mode; needed by
      ``synflow`` and by :func:`has_path`.
    input_shape: the shape of one input example (no batch dimension), for ``forward``.
    input_dtype: the dtype of the inputs ``forward`` takes, for the data-free criteria, which
      feed it an all-ones input: ``None`` for real-valued inputs (images, features), an integer
      dtype (``jnp.int32``) for token ids, which then are token 1 at every position.
  """

  loss_fn: Callable[..., jax.Array] | None = None
  forward: Callable[[PyTree, jax.Array], jax.Array] | None = None
  input_shape: tuple[int, ...] | None = None
  input_dtype: Any = None

  def ones_input(self, dtype) -> jax.Array:
    """One all-ones input example (batch of 1): of :attr:`input_dtype` when it is set, else
    of ``dtype`` (the float type of the computation)."""
    return jnp.ones((1, *self.input_shape), self.input_dtype or dtype)

  def run_forward(self, params: PyTree, dtype) -> jax.Array:
    """``forward`` on :meth:`ones_input`, with the fix named when the model wants integers."""
    try:
      return self.forward(params, self.ones_input(dtype))
    except (TypeError, ValueError) as e:  # An nn.Embed given floats raises a ValueError.
      if self.input_dtype is None and "must be an integer" in str(e):
        raise ValueError(
          "The model's forward wants integer inputs (token ids?), but a data-free criterion "
          "feeds it an all-ones float input; give Task(..., input_dtype=jnp.int32)."
        ) from e
      raise


@dataclasses.dataclass(frozen=True)
class Criterion:
  """A registered criterion: how to build its score function and how it is run by default.

  Attributes:
    make_score_fn: ``make_score_fn(task, filter_fn) -> ScoreFn``, a compiled (``jax.jit``)
      score function that returns zeros on non-prunable leaves; it is built once per
      :func:`prune` or :func:`score` call and reused for every batch and round.
    needs: the :class:`Task` fields it reads.
    uses_batches: whether it reads scoring batches (data-free criteria ignore them).
    uses_key: whether it draws random numbers (then a ``key`` must be given).
    rounds: default number of pruning rounds (1 = one shot).
    float64: score in float64 where the backend has it (see the module docstring).
  """

  make_score_fn: Callable[[Task, masks.FilterFn], ScoreFn]
  needs: tuple[str, ...]
  uses_batches: bool
  uses_key: bool = False
  rounds: int = 1
  float64: bool = False


# --------------------------------------------------------------------------------------------
# Score functions.


def _snip(task: Task, filter_fn: masks.FilterFn) -> ScoreFn:
  def score_fn(params, mask, batch, key):
    del key
    return sensitivity.connection_sensitivity(
      task.loss_fn, params, *batch, filter_fn=filter_fn, mask=mask
    )

  return jax.jit(score_fn)


@functools.partial(jax.jit, static_argnames="filter_fn")
def _random_scores(params, mask, batch, key, *, filter_fn):
  del mask, batch
  leaves, treedef = jax.tree.flatten(params)
  draws = [
    jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(leaf)) for i, leaf in enumerate(leaves)
  ]
  return masks.candidate_scores(jax.tree.unflatten(treedef, draws), params, filter_fn)


@functools.partial(jax.jit, static_argnames="filter_fn")
def _magnitude_scores(params, mask, batch, key, *, filter_fn):
  del mask, batch, key
  return masks.map_candidates(jnp.abs, params, filter_fn=filter_fn)


# Criteria that read nothing but the params are compiled once per module, not per call.
def _random(task: Task, filter_fn: masks.FilterFn) -> ScoreFn:
  del task
  return functools.partial(_random_scores, filter_fn=filter_fn)


def _magnitude(task: Task, filter_fn: masks.FilterFn) -> ScoreFn:
  del task
  return functools.partial(_magnitude_scores, filter_fn=filter_fn)


def _floating_part(params: PyTree) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
  """What a criterion differentiates: ``params`` with every leaf that is not floating point (an
  integer table, a ``bool`` flag, an NNX state's RNG keys) as float32 zeros of its shape, and
  the function that puts those leaves back, as they were, before the model sees the tree."""
  floating = jax.tree.map(masks.is_candidate, params)
  stand_in = jax.tree.map(
    lambda p, f: p if f else jnp.zeros(jnp.shape(p), jnp.float32), params, floating
  )

  def restore(tree):
    return jax.tree.map(lambda t, p, f: t if f else p, tree, params, floating)

  return stand_in, restore


def _grasp(task: Task, filter_fn: masks.FilterFn) -> ScoreFn:
  def score_fn(params, mask, batch, key):
    del key
    theta, restore = _floating_part(masks.apply_mask(params, mask))

    def grad_fn(p):
      return jax.grad(lambda p: task.loss_fn(restore(p), *batch))(p)

    # g is a constant direction: Hg = d/dε ∇L(θ + ε g) at ε = 0, one forward-over-reverse pass.
    # It is the gradient over the prunable weights only, as in the GraSP authors' code: biases and
    # norm scales stay put, so Hg holds no cross term H_wb g_b.
    def prunable_only(path, d, p):
      return d if masks.is_prunable(path, p, filter_fn) else jnp.zeros_like(d)

    g = masks.apply_mask(jax.lax.stop_gradient(grad_fn(theta)), mask)
    g = jax.tree.map_with_path(prunable_only, g, params)
    _, hg = jax.jvp(grad_fn, (theta,), (g,))
    return masks.map_candidates(lambda _, t, h: t * h, params, theta, hg, filter_fn=filter_fn)

  return jax.jit(score_fn)


def _synflow(task: Task, filter_fn: masks.FilterFn) -> ScoreFn:
  def score_fn(params, mask, batch, key):
    del batch, key
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    floats, restore = _floating_part(params)
    linear = jax.tree.map(lambda w, m: jnp.abs(w).astype(dtype) * m, floats, mask)

    def synaptic_flow(p):
      return jnp.sum(task.run_forward(restore(p), dtype))

    grads = jax.grad(synaptic_flow)(linear)
    scores = masks.candidate_scores(jax.tree.map(jnp.multiply, linear, grads), params, filter_fn)
    # A network already cut in two (R = 0) scores 0 everywhere; kept 0, not 0/0.
    return masks.normalised_scores(scores, jnp.float32)

  return jax.jit(score_fn)


CRITERIA: dict[str, Criterion] = {
  "snip": Criterion(_snip, needs=("loss_fn",), uses_batches=True),
  "random": Criterion(_random, needs=(), uses_batches=False, uses_key=True),
  "magnitude": Criterion(_magnitude, needs=(), uses_batches=False),
  "grasp": Criterion(_grasp, needs=("loss_fn",), uses_batches=True),
  "synflow": Criterion(
    _synflow, needs=("forward", "input_shape"), uses_batches=False, rounds=100, float64=True
  ),
  "iterative_snip": Criterion(_snip, needs=("loss_fn",), uses_batches=True, rounds=100),
}


def get_criterion(name: str) -> Criterion:
  """The criterion called ``name``; raises ``ValueError`` naming the choices."""
  try:
    return CRITERIA[name]
  except KeyError:
    raise ValueError(f"Unknown criterion {name!r}; choose one of {sorted(CRITERIA)}.") from None


# --------------------------------------------------------------------------------------------
# Scoring and pruning.


def _check_task(name: str, criterion: Criterion, task: Task, batches, key) -> None:
  missing = [field for field in criterion.needs if getattr(task, field) is None]
  if missing:
    raise ValueError(
      f"Criterion {name!r} needs Task({', '.join(f'{f}=...' for f in missing)}); "
      f"see snip_jax.criteria.Task."
    )
  if criterion.uses_batches and batches is None:
    raise ValueError(f"Criterion {name!r} scores on data: pass batches=[(inputs, labels), ...].")
  if criterion.uses_key and key is None:
    raise ValueError(f"Criterion {name!r} needs key=jax.random.key(seed).")


def _score_round(
  name: str,
  score_fn: ScoreFn,
  top_level: ScoreFn,
  params: PyTree,
  mask: PyTree,
  batches: Iterable[Any] | None,
  key: jax.Array,
  mesh: Mesh | None = None,
) -> PyTree:
  """One round: ``score_fn`` (jitted) on each batch, accumulated one batch at a time.

  ``top_level`` is ``xla.jit(score_fn)``, what runs when the round is called directly: compiler
  options (:func:`snip_jax.xla.compiler_options`) go only on a top-level ``jit``, and over a
  mesh ``score_fn`` runs nested in each device's program.
  """
  criterion = CRITERIA[name]
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(params)):
    top_level = score_fn  # Inside the caller's own jit, which decides the options.
  with scoring.precision(criterion.float64):
    if not criterion.uses_batches:
      return top_level(params, mask, (), key)
    if mesh is not None:
      return scoring.mean_over_devices(score_fn, params, mask, batches, key, mesh)
    total, count = scoring.sum_over_batches(top_level, params, mask, batches, key)
  if count == 0:
    raise ValueError(f"Criterion {name!r} got no scoring batch: batches is empty.")
  if count == 1:
    return total
  return jax.tree.map(lambda t: t / count if masks.is_candidate(t) else t, total)


def score(
  name: str,
  params: PyTree,
  task: Task,
  *,
  batches: Batches | None = None,
  mask: PyTree | None = None,
  key: jax.Array | None = None,
  filter_fn: masks.FilterFn = masks.kernels,
  mesh: Mesh | None = None,
) -> PyTree:
  """One round of criterion ``name``'s scores: the mean over ``batches`` of its batch scores.

  Args:
    name: a key of :data:`CRITERIA`.
    params: the params at initialisation.
    task: what the criterion may use (a loss, a forward function).
    batches: scoring batches, each a tuple of ``task.loss_fn`` arguments after the params
      (ignored by data-free criteria); a callable is called with round ``0``.
    mask: score the network pruned to ``mask`` (default: unpruned).
    key: randomness (``random`` needs it).
    filter_fn: which leaves are prunable; the others score 0.
    mesh: spread the batches over this mesh's devices, whole batches on each (``params`` and
      ``mask`` replicated on it; ``batches`` this process's, a multiple of its devices in the
      mesh); the devices' sums meet in one all-reduce. Without it the batches are scored as
      they are placed (e.g. each split over the devices: one all-reduce per batch).

  Returns:
    A float32 score pytree shaped like ``params``; larger means more worth keeping.
  """
  criterion = get_criterion(name)
  _check_task(name, criterion, task, batches, key)
  mask = masks.ones_like(params) if mask is None else masks.conform_mask(params, mask)
  key = jax.random.key(0) if key is None else key
  round_batches = scoring.round_batches(batches, 0) if criterion.uses_batches else None
  score_fn = criterion.make_score_fn(task, filter_fn)
  return _score_round(
    name, score_fn, xla.jit(score_fn), params, mask, round_batches, jax.random.fold_in(key, 0), mesh
  )


def schedule(sparsity: float, rounds: int) -> list[float]:
  """Sparsity after each round: the kept fraction shrinks as ``(1 - sparsity) ** (k / rounds)``.

  The last entry is ``sparsity`` exactly.
  """
  sparsity = selection.validate_sparsity(sparsity)
  if not isinstance(rounds, numbers.Integral) or isinstance(rounds, bool) or rounds < 1:
    raise ValueError(f"rounds must be a positive integer, got {rounds!r}.")
  return [1.0 - (1.0 - sparsity) ** (k / rounds) for k in range(1, rounds)] + [sparsity]


def prune(
  name: str,
  params: PyTree,
  sparsity: float,
  task: Task,
  *,
  batches: Batches | None = None,
  key: jax.Array | None = None,
  rounds: int | None = None,
  distribution: str = "global",
  min_kept_per_layer: int = 0,
  filter_fn: masks.FilterFn = masks.kernels,
  mesh: Mesh | None = None,
  layer_sparsity: Mapping[str, float] | str | None = None,
  invert: bool = False,
  within: PyTree | None = None,
) -> PyTree:
  """Scores with criterion ``name`` and selects exactly κ connections, in one or more rounds.

  Args:
    name: a key of :data:`CRITERIA`.
    params: the params at initialisation.
    sparsity: the final fraction of prunable connections removed, in ``[0, 1)``.
    task: what the criterion may use (a loss, a forward function).
    batches: scoring batches (see :data:`Batches`); a callable gets fresh batches each round.
    key: randomness (``random`` needs it); round ``k`` uses ``fold_in(key, k)``.
    rounds: pruning rounds (default: the criterion's, e.g. 100 for ``synflow``).
    distribution: ``'global'``, ``'uniform'``, ``'erk'`` or ``'N:M'`` (one round only; see
      :mod:`snip_jax.selection`).
    min_kept_per_layer: keep at least this many connections in every prunable leaf.
    filter_fn: which leaves are prunable.
    mesh: spread each round's batches over this mesh's devices (see :func:`score`).
    layer_sparsity: the sparsity of the layers it names, each held at its own target ratio of
      the schedule's (see :func:`snip_jax.selection.top_k_mask`).
    invert: keep the lowest-scoring connections instead (the ``invert`` sanity check,
      :mod:`snip_jax.sanity`), in every round.
    within: a mask the params are already pruned to (e.g. a trained sparse network's): the
      network is scored as pruned to it and only its kept connections may be kept.

  Returns:
    A ``bool`` mask pytree shaped like ``params``.
  """
  criterion = get_criterion(name)
  _check_task(name, criterion, task, batches, key)
  targets = schedule(sparsity, criterion.rounds if rounds is None else rounds)
  if len(targets) > 1 and selection.n_m(distribution) is not None:
    raise ValueError(
      f"distribution {distribution!r} selects in one shot, but criterion {name!r} prunes in "
      f"{len(targets)} rounds; pass rounds=1 (config.prune_rounds=1)."
    )
  layer_targets = None
  if layer_sparsity is not None:
    layer_sparsity = selection.validate_layer_sparsity(layer_sparsity)
    layer_targets = {k: schedule(v, len(targets)) for k, v in layer_sparsity.items()}
  key = jax.random.key(0) if key is None else key
  score_fn = criterion.make_score_fn(task, filter_fn)  # Compiled once for all rounds.
  top_level = xla.jit(score_fn)
  restricted = within is not None
  mask = masks.conform_mask(params, within) if restricted else masks.ones_like(params)
  for k, target in enumerate(targets):
    round_batches = scoring.round_batches(batches, k) if criterion.uses_batches else None
    scores = _score_round(
      name, score_fn, top_level, params, mask, round_batches, jax.random.fold_in(key, k), mesh
    )
    mask = selection.top_k_mask(
      sanity.inverted_scores(scores) if invert else scores,
      target,
      filter_fn=filter_fn,
      distribution=distribution,
      min_kept_per_layer=min_kept_per_layer,
      within=mask if k or restricted else None,
      layer_sparsity=None if layer_targets is None else {n: t[k] for n, t in layer_targets.items()},
    )
  return mask


@dataclasses.dataclass(frozen=True)
class Reach:
  """Which outputs of a network its input still reaches, pruned and unpruned (:func:`reach`).

  Attributes:
    pruned: one bool per output unit (the forward's output for one example, flattened: a
      classifier's classes), whether a path from the input reaches it through kept weights.
    dense: the same with every weight kept: the units the probe sees at all (it cannot see
      through every layer, e.g. a normalisation of identical features; those stay out of
      :attr:`cut`).
  """

  pruned: np.ndarray
  dense: np.ndarray

  @property
  def connected(self) -> bool:
    """Whether any input-to-output path survives (:func:`has_path`)."""
    return bool(self.pruned.any())

  @property
  def cut(self) -> list[int]:
    """The output units that pruning cut off from the input: reached by the dense network, not
    by the pruned one. Such a unit no longer depends on the input (a class predicted from its
    bias alone, if ever)."""
    return [int(i) for i in np.flatnonzero(self.dense & ~self.pruned)]


def reach(task: Task, params: PyTree, mask: PyTree, filter_fn=masks.kernels) -> Reach:
  """:class:`Reach`: which output units the input reaches in the network pruned to ``mask``,
  and in the unpruned one.

  Runs ``task.forward`` on one all-ones input with every kept prunable weight set to
  ``1 / fan_in`` (a positive value; the scale avoids overflow), pruned ones to 0, biases to 0
  and the other floating-point leaves (e.g. batch-norm scales) to their absolute values
  (integer, ``bool`` and key leaves are given as they are): with non-negative
  weights and inputs, ReLU and max pooling pass signal exactly where a path exists, so an
  output unit is non-zero iff a path reaches it. A mask can keep connections in every layer and
  still cut some outputs off: SNIP scored on a single example (the paper's |D| = 1) can keep no
  weight into the classes that example does not involve.
  """
  if task.forward is None or task.input_shape is None:
    raise ValueError("has_path and reach need Task(forward=..., input_shape=...).")
  mask = masks.conform_mask(params, mask)

  # Each leaf's role, decided here on the leaves themselves (a filter may look at them); the
  # arithmetic then runs inside the one compiled forward, not as an eager op per leaf.
  def role(path, w):
    if not masks.is_candidate(w):
      return "constant"  # Integer tables, bool flags, RNG keys: as they are.
    if filter_fn(path, w):
      return "prunable"
    return "bias" if masks.is_bias(path) else "other"

  roles = jax.tree.map_with_path(role, params)

  def weight(role, w, m):
    if role == "constant":
      return w
    if role == "prunable":
      fan_in = max(1, math.prod(jnp.shape(w)[:-1]))
      w = jnp.asarray(m, jnp.float32) / fan_in
    return (jnp.zeros_like(w) if role == "bias" else jnp.abs(w)).astype(dtype)

  def reached(params, mask):
    out = task.run_forward(jax.tree.map(weight, roles, params, mask), dtype)
    return jnp.ravel(out > 0)

  def both(params, mask):  # One compiled function for the pruned and the dense probe.
    return reached(params, mask), reached(params, jax.tree.map(jnp.ones_like, mask))

  with scoring.precision(True):
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    pruned, dense = jax.device_get(jax.jit(both)(params, mask))
  return Reach(pruned=np.asarray(pruned), dense=np.asarray(dense))


def has_path(task: Task, params: PyTree, mask: PyTree, filter_fn=masks.kernels) -> bool:
  """Whether any input-to-output path survives in the network pruned to ``mask`` (the probe of
  :func:`reach`). A layer that keeps connections but none on a path still cuts the network;
  :func:`snip_jax.masks.collapsed_layers` names the layers that keep none, and
  :attr:`Reach.cut` the outputs cut off while others stay connected."""
  return reach(task, params, mask, filter_fn).connected
