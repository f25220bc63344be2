"""SNIP end to end: :func:`train_and_evaluate`, as four named phases.

1. **set up** (:func:`_set_up`): check the config, build the mesh and the model, claim the
   workdir, read the data, initialise the params;
2. **restore or prune** (:func:`_restore_or_prune`): resume from the newest checkpoint, or
   (:func:`_prune`) score and select the mask and build the masked train state;
3. **train** (:func:`_train`): the epochs, checkpointing, stopping on SIGTERM or a NaN;
4. **summarise** (:func:`_summarise`): the test set, ``summary.json``.

The files a run writes are described in :mod:`snip_jax.train.workdir`; its metrics (step and
epoch records, TensorBoard, the console) go through :mod:`snip_jax.train.metrics`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from snip_jax import (
  checkpoint,
  criteria,
  data,
  dynamic,
  masks,
  optim,
  parallel,
  provenance,
  selection,
  xla,
)
from snip_jax.train import build, pruning, steps
from snip_jax.train import config as config_lib
from snip_jax.train import workdir as workdir_lib
from snip_jax.train.metrics import RunMetrics
from snip_jax.train.progress import Progress, save


class PreemptedError(Exception):
  """The run got SIGTERM: it saved a checkpoint and stopped; running it again resumes it."""


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the phases share: fixed once set up."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: Mesh
  model: nn.Module
  splits: dict[str, data.Split]
  train_split: data.Split  # What it scores and trains on (pruning.training_split).
  keys: dict[str, jax.Array]  # init, score, data, step.
  init: Callable[..., Any]  # The jitted model.init, its output replicated.
  variables: dict[str, Any]  # The initial variables.
  task: criteria.Task
  tx: optax.GradientTransformation  # The unmasked optimizer.

  @property
  def main_process(self) -> bool:
    return jax.process_index() == 0


def _check_sizes(config: ml_collections.ConfigDict, mesh: Mesh, model: nn.Module) -> None:
  """Batch sizes the devices cannot split, a sparsity that keeps nothing and a
  ``min_kept_per_layer`` that asks for more than it keeps fail here, before the workdir."""
  for field in ("batch_size", "eval_batch_size", "score_batch_size"):
    if field != "score_batch_size" or not pruning.spreads_scoring(config, mesh):
      parallel.check_divisible(config[field], mesh, field)
  shapes = build.abstract_variables(config, model)["params"]
  filter_fn = build.filter_fn_for(config)
  sizes = [
    int(np.prod(leaf.shape))
    for path, leaf in jax.tree.leaves_with_path(shapes)
    if masks.is_prunable(path, leaf, filter_fn)
  ]
  selection.num_kept(sum(sizes), config.sparsity)  # κ >= 1.
  selection.check_min_kept(sizes, config.sparsity, config.min_kept_per_layer)


def _check_examples(config: ml_collections.ConfigDict, train_split: data.Split) -> None:
  """A batch, or scoring batches, larger than the training examples fail here."""
  available = len(train_split) * jax.process_count()
  if parallel.local_share(config.batch_size) > len(train_split):
    raise ValueError(
      f"config.batch_size={config.batch_size} exceeds the {available} training examples; lower it."
    )
  scoring = config.score_batch_size * config.score_batches
  if parallel.local_share(scoring) > len(train_split):
    raise ValueError(
      f"config.score_batch_size * config.score_batches = {scoring} scoring examples exceed the "
      f"{available} training examples; lower one of them."
    )


def _set_up(
  config: ml_collections.ConfigDict, workdir: str, overwrite: bool, owner: contextlib.ExitStack
) -> _Run:
  """Checks everything that can be checked (the data included) before touching the workdir,
  then takes the workdir (its lock joins ``owner``) and inits."""
  config_lib.validate_config(config)
  if config.distributed:
    parallel.initialize_distributed()
  mesh = parallel.make_mesh(config.num_devices)
  model = build.make_model(config)
  _check_sizes(config, mesh, model)
  splits, _ = data.load_dataset(
    config.dataset,
    config.data_dir,
    config.source_dir,
    (jax.process_index(), jax.process_count()),
  )
  init_key, score_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 4)
  # The epochs fold 1, 2, ... into data_key; 0 is the labels' stream.
  train_split = pruning.training_split(config, splits["train"], jax.random.fold_in(data_key, 0))
  _check_examples(config, train_split)
  owner.enter_context(workdir_lib.prepare(workdir, config, overwrite))
  if jax.process_index() == 0:
    print(f"Config:\n{config}\nData-parallel over {mesh.devices.size} device(s).", flush=True)
  # One example is enough to fix the shapes, and much faster to run than a batch.
  init = jax.jit(model.init, out_shardings=parallel.replicated(mesh))
  variables = init(init_key, train_split.images[:1])
  task = pruning.make_task(
    config, model.apply, variables.get("batch_stats", {}), train_split.images.shape[1:]
  )
  keys = {"init": init_key, "score": score_key, "data": data_key, "step": step_key}
  # The mask updates of a dynamic method (SET's random growth) have a stream of their own,
  # folded from the root so that the four keys above stay those of every earlier run.
  keys["mask"] = jax.random.fold_in(jax.random.key(config.seed), 1)
  tx = build.make_optimizer(config)
  return _Run(config, workdir, mesh, model, splits, train_split, keys, init, variables, task, tx)


def _new_state(run: _Run, params, mask, batch_stats=None) -> steps.TrainState:
  """The train state of ``params`` under ``mask``, replicated over the mesh (the batch-norm
  statistics of the initialisation unless ``batch_stats`` is given)."""
  state = steps.create_train_state(
    run.model,
    params,
    mask,
    run.tx,
    run.keys["step"],
    batch_stats=run.variables.get("batch_stats", {}) if batch_stats is None else batch_stats,
  )
  return parallel.replicate(state, run.mesh)


@dataclasses.dataclass(frozen=True)
class _Trained:
  """What a run pruned from a trained one (``config.prune_trained``) takes from it."""

  params: Any  # Its final params (masked), which the criterion scores.
  mask: Any  # Its mask: the new one keeps only what it keeps.
  start: tuple[Any, Any]  # (params, batch_stats) the new run trains from.
  steps: int  # The training behind the start, its own and that of the runs before it.
  seconds: float


def _trained_source(run: _Run) -> _Trained:
  """Reads ``config.prune_trained``'s run, checked to be finished and of the same network."""
  config = run.config
  where = f"config.prune_trained={config.prune_trained!r}"
  trained = workdir_lib.read_run(config.prune_trained)
  if not trained.finished:
    raise ValueError(
      f"{where} holds a run that has not finished (its newest checkpoint is of step "
      f"{trained.step}); run its command again to finish it first."
    )
  for field in ("model", "dataset", "train_examples", "prune_biases"):
    if trained.config[field] != config[field]:
      raise ValueError(
        f"{where} is a run with {field}={trained.config[field]!r}, this config has "
        f"{config[field]!r}; prune a run of the same network and data."
      )
  with open(os.path.join(config.prune_trained, workdir_lib.SUMMARY_FILE)) as f:
    summary = json.load(f)
  if config.rewind_to_step is None:
    start = (trained.params, trained.batch_stats)
  else:
    start = workdir_lib.read_weights_at(trained, config.prune_trained, config.rewind_to_step)
  return _Trained(
    params=trained.params,
    mask=trained.mask,
    start=start,
    steps=int(summary["steps"]) + int(summary.get("pretrain_steps", 0)),
    seconds=float(summary["train_seconds"]) + float(summary.get("pretrain_seconds", 0.0)),
  )


