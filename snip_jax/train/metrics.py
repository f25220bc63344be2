"""The run's metrics: per-step and per-epoch records to JSON lines, TensorBoard and the console.

:class:`RunMetrics` is what :func:`snip_jax.train.train_and_evaluate` reports through. Process 0
of a run writes, into its workdir (file names in :mod:`snip_jax.train.workdir`):

* ``step_metrics.jsonl``, a record every ``config.log_every_steps`` steps (at the multiples of
  it): ``step``, ``epoch`` (the one under way), the means over the steps since the record before
  of ``train_loss``, ``train_accuracy`` and ``grad_norm`` (the gradient's global L2 norm on the
  kept weights), the ``learning_rate`` of the step's update, ``examples_per_second`` since the
  record before (or since the process started training) and ``seconds``, the training time so
  far;
* ``metrics.jsonl``, a record every epoch (made by :class:`~snip_jax.train.progress.Progress`);
* ``tensorboard/``, event files of both, with the global step as x: ``train/loss``,
  ``train/accuracy``, ``train/grad_norm``, ``train/learning_rate``,
  ``train/examples_per_second``; ``epoch/train_loss``, ``epoch/train_accuracy``,
  ``epoch/val_accuracy``, ``epoch/seconds``; and at the end ``test/accuracy`` and ``test/loss``.

On a terminal a progress bar with an ETA shows how far the run is; where stdout is not one (a
log file, CI) a line such as ``step 1000/54000 (1.9%)  epoch 2  loss 0.3123  lr 0.1  12,345 ex/s
ETA 2m10s`` is printed at the first step record on or after every
``config.progress_every_steps`` steps.

The records are made from the run's checkpointed :class:`~snip_jax.train.progress.Progress`, so
a resumed run writes the same ones as an uninterrupted run, wall-clock fields aside. On resuming
from step ``s`` the files are cut back to that checkpoint: ``metrics.jsonl`` holds the
progress's epochs, ``step_metrics.jsonl`` its records up to step ``s``, and TensorBoard hides the
events after ``s`` (a ``purge_step``, see :class:`EventFile`). Everything up to a checkpoint is
on disk before the checkpoint is saved (:meth:`RunMetrics.flush`), so nothing before ``s`` is
lost.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any, TextIO

import ml_collections
from tqdm import tqdm

from snip_jax import files
from snip_jax.train import build
from snip_jax.train import workdir as workdir_lib
from snip_jax.train.progress import Progress

#: The TensorBoard tag of each field of a step record (the others are not plotted).
STEP_TAGS = {
  "train_loss": "train/loss",
  "train_accuracy": "train/accuracy",
  "grad_norm": "train/grad_norm",
  "learning_rate": "train/learning_rate",
  "examples_per_second": "train/examples_per_second",
}


def is_terminal(stream: TextIO) -> bool:
  """Whether ``stream`` is a terminal (not a file, a pipe or a notebook's output)."""
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # No isatty, or closed.
    return False


def format_duration(seconds: float) -> str:
  """``seconds`` as ``45s``, ``2m10s`` or ``3h05m``."""
  seconds = max(0, round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class EventFile:
  """A TensorBoard event file of scalars, written with tensorboardX in the calling thread.

  tensorboardX's ``SummaryWriter`` hands events to a background thread, so its ``flush`` does not
  promise that the events added before it are on disk; a checkpoint needs that promise (a run
  killed after it must not lose them). This writes each event at once and :meth:`flush` puts
  them on disk. It starts the file as ``SummaryWriter(purge_step=...)`` does: TensorBoard then
  hides the events of the files before it at ``purge_step`` and after.

  Args:
    directory: the log directory (made if missing).
    purge_step: the first step of this file's events.
  """

  def __init__(self, directory: str, purge_step: int):
    # Imported here: tensorboardX imports PyTorch where it is installed (over a second),
    # which only a process that writes events needs to pay for.
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import scalar

    self._event, self._scalar = Event, scalar
    os.makedirs(directory, exist_ok=True)
    # tensorboardX names a file by the second it is opened in (and the host), and TensorBoard
    # reads the files in name order: a suffix of the time in nanoseconds keeps the files of two
    # runs opened in one second apart, and in order.
    self._writer = EventsWriter(os.path.join(directory, "events"), f".{time.time_ns()}")
    self._writer.write_event(
      Event(wall_time=time.time(), step=purge_step, file_version="brain.Event:2")
    )
    start = SessionLog(status=SessionLog.START)
    self._writer.write_event(Event(wall_time=time.time(), step=purge_step, session_log=start))

  def add_scalar(self, tag: str, value: float, step: int) -> None:
    summary = self._scalar(tag, value)
    self._writer.write_event(self._event(wall_time=time.time(), step=step, summary=summary))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _rewrite_lines(path: str, records: list[dict[str, Any]]) -> None:
  """Replaces ``path`` by ``records``, one JSON line each, atomically (a crash leaves the old or
  the new file, never half of one)."""
  with files.atomic_writer(path) as f:
    f.writelines(json.dumps(r) + "\n" for r in records)


def _append_line(path: str, record: dict[str, Any]) -> None:
  # Opened and closed for each record: once written, a record is the operating system's to keep,
  # whatever happens to the process, and so is on disk before any checkpoint after it.
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def read_step_records(path: str, last_step: int | None = None) -> list[dict[str, Any]]:
  """The records of a ``step_metrics.jsonl``, those up to ``last_step`` when it is given.

  A line a killed run left incomplete is skipped; a missing file has no records.
  """
  records = []
  try:
    with open(path) as f:
      lines = f.readlines()
  except FileNotFoundError:
    return records
  for line in lines:
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if last_step is None or record["step"] <= last_step:
      records.append(record)
  return records


class RunMetrics:
  """The metrics of a run, from the step it starts (or resumes) training at to its end.

  Every process calls the same methods with the same arguments (the records advance the
  checkpointed :class:`Progress` alike everywhere); only process 0 (``main_process``) writes
  files and prints. Use it as a context manager: leaving it closes the bar and the TensorBoard
  writer (flushed), also when the run fails.

  Args:
    config: the run's config.
    workdir: where the files go.
    main_process: whether this process writes the files and the console output.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, main_process: bool):
    self.config = config
    self.main_process = main_process
    self.schedule = build.make_schedule(config)
    self._step_metrics = os.path.join(workdir, workdir_lib.STEP_METRICS_FILE)
    self._epoch_metrics = os.path.join(workdir, workdir_lib.METRICS_FILE)
    self._tensorboard_dir = os.path.join(workdir, workdir_lib.TENSORBOARD_DIR)
    self._tensorboard: EventFile | None = None
    self._bar: tqdm | None = None
    self._lines = False
    self._total_steps = 0
    self._last_record = (0, 0.0)  # (step, time) of the record before, for the throughput.
    self._last_line = (0, 0.0)  # (step, time) of the progress line before, for the ETA.

  def __enter__(self) -> RunMetrics:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
      return
    # The run is failing already, and its error is the one to report: a full disk, say, fails
    # the checkpoint and then this file's last flush too.
    try:
      self.close()
    except OSError as e:
      warnings.warn(f"The TensorBoard file could not be closed: {e}", stacklevel=2)

  def start(self, step: int, progress: Progress, total_steps: int) -> None:
    """Cuts the files back to ``(step, progress)``, where training starts or resumes, and
    starts the bar and the clocks.

    Args:
      step: the train state's step.
      progress: the run's progress at ``step``.
      total_steps: the run's steps, ``config.num_epochs`` epochs' worth.
    """
    self._total_steps = total_steps
    if self.main_process:
      # The epochs and steps this run has done, and no others.
      _rewrite_lines(self._epoch_metrics, progress.records)
      _rewrite_lines(self._step_metrics, read_step_records(self._step_metrics, step))
      # Hides the events a killed run wrote after its last checkpoint.
      self._tensorboard = EventFile(self._tensorboard_dir, purge_step=step + 1)
    # The bar only on a terminal (disable=None); elsewhere the progress lines stand in for it.
    self._bar = tqdm(
      total=total_steps,
      initial=step,
      unit="step",
      dynamic_ncols=True,
      desc="train",
      disable=None if self.main_process else True,
    )
    self._lines = (
      self.main_process and self.config.progress_every_steps > 0 and not is_terminal(sys.stdout)
    )
    now = time.perf_counter()
    self._last_record = self._last_line = (step, now)

  def synced(self, step: int, progress: Progress, seconds: float) -> dict[str, Any] | None:
    """After the host fetched the step metrics up to ``step`` (into ``progress``): advances
    the bar and, at a multiple of ``config.log_every_steps``, records the step metrics.

    Args:
      step: the train state's step.
      progress: the run's progress, its interval closed here when a record is due.
      seconds: the training time so far.

    Returns:
      The step record, or ``None`` when none was due.
    """
    self._bar.update(step - self._bar.n)
    if progress.losses:
      self._bar.set_postfix(epoch=progress.epoch, loss=f"{progress.losses[-1]:.4f}")
    if step % self.config.log_every_steps:
      return None
    now = time.perf_counter()
    done_steps, done_seconds = step - self._last_record[0], now - self._last_record[1]
    record = {
      "step": step,
      "epoch": progress.epoch,
      **progress.end_interval(),
      # Optax evaluates the schedule at the update count before the update.
      "learning_rate": float(self.schedule(step - 1)),
      "examples_per_second": done_steps * self.config.batch_size / max(done_seconds, 1e-9),
      "seconds": seconds,
    }
    self._last_record = (step, now)
    if self.main_process:
      _append_line(self._step_metrics, record)
      for field, tag in STEP_TAGS.items():
        self._tensorboard.add_scalar(tag, record[field], step)
    every = self.config.progress_every_steps
    if self._lines and step // every > self._last_line[0] // every:
      self._print_line(record, now)
    return record

  def _print_line(self, record: dict[str, Any], now: float) -> None:
    step, total = record["step"], self._total_steps
    steps_per_second = (step - self._last_line[0]) / max(now - self._last_line[1], 1e-9)
    eta = format_duration((total - step) / max(steps_per_second, 1e-9))
    print(
      f"step {step}/{total} ({step / total:.1%})  epoch {record['epoch']}  "
      f"loss {record['train_loss']:.4f}  lr {record['learning_rate']:.4g}  "
      f"{steps_per_second * self.config.batch_size:,.0f} ex/s  ETA {eta}",
      flush=True,
    )
    self._last_line = (step, now)

  def epoch(self, record: dict[str, Any], step: int) -> None:
    """Writes an epoch's record (:meth:`Progress.end_epoch`), which ended at ``step``."""
    if not self.main_process:
      return
    _append_line(self._epoch_metrics, record)
    for field, value in record.items():
      if field != "epoch":
        self._tensorboard.add_scalar(f"epoch/{field}", value, step)
    self._bar.write(
      f"epoch {record['epoch']:3d}  train_loss {record['train_loss']:.4f}  "
      f"train_acc {record['train_accuracy']:.4f}  val_acc {record['val_accuracy']:.4f}  "
      f"({record['seconds']:.1f} s)"
    )

  def flush(self) -> None:
    """Puts every record so far on disk: before a checkpoint, so that a run resumed from it
    finds every event up to its step."""
    if self._tensorboard is not None:
      self._tensorboard.flush()

  def end_training(self) -> None:
    """Closes the bar (before the summary is printed)."""
    if self._bar is not None:
      self._bar.close()

  def test(self, loss: float, accuracy: float, step: int) -> None:
    """Writes the final test metrics (to TensorBoard; ``summary.json`` has them too)."""
    if self.main_process:
      self._tensorboard.add_scalar("test/accuracy", accuracy, step)
      self._tensorboard.add_scalar("test/loss", loss, step)

  def close(self) -> None:
    """Closes the bar and the TensorBoard file (flushing it); safe to call twice."""
    self.end_training()
    tensorboard, self._tensorboard = self._tensorboard, None  # Closed once, even if it fails.
    if tensorboard is not None:
      tensorboard.close()
