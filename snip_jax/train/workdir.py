"""A run's workdir: the files in it, whether a run may use it, and reading a run back from it.

A run of :func:`snip_jax.train.train_and_evaluate` writes (process 0 of a multi-process run):

* ``config.json``: the config of the run;
* ``metrics.jsonl``: one line per epoch (epoch, train_loss, train_accuracy, val_accuracy, seconds);
* ``step_metrics.jsonl``: one line every ``config.log_every_steps`` steps (step, epoch, and since
  the line before: mean train_loss, train_accuracy and grad_norm; then the learning_rate of the
  last update, examples_per_second and the training seconds so far);
* ``tensorboard/``: TensorBoard event files of the same step and epoch metrics and the final test
  metrics (``tensorboard --logdir <workdir>/tensorboard``);
* ``mask.npz``: the mask, keyed by tree path;
* ``summary.json``: model, dataset, criterion and how it ran, target and measured sparsity,
  counts, layer collapse, test metrics, timings, per-layer table;
* ``checkpoints/<step>/``: the train state and the run's progress (:mod:`snip_jax.checkpoint`),
  from which running the same config again resumes;

and ``experiments/export.py`` adds :data:`EXPORT_FILES` (see :mod:`snip_jax.export`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from snip_jax import checkpoint, data, files, masks, parallel, trees
from snip_jax.train import build
from snip_jax.train import config as config_lib

PyTree = Any

CONFIG_FILE = "config.json"
MASK_FILE = "mask.npz"
METRICS_FILE = "metrics.jsonl"
STEP_METRICS_FILE = "step_metrics.jsonl"
SUMMARY_FILE = "summary.json"
#: The files a run writes into its workdir (besides ``checkpoints/`` and ``tensorboard/``).
RESULT_FILES = (CONFIG_FILE, MASK_FILE, METRICS_FILE, STEP_METRICS_FILE, SUMMARY_FILE)
#: The sub-directory of a workdir that holds the run's TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"
#: The compact model and the record of its checks that ``experiments/export.py`` writes into a
#: run's workdir. ``--overwrite`` deletes them with the run, so a workdir never holds the export
#: of another run.
EXPORT_FILES = ("sparse_model.npz", "sparse_model.json")


def config_id(config: ml_collections.ConfigDict) -> str:
  """8 hex digits that identify the run ``config`` makes: a hash of every field a resumed run
  cannot change (all but :data:`~snip_jax.train.config.RESUMABLE_FIELDS` and
  :data:`~snip_jax.train.config.EXTENDABLE_FIELDS`)."""
  fields = _fixed_fields(config_as_json(config))
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def _fixed_fields(fields: dict[str, Any]) -> dict[str, Any]:
  """The entries of a config's ``fields`` that a resumed run cannot change (all but
  :data:`~snip_jax.train.config.RESUMABLE_FIELDS` and
  :data:`~snip_jax.train.config.EXTENDABLE_FIELDS`)."""
  may_change = {*config_lib.RESUMABLE_FIELDS, *config_lib.EXTENDABLE_FIELDS}
  # A field added later is left out at its default, so runs made before it keep their ids.
  at_default = {k for k, v in config_lib.ADDED_LATER.items() if fields.get(k, v) == v}
  return {k: v for k, v in fields.items() if k not in may_change | at_default}


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """``runs/<model>_<dataset>[_<criterion>][_<distribution>][_<sanity check>]_sp<sparsity>_``
  ``seed<seed>_<id>``.

  The criterion, distribution (``2of4`` for ``"2:4"``) and sanity check appear when they are not
  the defaults (SNIP, global, none); the id
  (:func:`config_id`) tells apart configs that differ anywhere else (a learning rate, say), so
  two different runs never share a default workdir, and a run given more epochs resumes in its
  own.
  """
  parts = [config.model, config.dataset]
  parts += [config.criterion] if config.criterion != "snip" else []
  parts += [config.distribution.replace(":", "of")] if config.distribution != "global" else []
  parts += [config.sanity_check] if config.sanity_check else []
  name = [*parts, f"sp{config.sparsity:g}", f"seed{config.seed}", config_id(config)]
  return os.path.join("runs", "_".join(name))


def write_json(path: str, obj: Any) -> None:
  """Replaces ``path`` by ``obj`` as JSON atomically (:func:`snip_jax.files.write_json`)."""
  files.write_json(path, obj)


def config_as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as ``config.json`` holds it (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict()))


#: Every name a run (or its export) gives an entry of its workdir, besides the lock file; the
#: checkpoints first, so that an ``--overwrite`` that cannot delete them deletes nothing.
RUN_ENTRIES = (checkpoint.CHECKPOINT_DIR, TENSORBOARD_DIR, *RESULT_FILES, *EXPORT_FILES)
#: The end of the error a second process gets for a workdir in use.
LOCK_ADVICE = "Wait for it to finish, or use another --workdir."


def lock_workdir(workdir: str | os.PathLike[str]) -> files.DirectoryLock:
  """The lock of ``workdir`` (not yet acquired): a run holds it from start to end, an export
  while it reads and writes (see :class:`snip_jax.files.DirectoryLock`)."""
  return files.DirectoryLock(workdir, "Workdir", LOCK_ADVICE)


def run_entries(workdir: str) -> list[str]:
  """The entries of :data:`RUN_ENTRIES` present in ``workdir`` (links included)."""
  return [n for n in RUN_ENTRIES if os.path.lexists(os.path.join(workdir, n))]


def is_ours(workdir: str) -> bool:
  """Whether snip-jax wrote the run files in ``workdir``: it holds the lock file every run
  creates, or (a run from before the lock file) a ``config.json`` of a run."""
  if os.path.lexists(os.path.join(workdir, files.LOCK_FILE)):
    return True
  try:
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
      previous = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(previous, dict) and {"model", "dataset", "sparsity", "seed"} <= set(previous)


def _delete_run(workdir: str, entries: list[str]) -> None:
  """Deletes ``entries`` of ``workdir``; a link is removed, never followed. Raises ``ValueError``
  naming the entry that cannot be deleted."""
  for name in entries:
    path = os.path.join(workdir, name)
    try:
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # Links inside are removed, not followed.
      else:
        os.remove(path)
    except OSError as e:
      raise ValueError(
        f"--overwrite cannot delete {path} ({e.strerror or e}); nothing was started. Delete "
        "it by hand, or use another --workdir."
      ) from None


def _check_links(workdir: str, entries: list[str]) -> None:
  """Refuses a run entry that is a symbolic link: a run writes only inside its workdir."""
  for name in entries:
    path = os.path.join(workdir, name)
    if os.path.islink(path):
      raise ValueError(
        f"{path} is a symbolic link (to {os.readlink(path)!r}); a run writes only inside its "
        "workdir. Point --workdir where the files should go, or pass --overwrite to delete "
        "the link (not what it points to) and start afresh."
      )


def _read_config_json(path: str) -> dict[str, Any]:
  """The JSON object in ``path``.

  Raises:
    OSError: it cannot be read.
    ValueError: it is not JSON, or not an object.
  """
  with open(path) as f:
    value = json.load(f)
  if not isinstance(value, dict):
    raise ValueError(f"it holds a {type(value).__name__}, not a config")
  return value


def _config_changes(workdir: str, config: ml_collections.ConfigDict) -> list[str] | None:
  """The fields, other than resumable and extendable ones, in which ``config`` differs from the
  workdir's, or ``None`` (with a warning) when its ``config.json`` cannot be read."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    previous = _read_config_json(path)
  except (OSError, ValueError) as e:
    warnings.warn(
      f"{path} cannot be read ({e}); the checkpoint decides whether this config resumes the run "
      "(it records its config's id), and the file is written afresh if it does.",
      stacklevel=3,
    )
    return None
  previous, current = _fixed_fields(previous), _fixed_fields(config_as_json(config))
  return [
    f"{field}: {previous.get(field, '<unset>')!r} -> {current.get(field, '<unset>')!r}"
    for field in sorted(set(previous) | set(current))
    if previous.get(field) != current.get(field)
  ]


