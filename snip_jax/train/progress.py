"""Where a run stands besides its train state, and the checkpoint that saves both."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import checkpoint


@dataclasses.dataclass
class Progress:
  """Where a run stands, besides its train state: a checkpoint's ``progress`` item.

  The batches of an epoch are a function of the seed and the epoch, so ``(epoch, batch)`` is the
  whole data-order state. The step metrics of the epoch under way, and those of the steps since
  the last step record (``step_metrics.jsonl``, an interval that may span epochs), are kept (as
  the float32 values they are) so that a resumed run's means are bit-identical to an
  uninterrupted one's. Fields added later have defaults, so older checkpoints still load.
  """

  epoch: int = 1  # The epoch under way, from 1; num_epochs + 1 once training is done.
  batch: int = 0  # Batches of it done.
  losses: list[float] = dataclasses.field(default_factory=list)
  accuracies: list[float] = dataclasses.field(default_factory=list)
  records: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # metrics.jsonl
  prune_seconds: float = 0.0
  train_seconds: float = 0.0
  # The steps since the last step record.
  interval_losses: list[float] = dataclasses.field(default_factory=list)
  interval_accuracies: list[float] = dataclasses.field(default_factory=list)
  interval_grad_norms: list[float] = dataclasses.field(default_factory=list)
  # The run's config_id (snip_jax.train.workdir.config_id): the checkpoint, not config.json,
  # decides which config may resume it ("" in checkpoints from before it was kept).
  config_id: str = ""
  # The training of the runs this one was pruned from (config.prune_trained), all the way back:
  # what it cost before its own first step.
  pretrain_steps: int = 0
  pretrain_seconds: float = 0.0

  @property
  def epochs_begun(self) -> int:
    """The fewest ``num_epochs`` that cover the training done: the finished epochs, and the one
    under way if any of its batches is done."""
    return self.epoch - 1 + (self.batch > 0)

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
    # The same step values go to the epoch under way and to the step-record interval.
    losses, accuracies = losses.tolist(), [float(m["accuracy"]) for m in fetched]
    self.losses += losses
    self.accuracies += accuracies
    self.interval_losses += losses
    self.interval_accuracies += accuracies
    self.interval_grad_norms += [float(m["grad_norm"]) for m in fetched]

  def end_interval(self) -> dict[str, float]:
    """Closes the steps since the last step record; returns their mean ``train_loss``,
    ``train_accuracy`` and ``grad_norm``."""
    means = {
      name: float(np.mean(np.asarray(values, np.float32)))
      for name, values in (
        ("train_loss", self.interval_losses),
        ("train_accuracy", self.interval_accuracies),
        ("grad_norm", self.interval_grad_norms),
      )
    }
    self.interval_losses, self.interval_accuracies, self.interval_grad_norms = [], [], []
    return means

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


def save(checkpoints: checkpoint.Checkpointer, state, progress: Progress) -> None:
  """Saves ``(state, progress)``, unless the params are no longer finite (then nothing is
  saved and the run stops)."""
  if not bool(_all_finite(state.params)):
    raise FloatingPointError(
      f"The params are no longer finite at step {int(state.step)}; lower "
      "config.learning_rate or check the data and the initialisation. Nothing was saved after "
      "the last good checkpoint."
    )
  checkpoints.save(state, dataclasses.asdict(progress))
