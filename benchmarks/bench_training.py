"""A short SNIP run of VGG-D on mock CIFAR-10, end to end, as ``snip-jax-train`` runs it.

Mock CIFAR-10 (random images and labels, written as the original ``cifar-10-python.tar.gz``
by ``benchmarks/mock_data.py``) is prepared offline with :func:`snip_jax.data.ensure_prepared`;
then :func:`snip_jax.train.train_and_evaluate` runs the ``vgg_d_cifar10`` config (SNIP at 95%
sparsity, batch 128, augmentation) shortened to a few epochs of the mock data: scoring, the
mask, the masked training loop with its per-epoch validation, checkpoints and metrics, the
test evaluation. Recorded:

* steps per second of the training loop once compiled (the median over the step records
  after the first, which includes the compile), and over the whole loop;
* the last train loss, which must be finite (random labels: no accuracy is meaningful);
* the mask's sparsity, which must be the config's;
* the time to prepare the mock data, to prune, and of the whole run.

No goal: the measurements of one run; the section fails (the run raises) on a NaN.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common, mock_data
from snip_jax import data, train

TITLE = "Training: VGG-D on mock CIFAR-10, end to end"
MODEL = "vgg_d"
#: profile (common.PROFILES) -> (images per training batch file (5 files, 90% train, 10%
#: validation), test images, batch size, epochs, steps between step records).
SETTINGS = {
  "full": (500, 500, 128, 1, 5),
  "quick": (16, 16, 8, 1, 3),
  "gpu": (1000, 1000, 128, 8, 25),
}


def _config(batch_size: int, epochs: int, log_every: int, data_dir: str, source_dir: str):
  """The experiment's ``vgg_d_cifar10`` config, shortened and pointed at the mock data."""
  config = common.get_config(MODEL)
  config.update(
    batch_size=batch_size,
    score_batch_size=batch_size,
    eval_batch_size=min(config.eval_batch_size, 4 * batch_size),
    num_epochs=epochs,
    log_every_steps=log_every,
    progress_every_steps=0,
    checkpoint_every_steps=0,
    data_dir=data_dir,
    source_dir=source_dir,
  )
  return config


def _read_jsonl(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rows(config, summary: dict, records: list[dict], seconds: dict[str, float]) -> list[dict]:
  """The section's rows from the run's summary and step records."""
  setting = f"{MODEL}, mock CIFAR-10, batch {config.batch_size}, {summary['steps']} steps"
  compiled = [r["examples_per_second"] / config.batch_size for r in records[1:]] or [math.nan]
  whole = summary["steps"] / summary["train_seconds"]
  loss = records[-1]["train_loss"]
  sparsity = summary["sparsity"]
  return [
    common.value_row(
      f"train steps per second, {setting}",
      f"{statistics.median(compiled):,.1f} steps/s compiled, {whole:,.1f} over the whole loop",
      steps_per_second=statistics.median(compiled),
      steps_per_second_per_record=compiled,
      steps_per_second_whole_loop=whole,
      steps=summary["steps"],
      train_seconds=summary["train_seconds"],
    ),
    common.value_row(
      f"last train loss, {setting}",
      f"{loss:.4f} ({'finite' if math.isfinite(loss) else '**not finite**'})",
      train_loss=loss,
      finite=math.isfinite(loss),
    ),
    common.value_row(
      f"mask sparsity, {setting}",
      f"{sparsity:.4f} (config: {config.sparsity:g}; {summary['num_kept']:,} of "
      f"{summary['num_prunable']:,} prunable weights kept)",
      sparsity=sparsity,
      target_sparsity=config.sparsity,
      num_kept=summary["num_kept"],
      num_prunable=summary["num_prunable"],
    ),
    common.value_row(
      f"seconds, {setting}",
      ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items()),
      seconds_by_stage=seconds,
      examples={"train": summary["train_examples"]},
    ),
  ]


def run(quick: bool, gpu: bool = False) -> dict:
  """The section's result: one run at the sizes of profile ``common.profile(quick, gpu)``."""
  per_file, num_test, batch_size, epochs, log_every = SETTINGS[common.profile(quick, gpu)]
  with tempfile.TemporaryDirectory(prefix="snip_jax_bench_training_") as scratch:
    root = Path(scratch)
    (root / "source").mkdir()
    mock_data.write_cifar10(root / "source", per_batch=per_file, num_test=num_test)
    start = time.perf_counter()
    data.ensure_prepared("cifar10", str(root / "tfds"), str(root / "source"))
    prepared = time.perf_counter()
    config = _config(batch_size, epochs, log_every, str(root / "tfds"), str(root / "source"))
    summary = train.train_and_evaluate(config, str(root / "run"))
    seconds = {
      "prepare the data": prepared - start,
      "prune": summary["prune_seconds"],
      "train": summary["train_seconds"],
      "whole run": time.perf_counter() - prepared,
    }
    records = _read_jsonl(root / "run" / train.STEP_METRICS_FILE)
  return {"title": TITLE, "description": __doc__, "rows": _rows(config, summary, records, seconds)}