def prepare(
  workdir: str, config: ml_collections.ConfigDict, overwrite: bool
) -> contextlib.AbstractContextManager:
  """Makes ``workdir``, takes its lock and checks that this run may use it.

  Returns the lock, acquired (process 0; a no-op context on the others): the caller holds it
  for the whole run, e.g. ``with prepare(...):``. A second run in the same workdir is refused
  with one line naming the holder; a lock left by a killed run is free again.

  Refused, with nothing changed: a workdir whose run files (:data:`RUN_ENTRIES`) snip-jax did not
  write (:func:`is_ours`), whatever ``overwrite``; a run entry that is a symbolic link (unless
  ``overwrite``); a workdir that holds a run (checkpoints or a summary) with another config,
  unless ``overwrite``, which first deletes that run's entries (only those; links are removed,
  not followed) and fails loudly if it cannot. A config that differs only in
  :data:`snip_jax.train.config.RESUMABLE_FIELDS` and
  :data:`snip_jax.train.config.EXTENDABLE_FIELDS` resumes the run; whether the checkpoint allows
  the extendable ones (a ``num_epochs`` not below the epochs trained) is checked once it is
  restored. Every process checks; only process 0 locks and deletes, and the others wait for it.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ValueError(
      f"Cannot write to workdir {workdir!r} ({e.strerror or e}); choose another --workdir."
    ) from e
  entries = run_entries(workdir)
  if entries and not is_ours(workdir):
    raise ValueError(
      f"Workdir {workdir!r} holds {entries[0]!r}, which snip-jax did not write (no "
      f"{files.LOCK_FILE} and no config.json of a run); nothing was changed. Use another "
      "--workdir."
    )
  held = lock_workdir(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  if jax.process_index() == 0:
    held.acquire()
  try:
    _check_use(workdir, config, overwrite, run_entries(workdir))
  except BaseException:
    if jax.process_index() == 0:
      held.release()
    raise
  return held


def _check_use(workdir: str, config, overwrite: bool, entries: list[str]) -> None:
  """The checks of :func:`prepare` made under the lock (and ``overwrite``'s deletion)."""
  if overwrite:
    if jax.process_index() == 0:
      _delete_run(workdir, entries)
    parallel.sync("snip_jax:overwrite")
    return
  _check_links(workdir, entries)
  has_run = checkpoint.has_checkpoints(workdir) or os.path.exists(
    os.path.join(workdir, SUMMARY_FILE)
  )
  if not has_run:
    return  # Nothing to resume and no results to lose.
  changed = _config_changes(workdir, config)
  if changed:
    raise ValueError(
      f"Workdir {workdir!r} holds a run with another config ({'; '.join(changed)}). Use "
      "another --workdir, run the original config to resume that run, or pass --overwrite to "
      "delete it and start this one."
    )


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A run of :func:`snip_jax.train.train_and_evaluate`, read back from its workdir.

  Attributes:
    config: the run's config (its ``config.json``).
    model: the Flax module the config builds.
    params: the params of the newest checkpoint, masked (pruned entries exactly ``0.0``).
    batch_stats: the model's ``batch_stats`` collection (``{}`` without batch norm).
    mask: the run's mask: the checkpoint's (its optimizer state's), which ``mask.npz`` must
      equal.
    step: the training step of the checkpoint.
    finished: whether the checkpoint is the end of the run (its ``summary.json`` says so).
  """

  config: ml_collections.ConfigDict
  model: nn.Module
  params: PyTree
  batch_stats: PyTree
  mask: PyTree
  step: int
  finished: bool

  @property
  def variables(self) -> dict[str, PyTree]:
    """``{'params': ..., 'batch_stats': ...}`` (without an empty ``batch_stats``) for
    ``apply``."""
    return trees.variables(self.params, self.batch_stats)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one input example, ``(H, W, C)``."""
    return tuple(data.get_spec(self.config.dataset).image_shape)


def check_is_run(workdir: str | os.PathLike[str]) -> None:
  """Raises ``FileNotFoundError`` (naming the command that makes one) unless ``workdir`` holds
  a run: its ``config.json``, ``mask.npz`` and checkpoints."""
  workdir = os.fspath(workdir)
  names = (CONFIG_FILE, MASK_FILE)
  if not checkpoint.has_checkpoints(workdir) or not all(
    os.path.isfile(os.path.join(workdir, n)) for n in names
  ):
    raise FileNotFoundError(
      f"No trained run in {workdir!r}: it needs config.json, mask.npz and checkpoints/. Train "
      f"one with python experiments/train.py --workdir {workdir}."
    )


def _checkpoint_mask(workdir: str, step: int, state: dict[str, Any], params: PyTree) -> PyTree:
  """The mask of the checkpoint (the one its optimizer applied), checked against ``mask.npz``.

  The checkpoint is the source of truth: a ``mask.npz`` that cannot be read or differs from it
  (another run's, say) is refused, naming the file and the fix.
  """
  found = state.get("opt_state")
  found = found.get("mask") if isinstance(found, dict) else None
  try:
    if found is None:
      raise trees.MismatchError("its optimizer state holds no mask")
    like = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, bool), params)
    mask = jax.tree.map(np.asarray, trees.conform(found, like, "opt_state/mask"))
  except trees.MismatchError as e:
    raise checkpoint.CheckpointError(
      f"The checkpoint of step {step} in {workdir!r} holds no mask that fits the params ({e}); "
      "it was not written by a masked run of this config. Start afresh with --overwrite."
    ) from None
  path = os.path.join(workdir, MASK_FILE)
  rerun = (
    "The checkpoint holds the run's mask: run the run's training command again, which resumes "
    "it and writes mask.npz afresh."
  )
  try:
    saved = masks.load_mask(path, params)
  except (OSError, ValueError) as e:  # load_mask names a cut-off file in a ValueError.
    raise ValueError(f"{path} cannot be read as this run's mask ({e}). {rerun}") from None
  if not all(
    np.array_equal(a, np.asarray(b))
    for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(saved), strict=True)
  ):
    raise ValueError(f"{path} is not the mask of the checkpoint of step {step}. {rerun}")
  return mask


