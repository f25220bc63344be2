"""A run's metrics (per step and per epoch, JSON lines and TensorBoard, the console) and extending
a finished run with more epochs.

The runs are the tiny MNIST of the ``tiny_mnist`` fixture, 9 steps an epoch. The step records
are checked against the per-step values of a run that records every step, the learning rate
against the schedule, TensorBoard's event files by reading them back (a TFRecord reader in
``helpers``, no TensorFlow), and an interrupted or extended run against the uninterrupted one.
"""

import contextlib
import io
import json
import os
import re
import shutil
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import (
  assert_same_outcome,
  checkpoint_steps,
  outcome,
  read_jsonl,
  tensorboard_scalars,
  tiny_config,
)

from snip_jax import data, train
from snip_jax.train.metrics import (
  STEP_TAGS,
  EventFile,
  RunMetrics,
  format_duration,
  read_step_records,
)

STEPS = 18  # 2 epochs of 9 steps.


def logged_config(data_dir, **overrides):
  """Step records every 3 steps, a learning rate decayed every 5, checkpoints every 4 steps (the
  intervals straddle checkpoints and epochs) and a progress line every 4 steps."""
  settings = dict(
    log_every_steps=3,
    lr_decay_every_steps=5,
    checkpoint_every_steps=4,
    progress_every_steps=4,
  )
  return tiny_config(data_dir, **{**settings, **overrides})


def run_capturing_stdout(cfg, workdir: Path) -> tuple[dict, str]:
  """``(summary, stdout)`` of a run; stdout is a ``StringIO``, not a terminal."""
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    summary = train.train_and_evaluate(cfg, str(workdir))
  return summary, stdout.getvalue()


def files_of(workdir: Path) -> dict[Path, bytes]:
  return {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()}


def f32(x: float) -> float:
  """``x`` as TensorBoard stores a scalar (float32)."""
  return float(np.float32(x))


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_mnist):
  """``(workdir, summary, stdout)`` of a run of :func:`logged_config`."""
  workdir = tmp_path_factory.mktemp("logged") / "run"
  summary, stdout = run_capturing_stdout(logged_config(tiny_mnist), workdir)
  return workdir, summary, stdout


@pytest.fixture(scope="module")
def every_step(tmp_path_factory, tiny_mnist):
  """``(workdir, stdout)`` of the same run recording every step, without progress lines."""
  workdir = tmp_path_factory.mktemp("every_step") / "run"
  cfg = logged_config(tiny_mnist, log_every_steps=1, progress_every_steps=0)
  _, stdout = run_capturing_stdout(cfg, workdir)
  return workdir, stdout


# --------------------------------------------------------------------------------------------
# The parts, without a run.


def test_format_duration():
  assert [format_duration(s) for s in (0, 44.6, 130, 3 * 3600 + 5 * 60 + 10)] == [
    "0s",
    "45s",
    "2m10s",
    "3h05m",
  ]


def test_progress_keeps_the_steps_since_the_last_record_across_epochs():
  progress = train.Progress()
  losses = np.asarray([0.5, 0.25, 1 / 3, 0.125], np.float32)
  step_metrics = [
    {"loss": jnp.float32(x), "accuracy": jnp.float32(x / 2), "grad_norm": jnp.float32(2 * x)}
    for x in losses
  ]
  progress.add(step_metrics[:3], 3)
  assert progress.epochs_begun == 0  # Nothing done yet as far as batches go.
  progress.batch = 3
  assert progress.epochs_begun == 1
  progress.end_epoch(0.5, 1.0)  # The interval goes on into the next epoch.
  assert (progress.epoch, progress.batch, progress.epochs_begun) == (2, 0, 1)
  progress.add(step_metrics[3:], 4)
  means = progress.end_interval()
  assert means == {
    "train_loss": float(np.mean(losses)),
    "train_accuracy": float(np.mean(losses / 2)),
    "grad_norm": float(np.mean(2 * losses)),
  }
  assert progress.interval_losses == progress.interval_grad_norms == []
  assert progress.losses == [float(losses[3])]  # The epoch's own values are kept apart.