def _prune(run: _Run, checkpoints: checkpoint.Checkpointer):
  """Scores and selects the mask, builds the masked train state at step 0 and saves it.

  Returns:
    ``(state, progress)``.
  """
  config, params = run.config, run.variables["params"]
  trained = _trained_source(run) if config.prune_trained else None
  mask, prune_seconds = pruning.prune_at_init(
    config,
    run.task,
    params if trained is None else trained.params,
    run.train_split,
    run.keys["score"],
    run.mesh,
    within=None if trained is None else trained.mask,
  )
  progress = Progress(prune_seconds=prune_seconds, config_id=workdir_lib.config_id(config))
  batch_stats = None
  if trained is not None:
    (params, batch_stats), progress.pretrain_steps = trained.start, trained.steps
    progress.pretrain_seconds = trained.seconds
  if config.reinit_after_pruning or config.sanity_check == "reinit":
    # Score one initialisation, train another (as the authors' code does, and as the 'reinit'
    # sanity check asks): the mask is kept, the weights are drawn afresh with an independent key.
    one_example = run.train_split.images[:1]
    params = run.init(jax.random.fold_in(run.keys["init"], 1), one_example)["params"]
    batch_stats = None
  state = _new_state(run, params, mask, batch_stats)
  save(checkpoints, state, progress)
  return state, progress


