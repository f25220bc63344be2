"""SNIP end to end: init -> score -> exact top-κ mask -> masked training -> results.

:func:`train_and_evaluate` is what ``experiments/train.py`` and the notebooks call. The pieces it
is made of (:func:`create_train_state`, :func:`train_step`, :func:`eval_step`) are pure functions
a user can reuse. Results go to the workdir:

* ``config.json``: the config of the run;
* ``metrics.jsonl``: one line per epoch (epoch, train_loss, train_accuracy, val_accuracy, seconds);
* ``mask.npz``: the mask, keyed by tree path;
* ``summary.json``: model, dataset, criterion and how it ran, target and measured sparsity,
  counts, layer collapse, test metrics, timings, per-layer table.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state
from tqdm import tqdm

from snip_jax import criteria, data, masks, models, optim, selection
from snip_jax.init import get_initializer

OPTIMIZERS = ("sgd", "adam")
#: How batch norm normalises while SNIP scores: with the (freshly initialised) running
#: statistics, as the authors' code does, or with the statistics of the scoring batch.
SCORE_BN_MODES = ("inference", "train")
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


# --------------------------------------------------------------------------------------------
# Config checks: every bad value fails here, before data is read or the workdir is touched.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the field and the fix for any invalid config value."""
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
  for field in ("batch_size", "eval_batch_size", "score_batch_size", "score_batches", "num_epochs"):
    if not isinstance(config[field], int) or config[field] < 1:
      raise ValueError(f"config.{field} must be a positive integer, got {config[field]!r}.")
  if config.train_examples is not None and (
    not isinstance(config.train_examples, int) or config.train_examples < 1
  ):
    raise ValueError(
      f"config.train_examples must be a positive integer (or None for all), got "
      f"{config.train_examples!r}."
    )
  for field in ("learning_rate", "lr_decay_factor", "grasp_temperature"):
    if not config[field] > 0:
      raise ValueError(f"config.{field} must be positive, got {config[field]!r}.")
  if config.weight_decay < 0 or not 0 <= config.momentum < 1:
    raise ValueError("config.weight_decay must be >= 0 and config.momentum in [0, 1).")


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


def evaluate(jit_eval_step, state: TrainState, split: data.Split, batch_size: int):
  """``(mean loss, accuracy)`` over every example of ``split``."""
  totals = [jit_eval_step(state, b) for b in data.eval_batches(split, batch_size)]
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


def _stop_if_not_finite(loss: float, step: int) -> None:
  if not math.isfinite(loss):
    raise FloatingPointError(
      f"Training loss became {loss} by step {step}; lower config.learning_rate or check the "
      "data and the initialisation."
    )


def scoring_batches(config, train_split: data.Split, score_key: jax.Array):
  """``batches(round)``: ``config.score_batches`` random training batches for one round.

  The examples of a round are drawn without replacement (round 0 from ``score_key``, round
  ``k`` from ``fold_in(score_key, k)``) and cut into batches one at a time, so only one batch of
  images is on the device at once.
  """
  size, count = config.score_batch_size, config.score_batches

  def batches(round_index: int):
    key = jax.random.fold_in(score_key, round_index) if round_index else score_key
    idx = np.asarray(jax.random.choice(key, len(train_split), (count * size,), replace=False))
    for b in range(count):
      chosen = idx[b * size : (b + 1) * size]
      yield jnp.asarray(train_split.images[chosen]), jnp.asarray(train_split.labels[chosen])

  return batches


def training_split(config, train_split: data.Split, labels_key: jax.Array) -> data.Split:
  """The examples a run scores and trains on.

  The first ``config.train_examples`` of the training split (all when unset), with their labels
  shuffled by one fixed permutation drawn from ``labels_key`` when ``config.random_labels``
  (the memorisation experiment: the class frequencies stay, any link from image to label goes).
  Validation and test keep their true labels.
  """
  n = config.train_examples
  if n is not None and n > len(train_split):
    raise ValueError(
      f"config.train_examples={n} exceeds the {len(train_split)} training examples of "
      f"{config.dataset}; lower it or leave it unset (None) for all of them."
    )
  images, labels = train_split.images[:n], train_split.labels[:n]
  if config.random_labels:
    labels = np.asarray(jax.random.permutation(labels_key, labels))
  return data.Split(images, labels)


