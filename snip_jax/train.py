"""SNIP end to end: init -> score -> exact top-κ mask -> masked training -> results.

:func:`train_and_evaluate` is what ``experiments/train.py`` and the notebooks call. The pieces it
is made of (:func:`create_train_state`, :func:`train_step`, :func:`eval_step`) are pure functions
a user can reuse. It runs data-parallel over every device (:mod:`snip_jax.parallel`): the state
replicated, each batch split over the devices, the same numbers as on one device up to the order
of floating-point additions. Results go to the workdir (written by process 0 of a multi-process
run):

* ``config.json``: the config of the run;
* ``metrics.jsonl``: one line per epoch (epoch, train_loss, train_accuracy, val_accuracy, seconds);
* ``mask.npz``: the mask, keyed by tree path;
* ``summary.json``: model, dataset, criterion and how it ran, target and measured sparsity,
  counts, layer collapse, test metrics, timings, per-layer table;
* ``checkpoints/<step>/``: the train state and the run's :class:`Progress`
  (:mod:`snip_jax.checkpoint`), from which running the same config again resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import numbers
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from snip_jax import checkpoint, criteria, data, masks, models, optim, parallel, selection
from snip_jax.init import get_initializer

OPTIMIZERS = ("sgd", "adam")
#: How batch norm normalises while SNIP scores: with the (freshly initialised) running
#: statistics, as the authors' code does, or with the statistics of the scoring batch.
SCORE_BN_MODES = ("inference", "train")
Batch = tuple[jax.Array, jax.Array]
#: Every field of an experiment config (``experiments/configs/lenet300_fashion_mnist.py``
#: documents each); :func:`validate_config` refuses any other.
CONFIG_FIELDS = (
  "augment",
  "batch_size",
  "checkpoint_every_steps",
  "checkpoint_keep",
  "criterion",
  "data_dir",
  "dataset",
  "distributed",
  "distribution",
  "eval_batch_size",
  "grasp_temperature",
  "init",
  "learning_rate",
  "log_every_steps",
  "lr_decay_every_steps",
  "lr_decay_factor",
  "min_kept_per_layer",
  "model",
  "momentum",
  "num_devices",
  "num_epochs",
  "optimizer",
  "prune_biases",
  "prune_rounds",
  "random_labels",
  "reinit_after_pruning",
  "score_batch_size",
  "score_batches",
  "score_bn_mode",
  "seed",
  "source_dir",
  "sparsity",
  "train_examples",
  "weight_decay",
)
#: Fields a resumed run may change: they affect how it logs, checkpoints and finds its data,
#: not its results.
RESUMABLE_FIELDS = (
  "checkpoint_every_steps",
  "checkpoint_keep",
  "data_dir",
  "log_every_steps",
  "source_dir",
)
#: The files a run writes into its workdir (besides ``checkpoints/``).
RESULT_FILES = ("config.json", "mask.npz", "metrics.jsonl", "summary.json")
#: What ``experiments/export.py`` writes into a run's workdir (see :mod:`snip_jax.export`): the
#: compact model and the record of its checks. ``--overwrite`` deletes them with the run, so a
#: workdir never holds the export of another run.
EXPORT_FILES = ("sparse_model.npz", "sparse_model.json")


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


# --------------------------------------------------------------------------------------------
# Config checks: every bad value fails here, before data is read or the workdir is touched.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the field and the fix for any invalid config value."""
  unknown = sorted(set(config) - set(CONFIG_FIELDS))
  if unknown:
    close = difflib.get_close_matches(unknown[0], CONFIG_FIELDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(
      f"Unknown config field {unknown[0]!r}; {hint}The fields are those of "
      "experiments/configs/lenet300_fashion_mnist.py."
    )
  missing = sorted(set(CONFIG_FIELDS) - set(config))
  if missing:
    raise ValueError(
      f"The config lacks {', '.join(missing)}; start from a config of experiments/configs/ "
      "(e.g. lenet300_fashion_mnist.get_config()) and change its fields."
    )
  if config.model not in models.MODELS:
    raise ValueError(f"Unknown model {config.model!r}; choose one of {sorted(models.MODELS)}.")
  data.get_spec(config.dataset)
  get_initializer(config.init)
  selection.validate_sparsity(config.sparsity)
  criteria.get_criterion(config.criterion)
  selection.validate_distribution(config.distribution)
  selection.validate_min_kept(config.min_kept_per_layer)
  if config.prune_rounds is not None:
    criteria.schedule(config.sparsity, config.prune_rounds)  # Checks the rounds.
  if config.score_bn_mode not in SCORE_BN_MODES:
    raise ValueError(
      f"Unknown score_bn_mode {config.score_bn_mode!r}; choose one of {SCORE_BN_MODES}."
    )
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}.")

  def check(ok: bool, field: str, what: str) -> None:
    if not ok:
      raise ValueError(f"config.{field} must be {what}, got {config[field]!r}.")

  for field in (
    "batch_size",
    "eval_batch_size",
    "score_batch_size",
    "score_batches",
    "num_epochs",
    "lr_decay_every_steps",
    "log_every_steps",
    "checkpoint_keep",
  ):
    check(_is_int(config[field]) and config[field] >= 1, field, "a positive integer")
  check(
    config.train_examples is None
    or (_is_int(config.train_examples) and config.train_examples >= 1),
    "train_examples",
    "a positive integer (or None for all)",
  )
  check(
    _is_int(config.checkpoint_every_steps) and config.checkpoint_every_steps >= 0,
    "checkpoint_every_steps",
    "a non-negative integer (0: checkpoints only after pruning, at the end and on SIGTERM)",
  )
  check(_is_int(config.seed), "seed", "an integer")
  check(
    config.num_devices is None or (_is_int(config.num_devices) and config.num_devices >= 1),
    "num_devices",
    "a positive integer (or None for all devices)",
  )
  for field in ("learning_rate", "lr_decay_factor", "grasp_temperature"):
    check(_is_real(config[field]) and config[field] > 0, field, "a positive number")
  check(_is_real(config.weight_decay) and config.weight_decay >= 0, "weight_decay", ">= 0")
  check(_is_real(config.momentum) and 0 <= config.momentum < 1, "momentum", "in [0, 1)")
  for field in ("augment", "distributed", "random_labels", "prune_biases", "reinit_after_pruning"):
    check(isinstance(config[field], bool), field, "True or False")


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------
# Pure building blocks.


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
  variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
  if train and batch_stats:
    logits, updates = apply_fn(variables, images, train=True, rngs=rngs, mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return apply_fn(variables, images, train=train, rngs=rngs), batch_stats


def make_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model of ``config``: ``config.model`` initialised by ``config.init``, with as many
  classes as ``config.dataset`` has."""
  num_classes = data.get_spec(config.dataset).num_classes
  return models.get_model(config.model, num_classes=num_classes, init=config.init)


def abstract_variables(config: ml_collections.ConfigDict, model: nn.Module) -> dict[str, Any]:
  """The shapes and dtypes of ``model``'s variables for ``config.dataset``'s inputs, as
  ``jax.ShapeDtypeStruct`` s (nothing is computed)."""
  example = jax.ShapeDtypeStruct((1, *data.get_spec(config.dataset).image_shape), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), example)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The unmasked optimizer: L2 weight decay, then SGD(momentum) or Adam, with step decay."""
  schedule = optax.exponential_decay(
    config.learning_rate,
    transition_steps=config.lr_decay_every_steps,
    decay_rate=config.lr_decay_factor,
    staircase=True,
  )
  if config.optimizer == "sgd":
    base = optax.sgd(schedule, momentum=config.momentum or None)
  else:
    base = optax.adam(schedule)
  # L2 on every weight and bias, as in the authors' code (weight decay 5e-4 <=> 0.00025 *
  # sum(w ** 2)), but not on batch-norm scales and offsets, which their code does not decay
  # either. Pruned weights are zero, so the masked optimizer sees no decay on them.
  decayed = lambda params: jax.tree.map_with_path(  # noqa: E731
    lambda path, _: not masks.in_norm_layer(path), params
  )
  return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decayed), base)