def _write_config(run: _Run) -> None:
  if run.main_process:
    workdir_lib.write_json(os.path.join(run.workdir, workdir_lib.CONFIG_FILE), run.config.to_dict())


def _check_config_id(run: _Run, progress: Progress, step: int) -> None:
  """Refuses a checkpoint that another config wrote (whatever the workdir's config.json says)."""
  this = workdir_lib.config_id(run.config)
  if progress.config_id and progress.config_id != this:
    raise ValueError(
      f"The checkpoint of step {step} in {run.workdir!r} was written by another config (id "
      f"{progress.config_id}; this config's is {this}). Run the config that made it to resume, "
      "use another --workdir, or pass --overwrite to delete it and start this one."
    )


def _check_num_epochs(run: _Run, progress: Progress, step: int) -> None:
  """A resumed run may change ``num_epochs`` (an extendable field), but not below the epochs
  its checkpoint has begun."""
  if run.config.num_epochs < progress.epochs_begun:
    raise ValueError(
      f"Workdir {run.workdir!r} holds a run that has trained {step} steps, into epoch "
      f"{progress.epochs_begun}; config.num_epochs={run.config.num_epochs} cannot undo that. "
      f"Resume (or extend) it with a num_epochs >= {progress.epochs_begun}, or pass "
      "--overwrite (or use another --workdir) to start this run afresh."
    )


def _restore_or_prune(run: _Run, checkpoints: checkpoint.Checkpointer):
  """The newest checkpoint's ``(state, progress)``, or a freshly pruned state at step 0 (saved).

  Either way the mask is written to ``mask.npz`` and its per-layer report printed, and the
  config to ``config.json``: for a fresh run before pruning (a checkpoint never lacks its
  config), for a resumed one once its ``num_epochs`` is found to fit the checkpoint (a refused
  run changes nothing).

  Returns:
    ``(state, progress, report)``.
  """
  params = run.variables["params"]
  # The template gives the restored arrays their structure and sharding; the optimizer reads
  # the mask from its state, so the template's all-ones mask is never used.
  restored = checkpoints.restore_latest(_new_state(run, params, masks.ones_like(params)))
  if restored is None:
    _write_config(run)
    state, progress = _prune(run, checkpoints)
  else:
    state, progress = restored[0], Progress(**restored[1])
    _check_config_id(run, progress, int(state.step))
    _check_num_epochs(run, progress, int(state.step))
    _write_config(run)
    if run.main_process:
      print(f"Resuming from {checkpoints.directory}/{int(state.step)}.", flush=True)
  # The report describes the mask on the scored initialisation, whether or not it was resumed
  # or re-initialised since.
  report = pruning.mask_report(run.config, state.mask, run.task, params)
  if run.main_process:
    masks.save_mask(os.path.join(run.workdir, workdir_lib.MASK_FILE), state.mask)
    print(pruning.format_report(run.config, report, progress.prune_seconds), flush=True)
  return state, progress, report


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