def read_run(workdir: str | os.PathLike[str]) -> TrainedRun:
  """The newest checkpoint of the run in ``workdir``, with its model, config and mask.

  Raises:
    FileNotFoundError: ``workdir`` holds no run (no ``config.json``, mask or checkpoint).
    CheckpointError: the newest checkpoint cannot be read, or does not fit the model of the
      workdir's config.
  """
  workdir = os.fspath(workdir)
  check_is_run(workdir)
  steps = checkpoint.saved_steps(workdir)
  rerun = "run the run's training command again, which writes it afresh"
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    config = ml_collections.ConfigDict(config_lib.complete(_read_config_json(path)))
    config_lib.validate_config(config)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} cannot be read as a run's config ({e}); {rerun}.") from None
  recorded = checkpoint.read_progress(workdir, steps[-1]).get("config_id")
  if recorded and recorded != config_id(config):
    raise ValueError(
      f"{path} is not the config of the checkpoint of step {steps[-1]} (id {config_id(config)}, "
      f"the checkpoint's {recorded}); {rerun} (with the config that made the run)."
    )
  model = build.make_model(config)
  shapes = build.abstract_variables(config, model)
  state = checkpoint.read_state(workdir, steps[-1])
  stored = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
  try:
    variables = {c: trees.conform(stored[c], shapes.get(c, {}), c) for c in stored}
  except trees.MismatchError as e:
    raise checkpoint.CheckpointError(
      f"The checkpoint of step {steps[-1]} in {workdir!r} does not fit the model of its "
      f"config.json: {e}. Run the config that made it, or start afresh with --overwrite."
    ) from None
  mask = _checkpoint_mask(workdir, steps[-1], state, variables["params"])
  finished = False
  path = os.path.join(workdir, SUMMARY_FILE)
  if os.path.exists(path):
    try:
      with open(path) as f:
        finished = json.load(f).get("steps") == steps[-1]
    except (OSError, ValueError, AttributeError) as e:
      warnings.warn(
        f"{path} cannot be read ({e}), so the run counts as unfinished; {rerun}.", stacklevel=2
      )
  return TrainedRun(
    config=config,
    model=model,
    # Already masked by training; applying the mask again changes no bit of a kept weight.
    params=masks.apply_mask(variables["params"], mask),
    batch_stats=variables["batch_stats"],
    mask=mask,
    step=steps[-1],
    finished=finished,
  )


def read_weights_at(run: TrainedRun, workdir: str | os.PathLike[str], step: int):
  """``(params, batch_stats)`` of ``run``'s checkpoint of ``step`` (as trained: not masked
  again), for a run that rewinds to it (``config.rewind_to_step``).

  Raises:
    ValueError: ``workdir`` keeps no checkpoint of ``step``, naming the fix.
    CheckpointError: it cannot be read, or does not fit the run's model.
  """
  workdir = os.fspath(workdir)
  steps = checkpoint.saved_steps(workdir)
  if step not in steps:
    raise ValueError(
      f"{workdir!r} keeps no checkpoint of step {step} (it keeps {steps}); train that run with "
      f"--config.keep_checkpoint_step={step} to rewind to it (a finished run resumed with it "
      "does not bring an older step back)."
    )
  shapes = build.abstract_variables(run.config, run.model)
  state = checkpoint.read_state(workdir, step)
  stored = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
  try:
    return tuple(trees.conform(stored[c], shapes.get(c, {}), c) for c in stored)
  except trees.MismatchError as e:
    raise checkpoint.CheckpointError(
      f"The checkpoint of step {step} in {workdir!r} does not fit the model of its config.json: "
      f"{e}."
    ) from None
