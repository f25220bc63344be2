"""Checkpoints of a run, for resuming it bit for bit: Orbax ``CheckpointManager`` wrappers.

A run's checkpoints live in ``<workdir>/checkpoints/<step>/``, each with two items:

* ``state`` (``StandardSave``): the train state's arrays. Any pytree with a ``step`` works,
  e.g. a Flax ``TrainState`` (its code fields, ``apply_fn`` and ``tx``, are not saved); for
  :class:`~snip_jax.train.TrainState` that is the params, the optimizer state (which carries the
  mask), the batch-norm statistics, the step and the run's RNG key;
* ``progress`` (``JsonSave``): anything else needed to resume, as JSON. ``train_and_evaluate``
  keeps where the run stands in its data and its metrics there: the epoch and the batch within
  it (the order of an epoch is a function of the seed and the epoch, so this is the whole
  data-order state), the step metrics of the unfinished epoch, the records of the finished ones
  and the timings so far.

Saves are asynchronous (:meth:`Checkpointer.save` returns once the arrays are copied) and
atomic: Orbax writes into ``<step>.orbax-checkpoint-tmp`` and renames it when every file is
complete, so a crash mid-save leaves the earlier checkpoints intact and the partial directory is
ignored (the next save of that step removes it). The manager keeps the last ``keep`` checkpoints,
and those of ``keep_steps`` for good (the step a later run rewinds to:
``config.keep_checkpoint_step``).

:meth:`Checkpointer.restore_latest` restores the newest checkpoint that can be read. One that
cannot (truncated, corrupt) is skipped, falling back to the one before, and then moved aside to
``<step>.unreadable`` with a warning that names it. If none can be read it raises
:class:`CheckpointError` and changes nothing, rather than start afresh.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

from snip_jax import parallel

PyTree = Any

#: The sub-directory of a workdir that holds the checkpoints.
CHECKPOINT_DIR = "checkpoints"
#: Appended to the directory of a checkpoint that cannot be read.
UNREADABLE_SUFFIX = ".unreadable"


def saved_steps(workdir: str | os.PathLike[str]) -> list[int]:
  """The steps of the complete checkpoints in ``workdir``, oldest first.

  Reads the directory only: it creates nothing, unlike :class:`Checkpointer`. A checkpoint being
  written (``<step>.orbax-checkpoint-tmp``) or set aside (``<step>.unreadable``) is not one.
  """
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def has_checkpoints(workdir: str | os.PathLike[str]) -> bool:
  """Whether ``workdir`` holds a complete checkpoint (see :func:`saved_steps`)."""
  return bool(saved_steps(workdir))


def _first_line(e: BaseException) -> str:
  """What an error says, for a one-line message: its first line (at most 300 characters), or
  its type's name when it says nothing."""
  return str(e).splitlines()[0][:300] if str(e) else type(e).__name__


def _unused_name(path: str) -> str:
  """``path``, or ``path-1``, ``path-2``, ... if taken: the same step can be set aside twice
  (saved again after the first, and unreadable again)."""
  candidate, n = path, 0
  while os.path.lexists(candidate):
    n += 1
    candidate = f"{path}-{n}"
  return candidate


class CheckpointError(ValueError):
  """The checkpoints of a workdir exist but none of them can be restored."""


def read_state(workdir: str | os.PathLike[str], step: int) -> dict[str, Any]:
  """The train state of a checkpoint as Orbax stored it: nested dicts of arrays, no template.

  For reading a run's results (``snip_jax.export``, tests) rather than resuming it: a
  :class:`~snip_jax.train.TrainState` comes back as ``{'params', 'opt_state', 'batch_stats',
  'step', 'rng'}``. The arrays are read onto this process's first device, whichever devices and
  processes saved them.

  Raises:
    CheckpointError: the checkpoint cannot be read.
  """
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with _reading(workdir, step) as manager:
    stored = manager.item_metadata(step)["state"]
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here), stored)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
    return manager.restore(step, args=args).state


def read_progress(workdir: str | os.PathLike[str], step: int) -> dict[str, Any]:
  """The ``progress`` item of a checkpoint (JSON), ``{}`` when it has none.

  Raises:
    CheckpointError: the checkpoint cannot be read.
  """
  with _reading(workdir, step) as manager:
    if "progress" not in (manager.item_metadata(step) or {}):
      return {}
    progress = manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))
    return dict(progress.progress or {})