@dataclasses.dataclass
class _Epochs:
  """The training phase's moving parts: the compiled steps, the clock, the metrics, the signal."""

  run: _Run
  checkpoints: checkpoint.Checkpointer
  progress: Progress
  metrics: RunMetrics
  sigterm: threading.Event
  train_step: Callable[..., Any]
  eval_step: Callable[..., Any]
  steps_per_epoch: int
  t_start: float
  seconds_before: float
  update_mask: Callable[..., Any] | None = None

  def seconds(self) -> float:
    """The training time so far, this process's and that of the runs it resumed."""
    return self.seconds_before + time.perf_counter() - self.t_start

  def save(self, state: steps.TrainState) -> None:
    self.progress.train_seconds = self.seconds()
    self.metrics.flush()  # A run resumed from this checkpoint finds every record before it.
    save(self.checkpoints, state, self.progress)
    if self.update_mask is not None and self.run.main_process:
      # mask.npz follows the checkpoint's mask (read_run checks one against the other).
      masks.save_mask(os.path.join(self.run.workdir, workdir_lib.MASK_FILE), state.mask)

  def epoch(self, state: steps.TrainState, step: int) -> tuple[steps.TrainState, int]:
    """The rest of the epoch under way; checkpoints when due, stops on SIGTERM."""
    config, progress = self.run.config, self.progress
    every, local_batch_size = config.checkpoint_every_steps, parallel.local_share(config.batch_size)
    key = jax.random.fold_in(self.run.keys["data"], progress.epoch)
    batches = data.train_batches(
      self.run.train_split,
      local_batch_size,
      np.asarray(jax.random.key_data(key)),
      augment=config.augment,
      start=progress.batch,
    )
    pending, ahead = [], xla.RunAhead()
    for batch in batches:
      batch = parallel.shard_batch(batch, self.run.mesh)
      state, metrics = self.train_step(state, batch)
      pending.append(ahead(metrics))
      step += 1
      if self.update_mask is not None:
        state = self.update_mask(state, batch, step)
      progress.batch += 1
      due = (bool(every) and step % every == 0) or step == config.keep_checkpoint_step
      if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(step):
        self.sigterm.set()  # Every process stops at this step.
      if step % config.log_every_steps == 0 or due or self.sigterm.is_set():
        progress.add(pending, step)
        pending = []
        self.metrics.synced(step, progress, self.seconds())
      # A checkpoint due at the epoch's last step waits for the epoch's record.
      if self.sigterm.is_set() or (due and progress.batch < self.steps_per_epoch):
        self.save(state)
      if self.sigterm.is_set():
        self.checkpoints.wait()
        raise PreemptedError(
          f"SIGTERM at step {step}: saved a checkpoint in {self.checkpoints.directory}; run the "
          "same command again to resume."
        )
    if pending:  # Otherwise the last step was synced (and recorded, if due) above.
      progress.add(pending, step)
      self.metrics.synced(step, progress, self.seconds())
    return state, step

  def end_epoch(self, state: steps.TrainState, step: int, t_epoch: float) -> None:
    """Validates, records the epoch in ``metrics.jsonl`` and checkpoints when due."""
    config = self.run.config
    _, val_accuracy = steps.evaluate(
      self.eval_step, state, self.run.splits["validation"], config.eval_batch_size, self.run.mesh
    )
    record = self.progress.end_epoch(val_accuracy, time.perf_counter() - t_epoch)
    self.metrics.epoch(record, step)
    every = config.checkpoint_every_steps
    kept = step == config.keep_checkpoint_step
    if (every and step % every == 0) or kept or self.progress.epoch > config.num_epochs:
      self.save(state)