class _TwoLayers(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Dense(8)(x.reshape(len(x), -1)))
    return nn.Dense(3)(x)


def test_train_step_reports_the_norm_of_the_gradient_the_optimizer_sees():
  model = _TwoLayers()
  images = jax.random.normal(jax.random.key(0), (6, 4))
  labels = jnp.asarray([0, 1, 2, 0, 1, 2])
  params = model.init(jax.random.key(1), images)["params"]
  # Keep every other kernel weight; biases all kept.
  mask = jax.tree.map(
    lambda p: (jnp.arange(p.size).reshape(p.shape) % 2 == 0) | (p.ndim < 2), params
  )
  state = train.create_train_state(model, params, mask, optax.sgd(0.1), jax.random.key(2))

  def loss(p):
    logits = model.apply({"params": p}, images)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  grads = jax.grad(loss)(state.params)
  kept = sum(
    float(jnp.sum(jnp.where(m, g, 0.0) ** 2))
    for g, m in zip(*map(jax.tree.leaves, (grads, mask)), strict=True)
  )
  everything = sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads))
  _, metrics = jax.jit(train.train_step)(state, (images, labels))
  np.testing.assert_allclose(float(metrics["grad_norm"]), np.sqrt(kept), rtol=1e-6)
  assert kept < everything  # The pruned coordinates' gradients are not zero; they are left out.
  np.testing.assert_allclose(float(metrics["loss"]), float(loss(state.params)), rtol=1e-6)


def test_step_records_are_read_back_up_to_a_step_skipping_a_torn_line(tmp_path):
  path = tmp_path / "step_metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (3, 6, 9)) + '{"step": 1')
  assert read_step_records(str(path)) == [{"step": 3}, {"step": 6}, {"step": 9}]
  assert read_step_records(str(path), 8) == [{"step": 3}, {"step": 6}]
  assert read_step_records(str(tmp_path / "missing.jsonl"), 8) == []


def test_a_later_event_file_purges_the_earlier_events_from_its_step_on(tmp_path):
  first = EventFile(str(tmp_path), purge_step=1)
  for step in range(1, 9):
    first.add_scalar("a", step, step)
  first.close()
  # A run resumed from step 4: its events replace those of steps 5 to 8.
  second = EventFile(str(tmp_path), purge_step=5)
  for step in (5, 6):
    second.add_scalar("a", 10 * step, step)
  second.close()
  assert len(list(tmp_path.iterdir())) == 2
  purged = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0)]
  assert tensorboard_scalars(tmp_path) == {"a": purged}
  assert len(tensorboard_scalars(tmp_path, purge=False)["a"]) == 8 + 2


def test_a_failing_run_keeps_its_error_when_its_tensorboard_file_cannot_be_closed(
  tmp_path, tiny_mnist
):
  class FullDisk:
    closed = 0

    def close(self):
      FullDisk.closed += 1
      raise OSError(28, "No space left on device")

  metrics = RunMetrics(tiny_config(tiny_mnist), str(tmp_path), main_process=True)
  metrics._tensorboard = FullDisk()
  with (
    pytest.warns(UserWarning, match="TensorBoard file could not be closed: .*No space"),
    pytest.raises(KeyError, match="the run's own error"),
    metrics,
  ):
    raise KeyError("the run's own error")
  metrics.close()  # Closed once: a second close does not try again.
  assert FullDisk.closed == 1
  # A run that did not fail has no error of its own: the file's is raised.
  metrics._tensorboard = FullDisk()
  with pytest.raises(OSError, match="No space"), metrics:
    pass


# --------------------------------------------------------------------------------------------
# The metrics of a run.