def prune_at_init(
  config, apply_fn, params, batch_stats, train_split: data.Split, score_key: jax.Array
):
  """``config.criterion`` at ``config.sparsity`` on random training batches.

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
    batches=scoring_batches(config, train_split, score_key),
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


def _train_epoch(
  jit_train_step, state: TrainState, batches, bar: tqdm, epoch: int, sync_every: int
):
  """Runs the steps of one epoch; returns ``(state, mean train loss, mean train accuracy)``.

  The host syncs with the device every ``sync_every`` steps (not every step, so dispatch stays
  asynchronous) to advance the progress bar honestly and to stop early on a non-finite loss.
  """
  step_metrics = []
  start = bar.n
  for i, batch in enumerate(batches, start=1):
    state, metrics = jit_train_step(state, batch)
    step_metrics.append(metrics)
    if i % sync_every == 0:
      loss = float(metrics["loss"])
      _stop_if_not_finite(loss, int(state.step))
      bar.update(start + i - bar.n)
      bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
  bar.update(start + len(step_metrics) - bar.n)
  step_metrics = jax.device_get(step_metrics)
  train_loss = float(np.mean([m["loss"] for m in step_metrics]))
  _stop_if_not_finite(train_loss, int(state.step))
  return state, train_loss, float(np.mean([m["accuracy"] for m in step_metrics]))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs SNIP on ``config`` and writes the results files into ``workdir``.

  Returns:
    The summary (also written to ``workdir/summary.json``).
  """
  validate_config(config)
  splits, num_classes = data.load_dataset(config.dataset, config.data_dir, config.source_dir)
  init_key, score_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 4)
  # The epochs fold 1, 2, ... into data_key; 0 is the labels' stream.
  train_split = training_split(config, splits["train"], jax.random.fold_in(data_key, 0))
  if config.batch_size > len(train_split):
    raise ValueError(
      f"config.batch_size={config.batch_size} exceeds the {len(train_split)} training examples."
    )
  if config.score_batch_size * config.score_batches > len(train_split):
    raise ValueError(
      f"config.score_batch_size * config.score_batches = "
      f"{config.score_batch_size * config.score_batches} scoring examples exceed the "
      f"{len(train_split)} training examples; lower one of them."
    )
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, "config.json"), config.to_dict())
  print(f"Config:\n{config}", flush=True)

  model = models.get_model(config.model, num_classes=num_classes, init=config.init)
  # One example is enough to fix the shapes, and much faster to run than a batch.
  init = jax.jit(model.init)
  one_example = jnp.asarray(train_split.images[:1])
  variables = init(init_key, one_example)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})

  mask, task, prune_seconds = prune_at_init(
    config, model.apply, params, batch_stats, train_split, score_key
  )
  masks.save_mask(os.path.join(workdir, "mask.npz"), mask)
  filter_fn = filter_fn_for(config)
  per_layer = masks.layer_summary(mask, filter_fn)
  collapsed = masks.collapsed_layers(per_layer)
  connected = criteria.has_path(task, params, mask, filter_fn)
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
  if config.reinit_after_pruning:
    # Score one initialisation, train another (as the authors' code does): the mask is kept,
    # the weights are drawn afresh with an independent key.
    params = init(jax.random.fold_in(init_key, 1), one_example)["params"]

  state = create_train_state(
    model, params, mask, make_optimizer(config), step_key, batch_stats=batch_stats
  )
  jit_train_step = jax.jit(train_step, donate_argnums=0)
  jit_eval_step = jax.jit(eval_step)

  steps_per_epoch = len(train_split) // config.batch_size
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  open(metrics_path, "w").close()
  t_train = time.perf_counter()
  # The bar only on a terminal (disable=None): in a log file the per-epoch lines say it all.
  with tqdm(
    total=config.num_epochs * steps_per_epoch,
    unit="step",
    dynamic_ncols=True,
    desc="train",
    disable=None,
  ) as bar:
    for epoch in range(1, config.num_epochs + 1):
      t_epoch = time.perf_counter()
      epoch_seed = np.asarray(jax.random.key_data(jax.random.fold_in(data_key, epoch)))
      batches = data.train_batches(
        train_split, config.batch_size, epoch_seed, augment=config.augment
      )
      state, train_loss, train_accuracy = _train_epoch(
        jit_train_step, state, batches, bar, epoch, config.log_every_steps
      )
      _, val_accuracy = evaluate(jit_eval_step, state, splits["validation"], config.eval_batch_size)
      record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_accuracy": val_accuracy,
        "seconds": time.perf_counter() - t_epoch,
      }
      with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
      bar.write(
        f"epoch {epoch:3d}  train_loss {record['train_loss']:.4f}  "
        f"train_acc {record['train_accuracy']:.4f}  val_acc {val_accuracy:.4f}  "
        f"({record['seconds']:.1f} s)"
      )
  train_seconds = time.perf_counter() - t_train

  test_loss, test_accuracy = evaluate(jit_eval_step, state, splits["test"], config.eval_batch_size)
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
    "val_accuracy": record["val_accuracy"],
    "prune_seconds": prune_seconds,
    "train_seconds": train_seconds,
    "epochs": config.num_epochs,
    "steps": int(state.step),
    "per_layer": per_layer,
    "jax_version": jax.__version__,
    "backend": jax.default_backend(),
  }
  _write_json(os.path.join(workdir, "summary.json"), summary)
  print(
    f"test accuracy {test_accuracy:.4f}  test loss {test_loss:.4f}  "
    f"sparsity {summary['sparsity']:.4%} ({summary['num_kept']:,} of "
    f"{summary['num_prunable']:,} prunable weights kept)  train {train_seconds:.1f} s\n"
    f"results in {workdir}",
    flush=True,
  )
  return summary