def _mask_updater(run: _Run, steps_per_epoch: int) -> Callable[..., Any] | None:
  """``update(state, batch, step) -> state`` for ``config.dynamic``'s method, which changes the
  mask after the scheduled steps only (:func:`snip_jax.dynamic.is_update_step`), or ``None``.

  Every update is a function of the state, the step and the batch just trained on, so a resumed
  run makes the same updates as an uninterrupted one. RigL's gradient is the dense one at the
  params after the step, on that batch (one more forward and backward pass per update; RigL's
  authors take the step's own, at the params before it).
  """
  config = run.config
  if config.dynamic is None:
    return None
  begin = config.mask_update_begin_epoch * steps_per_epoch
  end = config.mask_update_end_epoch * steps_per_epoch
  filter_fn = build.filter_fn_for(config)
  grads_fn = jax.jit(steps.dense_grads)

  def update(state: steps.TrainState, batch, step: int) -> steps.TrainState:
    every = config.mask_update_every
    if not dynamic.is_update_step(step, every=every, begin_step=begin, end_step=end):
      return state
    mask, params = jax.device_get((state.mask, state.params))
    if config.dynamic == "gmp":
      target = dynamic.gmp_sparsity(
        step,
        final=config.sparsity,
        initial=config.gmp_initial_sparsity,
        begin_step=begin,
        end_step=end,
      )
      new = dynamic.gmp_mask(
        mask,
        params,
        target,
        filter_fn=filter_fn,
        distribution=config.distribution,
        min_kept_per_layer=config.min_kept_per_layer,
      )
    else:
      fraction = dynamic.cosine_drop_fraction(
        step - begin, initial=config.drop_fraction, end_step=end - begin
      )
      if config.dynamic == "set":
        key = jax.random.fold_in(run.keys["mask"], step)
        new = dynamic.set_mask(mask, params, key, fraction, filter_fn=filter_fn)
      else:
        grads = jax.device_get(grads_fn(state, batch))
        new = dynamic.rigl_mask(mask, params, grads, fraction, filter_fn=filter_fn)
    new_params, opt_state = optim.replace_mask(
      state.params, state.opt_state, parallel.replicate(new, run.mesh)
    )
    return state.replace(params=new_params, opt_state=opt_state)

  return update


def _train(
  run: _Run,
  state,
  progress: Progress,
  checkpoints: checkpoint.Checkpointer,
  metrics: RunMetrics,
):
  """Trains from ``(state, progress)`` to the end, checkpointing; returns the final pair.

  The host syncs with the device every ``config.log_every_steps`` steps (not every step, so
  dispatch stays asynchronous) to record the step metrics, advance the progress bar and stop on
  a non-finite loss, and at every checkpoint, which is saved only after every loss before it
  was checked.

  A finished run resumed with a larger ``config.num_epochs`` trains on from its last epoch: the
  learning rate is a function of the step alone (:func:`snip_jax.train.build.make_schedule`) and
  each epoch's order of the epoch alone (``fold_in(data_key, epoch)``), so the extended run ends
  exactly as a run given the larger ``num_epochs`` from the start.
  """
  config, step = run.config, int(state.step)
  steps_per_epoch = len(run.train_split) // parallel.local_share(config.batch_size)
  metrics.start(step, progress, config.num_epochs * steps_per_epoch)
  with _sigterm_flag() as sigterm:
    epochs = _Epochs(
      run,
      checkpoints,
      progress,
      metrics,
      sigterm,
      steps.sharded_train_step(run.mesh),
      steps.sharded_eval_step(run.mesh),
      steps_per_epoch,
      time.perf_counter(),
      progress.train_seconds,
      _mask_updater(run, steps_per_epoch),
    )
    while progress.epoch <= config.num_epochs:
      t_epoch = time.perf_counter()
      state, step = epochs.epoch(state, step)
      epochs.end_epoch(state, step, t_epoch)
  metrics.end_training()
  return state, progress