@pytest.mark.slow
def test_step_records_at_every_log_interval_with_the_scheduled_learning_rate(logged, tiny_mnist):
  workdir, summary, _ = logged
  records = read_jsonl(workdir / "step_metrics.jsonl")
  assert [r["step"] for r in records] == [3, 6, 9, 12, 15, 18]
  assert [r["epoch"] for r in records] == [1, 1, 1, 2, 2, 2]
  assert all(
    set(r)
    == {
      "step",
      "epoch",
      "train_loss",
      "train_accuracy",
      "grad_norm",
      "learning_rate",
      "examples_per_second",
      "seconds",
    }
    for r in records
  )
  # The update to step s used the schedule at s - 1: 0.1 for steps 1-5, 0.01 for 6-10, 0.001 for
  # 11-15 (step 15's is not the schedule at 15), 1e-4 for 16-20.
  schedule = train.make_schedule(logged_config(tiny_mnist))
  assert [r["learning_rate"] for r in records] == [float(schedule(r["step"] - 1)) for r in records]
  assert [r["learning_rate"] for r in records] == pytest.approx([0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4])
  for r in records:
    assert np.isfinite(r["grad_norm"]) and r["grad_norm"] > 0
    assert 0 <= r["train_accuracy"] <= 1 and r["examples_per_second"] > 0
  seconds = [r["seconds"] for r in records]
  assert seconds == sorted(seconds) and len(set(seconds)) == len(seconds)
  assert summary["steps"] == STEPS


@pytest.mark.slow
def test_step_records_are_the_float32_means_of_the_steps_and_change_no_result(logged, every_step):
  workdir, _, _ = logged
  steps = read_jsonl(every_step[0] / "step_metrics.jsonl")
  assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
  # Logging more often changes no result: the same per-epoch metrics, test metrics and state.
  a, b = outcome(workdir), outcome(every_step[0])
  for what in ("state", "mask.npz", "metrics", "summary"):
    assert_same_outcome({**b, what: a[what]}, b)
  per_step = {k: np.asarray([r[k] for r in steps], np.float32) for k in steps[0] if k != "step"}
  for r in read_jsonl(workdir / "step_metrics.jsonl"):
    window = slice(r["step"] - 3, r["step"])
    for field in ("train_loss", "train_accuracy", "grad_norm"):
      assert r[field] == float(np.mean(per_step[field][window])), (r["step"], field)
    assert r["learning_rate"] == steps[r["step"] - 1]["learning_rate"]
  # An epoch's train_loss is the float32 mean of its steps' losses, too.
  for epoch in read_jsonl(workdir / "metrics.jsonl"):
    window = slice(9 * (epoch["epoch"] - 1), 9 * epoch["epoch"])
    assert epoch["train_loss"] == float(np.mean(per_step["train_loss"][window]))
    assert epoch["train_accuracy"] == float(np.mean(per_step["train_accuracy"][window]))


@pytest.mark.slow
def test_tensorboard_holds_the_step_epoch_and_test_scalars(logged):
  workdir, summary, _ = logged
  assert len(list((workdir / "tensorboard").iterdir())) == 1
  scalars = tensorboard_scalars(workdir / "tensorboard")
  records = read_jsonl(workdir / "step_metrics.jsonl")
  epochs = read_jsonl(workdir / "metrics.jsonl")
  expected = {
    **{tag: [(r["step"], f32(r[field])) for r in records] for field, tag in STEP_TAGS.items()},
    **{
      f"epoch/{field}": [(9 * e["epoch"], f32(e[field])) for e in epochs]
      for field in ("train_loss", "train_accuracy", "val_accuracy", "seconds")
    },
    "test/accuracy": [(STEPS, f32(summary["test_accuracy"]))],
    "test/loss": [(STEPS, f32(summary["test_loss"]))],
  }
  assert scalars == expected


PROGRESS_LINE = re.compile(
  r"step (\d+)/18 \((\d+\.\d)%\)  epoch (\d)  loss (\d\.\d{4})  lr (\S+)  ([\d,]+) ex/s  "
  r"ETA (\d+s|\d+m\d\ds)"
)