@contextlib.contextmanager
def _reading(workdir: str | os.PathLike[str], step: int) -> Iterator[ocp.CheckpointManager]:
  """A manager of ``workdir``'s checkpoints to read ``step`` with; whatever fails inside
  (Orbax and TensorStore raise many kinds of error) is one :class:`CheckpointError` line."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  handlers = {"state": ocp.StandardCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()}
  options = ocp.CheckpointManagerOptions(create=False)
  try:
    with ocp.CheckpointManager(directory, options=options, item_handlers=handlers) as manager:
      yield manager
  except Exception as e:
    raise CheckpointError(
      f"Checkpoint {os.path.join(directory, str(step))} cannot be read "
      f"({_first_line(e)}). Re-run the training "
      "command to finish or redo the run."
    ) from None


class Checkpointer:
  """Saves and restores ``(train state, progress)`` pairs under ``<workdir>/checkpoints``.

  ::

    with Checkpointer(workdir) as checkpoints:
      restored = checkpoints.restore_latest(state)  # ``state`` gives the structure.
      state, progress = restored or (state, {})
      ...
      checkpoints.save(state, {"epoch": epoch})

  Args:
    workdir: the run's directory.
    keep: how many of the newest checkpoints to keep (older ones are deleted).
    keep_steps: steps whose checkpoints are never deleted.
  """

  def __init__(
    self, workdir: str | os.PathLike[str], keep: int = 3, keep_steps: tuple[int, ...] = ()
  ):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    policies = [preservation_policy.LatestN(keep)]
    if keep_steps:
      policies.append(preservation_policy.CustomSteps(list(keep_steps)))
    options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
      create=True,
      # A step's directory is made before save returns, so a directory that cannot be made
      # fails at once, rather than after Orbax's background threads wait 300 s for it.
      async_options=ocp.options.AsyncOptions(create_directories_asynchronously=False),
    )
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    except Exception as e:  # Orbax and TensorStore raise many kinds.
      raise self._error("open the checkpoints", e) from None

  def _error(self, what: str, e: BaseException) -> CheckpointError:
    """One line: what could not be done, where, why, and what to do."""
    return CheckpointError(
      f"Cannot {what} in {self.directory} ({_first_line(e)}). Free disk space or fix the directory "
      "there, then run the same command again: it resumes from the last complete checkpoint."
    )

  def steps(self) -> list[int]:
    """The steps of the complete checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, state, progress: dict[str, Any] | None = None) -> None:
    """Starts saving ``state`` and ``progress`` as the checkpoint of step ``state.step``.

    A checkpoint already saved for that step is kept as it is (the run is deterministic, so it
    holds the same values).
    """
    step = int(state.step)
    if step in self._manager.all_steps():
      return
    try:  # Also raises the error of a save still running in the background, if it failed.
      self._manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress or {})
        ),
      )
    except Exception as e:  # Orbax and TensorStore raise many kinds.
      raise self._error(f"save the checkpoint of step {step}", e) from None

  def wait(self) -> None:
    """Blocks until every save started so far is complete on disk.

    Raises:
      CheckpointError: a save failed (a full disk, a directory gone), in one line.
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # Orbax and TensorStore raise many kinds.
      raise self._error("finish saving a checkpoint", e) from None

  def restore(self, step: int, template):
    """``(state, progress)`` of the checkpoint of ``step``.

    The state has the type, structure, shapes and dtypes of ``template`` (and its code fields,
    such as a ``TrainState``'s ``apply_fn`` and ``tx``); only its arrays come from the disk.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()
      ),
    )
    return restored.state, restored.progress

  def restore_latest(self, template):
    """``(state, progress)`` of the newest readable checkpoint, or ``None`` if there is none.

    Raises:
      CheckpointError: checkpoints exist but none can be read (they are left as they are).
    """
    steps, unreadable = self.steps(), []
    for step in reversed(steps):
      try:
        restored = self.restore(step, template)
      except Exception as e:  # Orbax and TensorStore raise many kinds.
        unreadable.append((os.path.join(self.directory, str(step)), _first_line(e)))
        continue
      # Set aside, not deleted, and only now that an older one restored: the run can save
      # those steps again, and a workdir with no readable checkpoint stays as it is.
      for path, error in unreadable:
        aside = _unused_name(path + UNREADABLE_SUFFIX)
        if jax.process_index() == 0:
          os.replace(path, aside)
        warnings.warn(
          f"Checkpoint {path} cannot be read ({error[:300]}); moved it to {aside} and resumed "
          f"from step {step}.",
          stacklevel=2,
        )
      if unreadable:
        parallel.sync("snip_jax:unreadable_checkpoints")
        self._manager.reload()
      return restored
    if steps:
      raise CheckpointError(
        f"None of the checkpoints in {self.directory} (steps {steps}) can be read into this "
        f"run's state ({unreadable[0][1][:300]}). If the code changed since they were written "
        "(a model's params or the optimizer's state), resume with the version that wrote them; "
        "if they are damaged, delete them (or re-run with --overwrite) to start the run "
        "afresh, or use another --workdir."
      )
    return None

  def close(self) -> None:
    """Waits for pending saves, then releases the manager (see :meth:`wait`)."""
    try:
      self.wait()
    finally:
      with contextlib.suppress(Exception):  # Its error, if any, is the one wait raised.
        self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, exc_type, *exc_info) -> None:
    if exc_type is None:
      self.close()
      return
    # Leaving on an error: that error is the one to report, not a save's that it caused.
    with contextlib.suppress(Exception):
      self.close()