def _summarise(
  run: _Run, state, progress: Progress, report: pruning.MaskReport, metrics: RunMetrics
):
  """Evaluates on the test set; the summary (written by process 0)."""
  config = run.config
  test_loss, test_accuracy = steps.evaluate(
    steps.sharded_eval_step(run.mesh), state, run.splits["test"], config.eval_batch_size, run.mesh
  )
  metrics.test(test_loss, test_accuracy, int(state.step))
  final_params = jax.device_get(state.params)
  filter_fn = build.filter_fn_for(config)
  summary = {
    **config_lib.summary_fields(config),
    "prune_rounds": config.prune_rounds or criteria.get_criterion(config.criterion).rounds,
    "score_examples": config.score_batch_size * config.score_batches,
    "train_examples": len(run.train_split),
    "sparsity": masks.sparsity(final_params, filter_fn),
    "num_params": sum(int(np.size(p)) for p in jax.tree.leaves(final_params)),
    "num_prunable": masks.count_prunable(final_params, filter_fn),
    "num_kept": report.num_kept,
    "collapsed_layers": report.collapsed,
    "input_output_path": report.connected,
    "num_cut_outputs": len(report.cut_outputs),
    "cut_outputs": report.cut_outputs[: pruning.MAX_CUT_STORED],
    "test_accuracy": test_accuracy,
    "test_loss": test_loss,
    "val_accuracy": progress.records[-1]["val_accuracy"],
    "prune_seconds": progress.prune_seconds,
    "train_seconds": progress.train_seconds,
    "steps": int(state.step),
    **(
      {"pretrain_steps": progress.pretrain_steps, "pretrain_seconds": progress.pretrain_seconds}
      if config.prune_trained
      else {}
    ),
    "per_layer": report.per_layer,
    "jax_version": jax.__version__,
    "code": provenance.code_version(),
    "backend": jax.default_backend(),
    "devices": int(run.mesh.devices.size),
    "processes": jax.process_count(),
  }
  if run.main_process:
    workdir_lib.write_json(os.path.join(run.workdir, workdir_lib.SUMMARY_FILE), summary)
    print(
      f"test accuracy {test_accuracy:.4f}  test loss {test_loss:.4f}  "
      f"sparsity {summary['sparsity']:.4%} ({summary['num_kept']:,} of "
      f"{summary['num_prunable']:,} prunable weights kept)  train "
      f"{progress.train_seconds:.1f} s\nresults in {run.workdir}",
      flush=True,
    )
  return summary


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False
) -> dict[str, Any]:
  """Runs SNIP on ``config`` and writes the results files into ``workdir``.

  Resumes from the newest checkpoint in ``workdir`` when there is one (bit-identical to an
  uninterrupted run). Checkpoints are saved after pruning, every
  ``config.checkpoint_every_steps`` steps, at the end, and on SIGTERM, which then raises
  :class:`PreemptedError`. A finished run given a larger ``config.num_epochs`` is extended: the
  learning-rate schedule is recomputed from the step and each epoch's shuffle from the epoch, so
  an extended run equals one given the larger ``num_epochs`` from the start.

  Besides the per-epoch records it records the step metrics every ``config.log_every_steps``
  steps, in JSON lines and for TensorBoard (see :mod:`snip_jax.train.metrics`).

  Args:
    config: the experiment (see ``snip_jax/configs/``); checked before anything is written.
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
      workdir that cannot be written or holds another run, or a run that has trained more
      epochs than ``config.num_epochs``.
    DataNotFoundError: the dataset is not available offline.
    FloatingPointError: the training loss or the params became NaN or infinite.
    PreemptedError: SIGTERM arrived; a checkpoint was saved.
  """
  with contextlib.ExitStack() as owner:  # The workdir's lock, held to the end.
    run = _set_up(config, workdir, overwrite, owner)
    with RunMetrics(config, workdir, main_process=run.main_process) as metrics:
      keep_steps = () if config.keep_checkpoint_step is None else (config.keep_checkpoint_step,)
      with checkpoint.Checkpointer(
        workdir, keep=config.checkpoint_keep, keep_steps=keep_steps
      ) as checkpoints:
        state, progress, report = _restore_or_prune(run, checkpoints)
        state, progress = _train(run, state, progress, checkpoints, metrics)
      if config.dynamic is not None:  # The summary describes the mask the run ended with.
        report = pruning.mask_report(config, state.mask, run.task, run.variables["params"])
      return _summarise(run, state, progress, report, metrics)