@pytest.mark.slow
def test_progress_lines_when_stdout_is_not_a_terminal(logged, every_step):
  workdir, _, stdout = logged
  lines = [m for m in map(PROGRESS_LINE.fullmatch, stdout.splitlines()) if m]
  assert len(lines) == len([line for line in stdout.splitlines() if line.startswith("step ")])
  # At the first step record (every 3 steps) on or after each multiple of 4.
  assert [int(m[1]) for m in lines] == [6, 9, 12, 18]
  records = {r["step"]: r for r in read_jsonl(workdir / "step_metrics.jsonl")}
  for m in lines:
    record = records[int(m[1])]
    assert m[2] == f"{int(m[1]) / STEPS:.1%}"[:-1]
    assert (int(m[3]), m[4]) == (record["epoch"], f"{record['train_loss']:.4f}")
    assert float(m[5]) == pytest.approx(record["learning_rate"], rel=1e-3)
    assert int(m[6].replace(",", "")) > 0
  assert lines[-1][7] == "0s"  # Nothing left.
  assert "epoch   2  train_loss" in stdout  # The per-epoch lines as before.
  assert not any(line.startswith("step ") for line in every_step[1].splitlines())  # 0: none.


def interrupt_at(monkeypatch, batch: int, action):
  """Makes the run call ``action`` as it draws its ``batch``-th training batch; returns the
  real ``data.train_batches``."""
  batches, count = data.train_batches, [0]

  def interrupted(*args, **kwargs):
    for each in batches(*args, **kwargs):
      count[0] += 1
      if count[0] == batch:
        action()
      yield each

  monkeypatch.setattr(data, "train_batches", interrupted)
  return batches


@pytest.mark.slow
def test_an_interrupted_run_resumes_its_step_records_and_tensorboard(
  tmp_path, tiny_mnist, logged, monkeypatch
):
  workdir = tmp_path / "run"

  def crash():
    raise RuntimeError("crash")

  batches = interrupt_at(monkeypatch, 11, crash)  # Steps 1-10 done; the last checkpoint: 8.
  with pytest.raises(RuntimeError, match="crash"):
    run_capturing_stdout(logged_config(tiny_mnist), workdir)
  # It recorded step 9 (and epoch 1) after the checkpoint it resumes from.
  assert [r["step"] for r in read_jsonl(workdir / "step_metrics.jsonl")] == [3, 6, 9]
  assert max(checkpoint_steps(workdir)) == 8
  monkeypatch.setattr(data, "train_batches", batches)
  run_capturing_stdout(logged_config(tiny_mnist), workdir)
  # The step-9 record averages steps 7 and 8, from before the checkpoint, and step 9 after it.
  assert_same_outcome(outcome(workdir), outcome(logged[0]))
  # Two event files; the second hides the first's events after step 8.
  assert len(list((workdir / "tensorboard").iterdir())) == 2
  raw = tensorboard_scalars(workdir / "tensorboard", purge=False)
  assert [step for step, _ in raw["train/loss"]] == [3, 6, 9, 9, 12, 15, 18]
  assert [step for step, _ in raw["epoch/val_accuracy"]] == [9, 9, 18]


# --------------------------------------------------------------------------------------------
# Extending a run.


def epochs_config(data_dir, num_epochs, **overrides):
  """Step records every 4 steps (so one straddles the end of epoch 1), the learning rate decayed
  at steps 20 and 40."""
  settings = dict(
    num_epochs=num_epochs, log_every_steps=4, lr_decay_every_steps=20, checkpoint_every_steps=0
  )
  return tiny_config(data_dir, **{**settings, **overrides})


@pytest.fixture(scope="module")
def six_epochs(tmp_path_factory, tiny_mnist) -> Path:
  """The workdir of a 6-epoch run, trained so from the start."""
  workdir = tmp_path_factory.mktemp("six_epochs") / "run"
  run_capturing_stdout(epochs_config(tiny_mnist, 6), workdir)
  return workdir