def filter_fn_for(config: ml_collections.ConfigDict) -> masks.FilterFn:
  return masks.kernels_and_biases if config.prune_biases else masks.kernels


def scoring_loss(config, apply_fn, batch_stats):
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

  return jax.jit(score)


def create_train_state(
  model: nn.Module,
  params,
  mask,
  tx: optax.GradientTransformation,
  rng: jax.Array,
  batch_stats=None,
) -> TrainState:
  """A train state whose params are masked and whose optimizer keeps them masked."""
  return TrainState.create(
    apply_fn=model.apply,
    params=masks.apply_mask(params, mask),
    tx=optim.masked(tx, mask),
    batch_stats=batch_stats or {},
    rng=rng,
  )


def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on a batch; the masked optimizer zeroes pruned coordinates of the update.

  Stochastic layers (dropout) get ``fold_in(state.rng, state.step)``, so a step's randomness
  depends only on the run's key and the step number.
  """
  images, labels = batch
  rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}

  def loss_fn(params):
    logits, batch_stats = forward(
      state.apply_fn, params, state.batch_stats, images, train=True, rngs=rngs
    )
    return jnp.mean(cross_entropy(logits, labels)), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return state, {"loss": loss, "accuracy": accuracy}


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
  gradients (and batch norm's batch statistics) are all-reduced across the devices.
  """
  state_sharding = parallel.replicated(mesh)
  return jax.jit(
    train_step,
    in_shardings=(state_sharding, parallel.batch_sharded(mesh)),
    out_shardings=(state_sharding, parallel.replicated(mesh)),
    donate_argnums=0,
  )


