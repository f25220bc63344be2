"""Pruning at initialisation inside a run: the scoring task, its batches, the mask and its report.

:func:`prune_at_init` scores ``config.criterion`` on random training batches and selects
``config.sparsity``'s mask; :func:`mask_report` describes a mask layer by layer (also a restored
one). Nothing here prints: the loop does (:func:`format_report`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from snip_jax import criteria, data, masks, parallel, sanity, xla
from snip_jax.train.build import filter_fn_for
from snip_jax.train.steps import cross_entropy, forward


def scoring_loss(config: ml_collections.ConfigDict, apply_fn, batch_stats):
  """``loss(params, images, labels)``: the mean cross-entropy the data-driven criteria score.

  Batch norm runs as ``config.score_bn_mode`` says; statistics it would update are discarded
  (scoring changes nothing but the mask). For ``grasp`` the logits are divided by
  ``config.grasp_temperature``, as in the GraSP authors' code.
  """
  train_mode = config.score_bn_mode == "train"
  temperature = config.grasp_temperature if config.criterion == "grasp" else 1.0

  def loss(params, images, labels):
    logits, _ = forward(apply_fn, params, batch_stats, images, train=train_mode)
    if temperature != 1.0:
      logits = logits / temperature
    return jnp.mean(cross_entropy(logits, labels))

  return loss


def make_task(config, apply_fn, batch_stats, input_shape) -> criteria.Task:
  """What the criteria see: :func:`scoring_loss` and the model in inference mode."""
  return criteria.Task(
    loss_fn=scoring_loss(config, apply_fn, batch_stats),
    forward=lambda params, x: forward(apply_fn, params, batch_stats, x, train=False)[0],
    input_shape=tuple(input_shape),
  )


def make_score_fn(config, apply_fn):
  """A jitted ``score(params, batch_stats, images, labels)``: SNIP's scores on one batch.

  One ``jax.grad`` of :func:`scoring_loss` w.r.t. a ones-mask (see
  :func:`snip_jax.sensitivity.connection_sensitivity`), for benchmarks and tests; runs use
  :func:`prune_at_init`.
  """
  snip = criteria.get_criterion("snip")
  filter_fn = filter_fn_for(config)

  def score(params, batch_stats, images, labels):
    task = make_task(config, apply_fn, batch_stats, images.shape[1:])
    return snip.make_score_fn(task, filter_fn)(
      params, masks.ones_like(params), (images, labels), None
    )

  return xla.jit(score)


def spreads_scoring(config, mesh: Mesh | None) -> bool:
  """Whether scoring gives each device whole batches (rather than a slice of every batch).

  So it does on several devices when ``config.score_batches`` is a multiple of their number:
  each device scores its own batches and one all-reduce adds up the devices' sums (see
  :func:`snip_jax.criteria.score`). Otherwise every scoring batch is split over the devices, and
  each costs one all-reduce of its gradient (of every layer at once).
  """
  devices = 1 if mesh is None else mesh.devices.size
  return devices > 1 and config.score_batches % devices == 0


def scoring_batches(
  config, train_split: data.Split, score_key: jax.Array, mesh: Mesh | None = None
):
  """``batches(round)``: ``config.score_batches`` random training batches for one round.

  The examples of a round are drawn without replacement (round 0 from ``score_key``, round
  ``k`` from ``fold_in(score_key, k)``) and cut into batches one at a time, so only one batch of
  images per device is on the devices at once. With a ``mesh`` the batches are laid out for it:
  whole host batches when :func:`spreads_scoring`, else global arrays split over the devices.
  In a multi-process run each process draws its share of the examples from its own range: its
  ``score_batches / processes`` whole batches, or its part of every batch.
  """
  spread = spreads_scoring(config, mesh)
  if spread:  # Whole batches, this process's share of them.
    size, local_count = config.score_batch_size, parallel.local_share(config.score_batches)
  else:  # Every batch, this process's share of each.
    size, local_count = parallel.local_share(config.score_batch_size), config.score_batches

  def batches(round_index: int):
    key = jax.random.fold_in(score_key, round_index) if round_index else score_key
    idx = np.asarray(jax.random.choice(key, len(train_split), (local_count * size,), replace=False))
    for b in range(local_count):
      chosen = idx[b * size : (b + 1) * size]
      batch = (train_split.images[chosen], train_split.labels[chosen])
      if spread:
        yield batch
      elif mesh is not None:
        yield parallel.shard_batch(batch, mesh)
      else:
        yield tuple(map(jnp.asarray, batch))

  return batches


def training_split(config, train_split: data.Split, labels_key: jax.Array) -> data.Split:
  """The examples a run scores and trains on.

  The first ``config.train_examples`` of the training split (all when unset), with their labels
  shuffled by one fixed permutation drawn from ``labels_key`` when ``config.random_labels``
  (the memorisation experiment: the class frequencies stay, any link from image to label goes).
  Validation and test keep their true labels.

  In a multi-process run ``train_split`` is this process's range: it keeps its first
  ``train_examples / processes`` and the labels are permuted within it; every process keeps as
  many examples as the smallest range (at most one fewer), so all take the same steps.
  """
  n = config.train_examples
  if n is not None and parallel.local_share(n) > len(train_split):
    raise ValueError(
      f"config.train_examples={n} exceeds the {len(train_split) * jax.process_count()} "
      f"training examples of {config.dataset}; lower it or leave it unset (None) for all of them."
    )
  if jax.process_count() > 1:
    n = parallel.fewest_over_processes(len(train_split) if n is None else parallel.local_share(n))
  images, labels = train_split.images[:n], train_split.labels[:n]
  if config.random_labels:
    labels = np.asarray(jax.random.permutation(labels_key, labels))
  return data.Split(images, labels)


@dataclasses.dataclass(frozen=True)
class MaskReport:
  """What a mask keeps, layer by layer.

  Attributes:
    per_layer: :func:`snip_jax.masks.layer_summary`'s rows.
    collapsed: the layers that keep no connection at all.
    connected: whether a path from input to output survives.
    excluded: :func:`snip_jax.masks.excluded_leaves`'s rows: the leaves not pruned, and why.
    cut_outputs: the output units (a classifier's classes) that pruning cut off from the
      input while others stay connected (:attr:`snip_jax.criteria.Reach.cut`).
    num_outputs: how many output units the network has (per example).
  """

  per_layer: list[dict[str, Any]]
  collapsed: list[str]
  connected: bool
  excluded: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  cut_outputs: list[int] = dataclasses.field(default_factory=list)
  num_outputs: int = 0

  @property
  def num_kept(self) -> int:
    return sum(row["kept"] for row in self.per_layer)


def mask_report(config, mask, task: criteria.Task, params) -> MaskReport:
  """:class:`MaskReport` of ``mask`` over ``params`` (host copies: the same in every process)."""
  mask, params = jax.device_get((mask, params))
  filter_fn = filter_fn_for(config)
  per_layer = masks.layer_summary(mask, filter_fn, params=params)
  reach = criteria.reach(task, params, mask, filter_fn)
  return MaskReport(
    per_layer=per_layer,
    collapsed=masks.collapsed_layers(per_layer),
    connected=reach.connected,
    excluded=masks.excluded_leaves(params, filter_fn),
    cut_outputs=reach.cut if reach.connected else [],
    num_outputs=int(reach.dense.size),
  )


#: How many cut-off outputs a warning names, and a summary lists (it counts them all).
MAX_CUT_SHOWN = 20
MAX_CUT_STORED = 1000


def format_report(config, report: MaskReport, prune_seconds: float) -> str:
  """The per-layer table, and a warning when a layer collapsed, no path survives or some
  outputs are cut off from the input."""
  check = f", sanity check {config.sanity_check!r}" if config.sanity_check else ""
  text = (
    f"{config.criterion} pruning ({prune_seconds:.2f} s), {config.distribution} selection, "
    f"target sparsity {config.sparsity:.2%}{check}:\n"
    + masks.format_layer_summary(report.per_layer, report.excluded)
  )
  if report.collapsed or not report.connected:
    text += (
      f"\nWARNING: layer collapse: {len(report.collapsed)} layer(s) kept no connection at all "
      f"({', '.join(report.collapsed) or 'none'}); a path from input to output "
      f"{'survives' if report.connected else 'no longer exists'}. Lower config.sparsity or set "
      "config.min_kept_per_layer."
    )
  elif report.cut_outputs:
    shown = ", ".join(map(str, report.cut_outputs[:MAX_CUT_SHOWN]))
    more = len(report.cut_outputs) > MAX_CUT_SHOWN
    text += (
      f"\nWARNING: {len(report.cut_outputs)} of {report.num_outputs} outputs ({shown}"
      f"{', ...' if more else ''}) are cut off from the input: no kept path reaches them, so "
      "they no longer depend on it (such a class's logit is its bias alone). Lower "
      "config.sparsity (or config.layer_sparsity), or score on more examples "
      "(config.score_batch_size, config.score_batches)."
    )
  return text


def prune_at_init(
  config,
  task: criteria.Task,
  params,
  train_split: data.Split,
  score_key: jax.Array,
  mesh: Mesh | None = None,
  within=None,
):
  """``config.criterion`` at ``config.sparsity`` on random training batches (for gradual
  magnitude pruning, ``config.dynamic='gmp'``, at its initial sparsity); with ``within`` (the
  mask of trained ``params``, ``config.prune_trained``) only among the connections it keeps.

  With a ``mesh`` (and ``params`` replicated on it) the scoring batches are spread over its
  devices or split over them (:func:`spreads_scoring`); the mask is the one device's, up to
  ties that float rounding could break.

  Returns:
    ``(mask, seconds)``.
  """
  t0 = time.perf_counter()
  sparsity = config.gmp_initial_sparsity if config.dynamic == "gmp" else config.sparsity
  mask = criteria.prune(
    config.criterion,
    params,
    sparsity,
    task,
    batches=scoring_batches(config, train_split, score_key, mesh),
    mesh=mesh if spreads_scoring(config, mesh) else None,
    # A stream of its own for the random criterion (the batches use score_key and its
    # fold_ins).
    key=jax.random.split(score_key)[0],
    rounds=config.prune_rounds,
    distribution=config.distribution,
    min_kept_per_layer=config.min_kept_per_layer,
    filter_fn=filter_fn_for(config),
    layer_sparsity=config.layer_sparsity,
    invert=config.sanity_check == "invert",
    within=within,
  )
  # The checks that redraw the mask have a stream of their own ('reinit' is the loop's).
  redraw = {"shuffle": sanity.shuffle_within_layers, "layer_random": sanity.layerwise_random}
  if config.sanity_check in redraw:
    mask = redraw[config.sanity_check](
      mask, jax.random.split(score_key)[1], filter_fn=filter_fn_for(config)
    )
  mask = jax.block_until_ready(mask)
  return mask, time.perf_counter() - t0