@pytest.mark.slow
def test_a_finished_run_given_more_epochs_ends_as_the_longer_run(tmp_path, tiny_mnist, six_epochs):
  workdir = tmp_path / "run"
  one, _ = run_capturing_stdout(epochs_config(tiny_mnist, 1), workdir)
  assert one["steps"] == 9
  six, stdout = run_capturing_stdout(epochs_config(tiny_mnist, 6), workdir)
  assert "Resuming from" in stdout and six["steps"] == 54 and six["epochs"] == 6
  extended, fresh = outcome(workdir), outcome(six_epochs)
  # TensorBoard keeps the test metrics of the 1-epoch run, at its last step, besides the final.
  for field in ("accuracy", "loss"):
    tests = extended["tensorboard"].pop(f"test/{field}")
    assert tests == {9: f32(one[f"test_{field}"]), 54: f32(six[f"test_{field}"])}
    assert fresh["tensorboard"][f"test/{field}"] == {54: tests[54]}
    fresh["tensorboard"].pop(f"test/{field}")
  # Bit for bit: mask, final state, epoch and step records, test metrics, TensorBoard.
  assert_same_outcome(extended, fresh)
  records = read_jsonl(workdir / "step_metrics.jsonl")
  assert [r["step"] for r in records] == list(range(4, 55, 4))
  assert sorted({r["learning_rate"] for r in records}) == pytest.approx([1e-3, 0.01, 0.1])
  assert json.loads((workdir / "config.json").read_text())["num_epochs"] == 6


@pytest.mark.slow
def test_fewer_epochs_than_trained_or_another_config_is_refused_and_changes_nothing(
  tmp_path, tiny_mnist, six_epochs
):
  workdir = tmp_path / "run"
  shutil.copytree(six_epochs, workdir)
  before = files_of(workdir)
  with pytest.raises(
    ValueError,
    match=r"has trained 54 steps, into epoch 6; config\.num_epochs=5 cannot undo that\. Resume "
    r"\(or extend\) it with a num_epochs >= 6, or pass --overwrite \(or use another --workdir\)",
  ):
    train.train_and_evaluate(epochs_config(tiny_mnist, 5), str(workdir))
  assert files_of(workdir) == before
  with pytest.raises(ValueError, match=r"another config \(learning_rate: 0\.1 -> 0\.05\)"):
    train.train_and_evaluate(epochs_config(tiny_mnist, 7, learning_rate=0.05), str(workdir))
  assert files_of(workdir) == before


@pytest.mark.slow
def test_an_unfinished_run_may_resume_with_fewer_epochs_than_it_planned(
  tmp_path, tiny_mnist, six_epochs, monkeypatch
):
  workdir = tmp_path / "run"
  # SIGTERM at step 12: epoch 2 under way.
  batches = interrupt_at(monkeypatch, 12, lambda: os.kill(os.getpid(), signal.SIGTERM))
  with pytest.raises(train.PreemptedError, match="SIGTERM at step 12"):
    run_capturing_stdout(epochs_config(tiny_mnist, 6), workdir)
  monkeypatch.setattr(data, "train_batches", batches)
  before = files_of(workdir)
  with pytest.raises(ValueError, match=r"trained 12 steps, into epoch 2; .* num_epochs >= 2"):
    train.train_and_evaluate(epochs_config(tiny_mnist, 1), str(workdir))
  assert files_of(workdir) == before
  two, _ = run_capturing_stdout(epochs_config(tiny_mnist, 2), workdir)
  assert (two["steps"], two["epochs"]) == (18, 2)
  # The first two epochs of the 6-epoch run, as trained from the start.
  ran, longer = outcome(workdir), outcome(six_epochs)
  assert ran["metrics"] == longer["metrics"][:2]
  assert ran["step_metrics"] == [r for r in longer["step_metrics"] if r["step"] <= 18]