def sharded_eval_step(mesh: Mesh):
  """:func:`eval_step` jitted for ``mesh``: the state replicated, the batch split."""
  return jax.jit(
    eval_step,
    in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
    out_shardings=parallel.replicated(mesh),
  )


def evaluate(
  jit_eval_step, state: TrainState, split: data.Split, batch_size: int, mesh: Mesh | None = None
):
  """``(mean loss, accuracy)`` over every example of ``split``.

  With a ``mesh`` the batches are split over its devices (see :func:`sharded_eval_step`); in a
  multi-process run ``split`` is this process's range and ``batch_size`` the global batch.
  """
  local_size = batch_size // jax.process_count()
  # Every process takes as many steps as the one with the most examples.
  num_batches = max(parallel.process_values(-(-len(split) // local_size)))
  batches = data.eval_batches(split, local_size, num_batches)
  if mesh is not None:
    batches = (parallel.shard_batch(b, mesh) for b in batches)
  totals = [jit_eval_step(state, b) for b in batches]
  totals = jax.device_get(jax.tree.map(lambda *xs: sum(xs), *totals))
  return float(totals["loss"] / totals["count"]), float(totals["correct"] / totals["count"])


# --------------------------------------------------------------------------------------------
# The experiment.


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """``runs/<model>_<dataset>[_<criterion>][_<distribution>]_sp<sparsity>_seed<seed>``.

  The criterion and distribution appear when they are not the defaults (SNIP, global), so
  baselines never overwrite the SNIP run they are compared with.
  """
  parts = [config.model, config.dataset]
  parts += [config.criterion] if config.criterion != "snip" else []
  parts += [config.distribution] if config.distribution != "global" else []
  return os.path.join("runs", "_".join([*parts, f"sp{config.sparsity:g}", f"seed{config.seed}"]))


def _write_json(path: str, obj: Any) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as ``config.json`` holds it (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict()))


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
  processes, count = jax.process_count(), config.score_batches
  spread = spreads_scoring(config, mesh)
  # This process's batches and their size; it draws count * score_batch_size / processes.
  size, local_count = config.score_batch_size, count // processes
  if not spread:
    size, local_count = size // processes, count

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
  n, processes = config.train_examples, jax.process_count()
  if n is not None and n // processes > len(train_split):
    raise ValueError(
      f"config.train_examples={n} exceeds the {len(train_split) * processes} training examples "
      f"of {config.dataset}; lower it or leave it unset (None) for all of them."
    )
  if processes > 1:
    n = min(parallel.process_values(len(train_split) if n is None else n // processes))
  images, labels = train_split.images[:n], train_split.labels[:n]
  if config.random_labels:
    labels = np.asarray(jax.random.permutation(labels_key, labels))
  return data.Split(images, labels)


def prune_at_init(
  config,
  apply_fn,
  params,
  batch_stats,
  train_split: data.Split,
  score_key: jax.Array,
  mesh: Mesh | None = None,
):
  """``config.criterion`` at ``config.sparsity`` on random training batches.

  With a ``mesh`` (and ``params`` replicated on it) the scoring batches are spread over its
  devices or split over them (:func:`spreads_scoring`); the mask is the one device's, up to
  ties that float rounding could break.

  Returns:
    ``(mask, task, seconds)``.
  """
  t0 = time.perf_counter()
  task = make_task(config, apply_fn, batch_stats, train_split.images.shape[1:])
  mask = criteria.prune(
    config.criterion,
    params,
    config.sparsity,
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
  )
  mask = jax.block_until_ready(mask)
  return mask, task, time.perf_counter() - t0


class PreemptedError(Exception):
  """The run got SIGTERM: it saved a checkpoint and stopped; running it again resumes it."""


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[threading.Event]:
  """An event that SIGTERM sets while the block runs (a handler only in the main thread).

  Not in a multi-process run: there JAX's preemption service handles SIGTERM, and the processes
  agree on the step to stop at (``multihost_utils.reached_preemption_sync_point``).
  """
  flag = threading.Event()
  if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
    yield flag
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


def _prepare_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool) -> None:
  """Makes ``workdir`` and checks that this run may use it.

  A workdir that holds a run (checkpoints or a summary) with another config is refused, unless
  ``overwrite``, which first deletes that run's files (only those: ``RESULT_FILES``,
  ``EXPORT_FILES`` and ``checkpoints/``). A config that differs only in
  :data:`RESUMABLE_FIELDS` resumes the run.
  Every process checks; only process 0 deletes, and the others wait for it.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ValueError(
      f"Cannot write to workdir {workdir!r} ({e.strerror or e}); choose another --workdir."
    ) from e
  if overwrite:
    if jax.process_index() == 0:
      shutil.rmtree(os.path.join(workdir, checkpoint.CHECKPOINT_DIR), ignore_errors=True)
      for name in (*RESULT_FILES, *EXPORT_FILES):
        with contextlib.suppress(FileNotFoundError):
          os.remove(os.path.join(workdir, name))
    parallel.sync("snip_jax:overwrite")
    return
  has_run = checkpoint.has_checkpoints(workdir) or os.path.exists(
    os.path.join(workdir, "summary.json")
  )
  if not has_run:
    return  # Nothing to resume and no results to lose.
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      previous = json.load(f)
  except (OSError, ValueError):
    previous = {}
  current = _as_json(config)
  changed = [
    f"{field}: {previous.get(field, '<unset>')!r} -> {current.get(field, '<unset>')!r}"
    for field in sorted(set(previous) | set(current))
    if field not in RESUMABLE_FIELDS and previous.get(field) != current.get(field)
  ]
  if changed:
    raise ValueError(
      f"Workdir {workdir!r} holds a run with another config ({'; '.join(changed)}). Use "
      "another --workdir, run the original config to resume that run, or pass --overwrite to "
      "delete it and start this one."
    )


@dataclasses.dataclass
class Progress:
  """Where a run stands, besides its train state: a checkpoint's ``progress`` item.

  The batches of an epoch are a function of the seed and the epoch, so ``(epoch, batch)`` is the
  whole data-order state. The step metrics of the epoch under way are kept (as the float32
  values they are) so that a resumed epoch's mean is bit-identical to an uninterrupted one.
  """

  epoch: int = 1  # The epoch under way, from 1; num_epochs + 1 once training is done.
  batch: int = 0  # Batches of it done.
  losses: list[float] = dataclasses.field(default_factory=list)
  accuracies: list[float] = dataclasses.field(default_factory=list)
  records: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # metrics.jsonl
  prune_seconds: float = 0.0
  train_seconds: float = 0.0

  def add(self, step_metrics: list[dict[str, jax.Array]], last_step: int) -> None:
    """Appends step metrics (fetched from the device); stops at a non-finite loss."""
    if not step_metrics:
      return
    fetched = jax.device_get(step_metrics)
    losses = np.asarray([m["loss"] for m in fetched], np.float32)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      raise FloatingPointError(
        f"Training loss became {losses[bad[0]]} at step {last_step - len(losses) + 1 + bad[0]}; "
        "lower config.learning_rate or check the data and the initialisation. Nothing was "
        "saved after the last good checkpoint."
      )
    self.losses += losses.tolist()
    self.accuracies += [float(m["accuracy"]) for m in fetched]

  def end_epoch(self, val_accuracy: float, seconds: float) -> dict[str, Any]:
    """Closes the epoch under way; returns its record."""
    record = {
      "epoch": self.epoch,
      "train_loss": float(np.mean(np.asarray(self.losses, np.float32))),
      "train_accuracy": float(np.mean(np.asarray(self.accuracies, np.float32))),
      "val_accuracy": val_accuracy,
      "seconds": seconds,
    }
    self.records.append(record)
    self.epoch, self.batch, self.losses, self.accuracies = self.epoch + 1, 0, [], []
    return record


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _save(checkpoints: checkpoint.Checkpointer, state: TrainState, progress: Progress) -> None:
  """Saves a checkpoint, unless the params are no longer finite (then nothing is saved)."""
  if not bool(_all_finite(state.params)):
    raise FloatingPointError(
      f"The params are no longer finite at step {int(state.step)}; lower "
      "config.learning_rate or check the data and the initialisation. Nothing was saved after "
      "the last good checkpoint."
    )
  checkpoints.save(state, dataclasses.asdict(progress))


def _report_mask(config, mask, task, params, filter_fn, prune_seconds: float):
  """Prints the per-layer table (and any collapse); returns ``(rows, collapsed, connected)``."""
  mask, params = jax.device_get((mask, params))  # Host copies: the same in every process.
  per_layer = masks.layer_summary(mask, filter_fn)
  collapsed = masks.collapsed_layers(per_layer)
  connected = criteria.has_path(task, params, mask, filter_fn)
  if jax.process_index() > 0:
    return per_layer, collapsed, connected
  print(
    f"{config.criterion} pruning ({prune_seconds:.2f} s), {config.distribution} selection, "
    f"target sparsity {config.sparsity:.2%}:\n" + masks.format_layer_summary(per_layer),
    flush=True,
  )
  if collapsed or not connected:
    print(
      f"WARNING: layer collapse: {len(collapsed)} layer(s) kept no connection at all "
      f"({', '.join(collapsed) or 'none'}); a path from input to output "
      f"{'survives' if connected else 'no longer exists'}. Lower config.sparsity or set "
      "config.min_kept_per_layer.",
      flush=True,
    )
  return per_layer, collapsed, connected


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False
) -> dict[str, Any]:
  """Runs SNIP on ``config`` and writes the results files into ``workdir``.

  Resumes from the newest checkpoint in ``workdir`` when there is one (bit-identical to an
  uninterrupted run). Checkpoints are saved after pruning, every
  ``config.checkpoint_every_steps`` steps, at the end, and on SIGTERM, which then raises
  :class:`PreemptedError`.

  Args:
    config: the experiment (see ``experiments/configs/``); checked before anything is written.
    workdir: where the results and checkpoints go.
    overwrite: start afresh: delete the run found in ``workdir`` (its checkpoints and results
      files) instead of resuming it or, when its config differs, refusing.

  The run is data-parallel over ``config.num_devices`` devices (default: all); with
  ``config.distributed`` it first calls ``jax.distributed.initialize()``, and every process of a
  multi-host run must call this function with the same config and workdir (a directory they
  share).

  Returns:
    The summary (also written to ``workdir/summary.json``).

  Raises:
    ValueError: a bad config (a batch size the devices cannot split evenly included), or a
      workdir that cannot be written or holds another run.
    DataNotFoundError: the dataset is not available offline.
    FloatingPointError: the training loss or the params became NaN or infinite.
    PreemptedError: SIGTERM arrived; a checkpoint was saved.
  """
  validate_config(config)
  if config.distributed:
    parallel.initialize_distributed()
  mesh = parallel.make_mesh(config.num_devices)
  for field in ("batch_size", "eval_batch_size", "score_batch_size"):
    if field != "score_batch_size" or not spreads_scoring(config, mesh):
      parallel.check_divisible(config[field], mesh, field)
  model = make_model(config)
  filter_fn = filter_fn_for(config)
  shapes = abstract_variables(config, model)["params"]
  selection.num_kept(masks.count_prunable(shapes, filter_fn), config.sparsity)  # κ >= 1.
  _prepare_workdir(workdir, config, overwrite)

  processes, main_process = jax.process_count(), jax.process_index() == 0
  splits, _ = data.load_dataset(
    config.dataset, config.data_dir, config.source_dir, (jax.process_index(), processes)
  )
  init_key, score_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 4)
  # The epochs fold 1, 2, ... into data_key; 0 is the labels' stream.
  train_split = training_split(config, splits["train"], jax.random.fold_in(data_key, 0))
  # Sizes per process: with several processes, each holds its share of every batch.
  if config.batch_size // processes > len(train_split):
    raise ValueError(
      f"config.batch_size={config.batch_size} exceeds the {len(train_split) * processes} "
      "training examples; lower it."
    )
  if config.score_batch_size * config.score_batches // processes > len(train_split):
    raise ValueError(
      f"config.score_batch_size * config.score_batches = "
      f"{config.score_batch_size * config.score_batches} scoring examples exceed the "
      f"{len(train_split) * processes} training examples; lower one of them."
    )
  if main_process:
    _write_json(os.path.join(workdir, "config.json"), config.to_dict())
    print(f"Config:\n{config}\nData-parallel over {mesh.devices.size} device(s).", flush=True)

  # One example is enough to fix the shapes, and much faster to run than a batch.
  init = jax.jit(model.init, out_shardings=parallel.replicated(mesh))
  one_example = train_split.images[:1]
  variables = init(init_key, one_example)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  task = make_task(config, model.apply, batch_stats, train_split.images.shape[1:])
  tx = make_optimizer(config)

  with checkpoint.Checkpointer(workdir, keep=config.checkpoint_keep) as checkpoints:
    # The template gives the restored arrays their structure; the optimizer reads the mask
    # from its state, so the template's all-ones mask is never used.
    template = create_train_state(
      model, params, masks.ones_like(params), tx, step_key, batch_stats=batch_stats
    )
    # Placed where the steps want it: restored arrays take the template's sharding.
    template = parallel.replicate(template, mesh)
    restored = checkpoints.restore_latest(template)
    if restored is None:
      mask, _, prune_seconds = prune_at_init(
        config, model.apply, params, batch_stats, train_split, score_key, mesh
      )
      progress = Progress(prune_seconds=prune_seconds)
    else:
      state, progress_dict = restored
      progress, mask = Progress(**progress_dict), state.mask
      if main_process:
        print(f"Resuming from {checkpoints.directory}/{int(state.step)}.", flush=True)
    if main_process:
      masks.save_mask(os.path.join(workdir, "mask.npz"), mask)
    per_layer, collapsed, connected = _report_mask(
      config, mask, task, params, filter_fn, progress.prune_seconds
    )
    if restored is None:
      if config.reinit_after_pruning:
        # Score one initialisation, train another (as the authors' code does): the mask is
        # kept, the weights are drawn afresh with an independent key.
        params = init(jax.random.fold_in(init_key, 1), one_example)["params"]
      state = create_train_state(model, params, mask, tx, step_key, batch_stats=batch_stats)
      state = parallel.replicate(state, mesh)
      _save(checkpoints, state, progress)
    state, progress = _train(
      config,
      state,
      progress,
      train_split,
      splits["validation"],
      data_key,
      checkpoints,
      workdir,
      mesh,
    )

  test_loss, test_accuracy = evaluate(
    sharded_eval_step(mesh), state, splits["test"], config.eval_batch_size, mesh
  )
  final_params = jax.device_get(state.params)
  summary = {
    "model": config.model,
    "dataset": config.dataset,
    "criterion": config.criterion,
    "distribution": config.distribution,
    "prune_rounds": config.prune_rounds or criteria.get_criterion(config.criterion).rounds,
    "score_examples": config.score_batch_size * config.score_batches,
    "reinit_after_pruning": config.reinit_after_pruning,
    "train_examples": len(train_split),
    "random_labels": config.random_labels,
    "seed": config.seed,
    "target_sparsity": config.sparsity,
    "sparsity": masks.sparsity(final_params, filter_fn),
    "num_params": sum(int(np.size(p)) for p in jax.tree.leaves(final_params)),
    "num_prunable": masks.count_prunable(final_params, filter_fn),
    "num_kept": sum(r["kept"] for r in per_layer),
    "collapsed_layers": collapsed,
    "input_output_path": connected,
    "test_accuracy": test_accuracy,
    "test_loss": test_loss,
    "val_accuracy": progress.records[-1]["val_accuracy"],
    "prune_seconds": progress.prune_seconds,
    "train_seconds": progress.train_seconds,
    "epochs": config.num_epochs,
    "steps": int(state.step),
    "per_layer": per_layer,
    "jax_version": jax.__version__,
    "backend": jax.default_backend(),
    "devices": int(mesh.devices.size),
    "processes": processes,
  }
  if not main_process:
    return summary
  _write_json(os.path.join(workdir, "summary.json"), summary)
  print(
    f"test accuracy {test_accuracy:.4f}  test loss {test_loss:.4f}  "
    f"sparsity {summary['sparsity']:.4%} ({summary['num_kept']:,} of "
    f"{summary['num_prunable']:,} prunable weights kept)  train "
    f"{progress.train_seconds:.1f} s\nresults in {workdir}",
    flush=True,
  )
  return summary


def _train(
  config,
  state: TrainState,
  progress: Progress,
  train_split: data.Split,
  val_split: data.Split,
  data_key: jax.Array,
  checkpoints: checkpoint.Checkpointer,
  workdir: str,
  mesh: Mesh,
) -> tuple[TrainState, Progress]:
  """Trains from ``(state, progress)`` to the end, checkpointing; returns the final pair.

  The host syncs with the device every ``config.log_every_steps`` steps (not every step, so
  dispatch stays asynchronous) to advance the progress bar and to stop on a non-finite loss,
  and at every checkpoint, which is saved only after every loss before it was checked.
  """
  jit_train_step = sharded_train_step(mesh)
  jit_eval_step = sharded_eval_step(mesh)
  main_process = jax.process_index() == 0
  local_batch_size = config.batch_size // jax.process_count()
  steps_per_epoch = len(train_split) // local_batch_size
  every = config.checkpoint_every_steps
  step = int(state.step)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if main_process:
    with open(metrics_path, "w") as f:  # The epochs this run has finished, and no others.
      f.writelines(json.dumps(r) + "\n" for r in progress.records)
  t_start, seconds_before = time.perf_counter(), progress.train_seconds

  def save():
    progress.train_seconds = seconds_before + time.perf_counter() - t_start
    _save(checkpoints, state, progress)

  # The bar only on a terminal (disable=None): in a log file the per-epoch lines say it all.
  with (
    _sigterm_flag() as sigterm,
    tqdm(
      total=config.num_epochs * steps_per_epoch,
      initial=step,
      unit="step",
      dynamic_ncols=True,
      desc="train",
      disable=None if main_process else True,
    ) as bar,
  ):
    while progress.epoch <= config.num_epochs:
      t_epoch = time.perf_counter()
      epoch_seed = np.asarray(jax.random.key_data(jax.random.fold_in(data_key, progress.epoch)))
      batches = data.train_batches(
        train_split, local_batch_size, epoch_seed, augment=config.augment, start=progress.batch
      )
      pending = []
      for batch in batches:
        state, metrics = jit_train_step(state, parallel.shard_batch(batch, mesh))
        pending.append(metrics)
        step += 1
        progress.batch += 1
        due = bool(every) and step % every == 0
        if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(step):
          sigterm.set()  # Every process stops at this step.
        if step % config.log_every_steps == 0 or due or sigterm.is_set():
          progress.add(pending, step)
          pending = []
          bar.update(step - bar.n)
          bar.set_postfix(epoch=progress.epoch, loss=f"{progress.losses[-1]:.4f}")
        # A checkpoint due at the epoch's last step waits for the epoch's record.
        if sigterm.is_set() or (due and progress.batch < steps_per_epoch):
          save()
        if sigterm.is_set():
          checkpoints.wait()
          raise PreemptedError(
            f"SIGTERM at step {step}: saved a checkpoint in {checkpoints.directory}; run the "
            "same command again to resume."
          )
      progress.add(pending, step)
      bar.update(step - bar.n)
      _, val_accuracy = evaluate(jit_eval_step, state, val_split, config.eval_batch_size, mesh)
      record = progress.end_epoch(val_accuracy, time.perf_counter() - t_epoch)
      if main_process:
        with open(metrics_path, "a") as f:
          f.write(json.dumps(record) + "\n")
        bar.write(
          f"epoch {record['epoch']:3d}  train_loss {record['train_loss']:.4f}  "
          f"train_acc {record['train_accuracy']:.4f}  val_acc {val_accuracy:.4f}  "
          f"({record['seconds']:.1f} s)"
        )
      if (every and step % every == 0) or progress.epoch > config.num_epochs:
        save()
  return state, progress
