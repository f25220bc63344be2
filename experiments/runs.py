"""What the experiment scripts share: run specs, a resumable runs file, worker processes, stats.

An experiment is a list of :class:`Run` s. :func:`run_all` trains the ones not yet in
``<out>/runs.jsonl`` (one JSON line per finished run: its tags, config overrides, summary and
per-epoch metrics) and appends each as it finishes, so an interrupted experiment resumes where it
stopped and a finished one costs nothing to re-run. Each run's own files (config, metrics, mask,
summary, log) go to ``<out>/runs/<name>/``, which is not committed; ``runs.jsonl`` is the raw
result the tables and figures are made from.

Runs are deterministic (each has its own seed), so they can go to worker processes: on a
2-core CPU two workers finish LeNet-300-100 runs about twice as fast as one, with the same
numbers. A run pruned from a trained one (its ``source``: ``config.prune_trained``) waits for
it: :func:`run_all` trains in waves, each of the runs whose sources are done.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import multiprocessing
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

import report
from snip_jax import files, provenance
from snip_jax.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
#: The config files (``experiments/configs/<name>.py``); a :class:`Run` names one.
CONFIGS = ROOT / "experiments" / "configs"
RUNS_FILE = "runs.jsonl"
LOCK_ADVICE = (
  "Another experiment process is training into it: wait for it to finish, or give --out another "
  "directory."
)


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: a config file of ``experiments/configs`` plus field overrides.

  Attributes:
    name: unique within its experiment; also the run's directory under ``<out>/runs/``.
    config: the name of the base config file, e.g. ``'lenet300_fashion_mnist'``.
    overrides: config fields to set, e.g. ``{'sparsity': 0.98, 'seed': 1}``.
    tags: what the run stands for in tables and figures (model, criterion, sparsity, seed...).
    source: the name of the run of the same experiment it is pruned from (its workdir becomes
      ``config.prune_trained``), or ``None``.
  """

  name: str
  config: str
  overrides: dict[str, Any]
  tags: dict[str, Any]
  source: str | None = None

  @classmethod
  def from_record(cls, record: dict[str, Any]) -> Run:
    """The run a record of ``runs.jsonl`` was made by."""
    return cls(
      record["name"], record["config"], record["overrides"], record["tags"], record.get("source")
    )

  def make_config(self, out: str | os.PathLike[str] | None = None):
    """The base config with the overrides (a field the config lacks is refused), and the
    workdir of its source under ``out`` (needed when it has one)."""
    config = load_config(CONFIGS / f"{self.config}.py")
    for field, value in self.overrides.items():
      if field not in config:
        raise KeyError(f"{self.name}: config {self.config!r} has no field {field!r}.")
      config[field] = value
    if self.source is not None:
      if out is None:
        raise ValueError(f"{self.name} is pruned from {self.source}: give the output directory.")
      config.prune_trained = str(Path(out) / "runs" / self.source)
    return config

  def command(self) -> str:
    """The ``experiments/train.py`` command that trains this run on its own (``<out>``: the
    experiment's output directory)."""
    fields = [f"--config.{k}={v}" for k, v in self.overrides.items()]
    if self.source is not None:
      fields.append(f"--config.prune_trained=<out>/runs/{self.source}")
    config = f"experiments/configs/{self.config}.py"
    return f"python experiments/train.py --config {config} {' '.join(fields)}"


def quick_out(experiment: str) -> str:
  """Where ``--quick`` runs go unless told otherwise: a scratch directory, never results/."""
  return os.path.join(tempfile.gettempdir(), "snip_jax_quick", experiment)


def define_flags(experiment: str, trains: bool = True) -> None:
  """The flags of every experiment script: --out and --quick; --seeds and --workers if it
  ``trains``."""
  flags.DEFINE_string(
    "out", None, f"Output directory (default: results/{experiment}; a scratch one with --quick)."
  )
  flags.DEFINE_bool("quick", False, "Tiny budget: checks the plumbing, not the numbers.")
  if trains:
    flags.DEFINE_integer("seeds", 3, "Seeds 0..n-1 per setting.")
    flags.DEFINE_integer("workers", 1, "Runs trained at a time (worker processes).")


def out_dir(experiment: str) -> Path:
  """The output directory the flags of :func:`define_flags` ask for."""
  if flags.FLAGS.out:
    return Path(flags.FLAGS.out)
  return Path(quick_out(experiment)) if flags.FLAGS.quick else ROOT / "results" / experiment


def run_flagged(experiment: str, make_runs: Callable[[int, bool], Sequence[Run]]) -> Path:
  """Trains ``make_runs(seeds, quick)`` as the flags of :func:`define_flags` ask (one seed
  with --quick); returns the output directory."""
  out = out_dir(experiment)
  quick = flags.FLAGS.quick
  run_all(make_runs(1 if quick else flags.FLAGS.seeds, quick), out, workers=flags.FLAGS.workers)
  return out


def read_records(out: str | os.PathLike[str], name: str = RUNS_FILE) -> list[dict[str, Any]]:
  """The records in ``<out>/<name>`` (default: the finished runs of ``runs.jsonl``), one JSON
  line each (empty if there is no such file).

  A last line cut off by a killed write (no newline at its end, and not JSON) is left out with a
  warning: its run is simply trained again (:func:`run_all` cuts the line off before it appends).
  Any other line that is not JSON is an error naming it.
  """
  path = Path(out) / name
  if not path.exists():
    return []
  text = path.read_text()
  lines = text.splitlines()
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number == len(lines) and not text.endswith("\n"):
        warnings.warn(
          f"{path}:{number}, the last line, was cut off by an interrupted write; its run is left "
          "out (the experiment trains it again).",
          stacklevel=2,
        )
        break
      raise ValueError(
        f"{path}:{number} is not valid JSON ({e}); an interrupted write leaves at most a "
        "partial last line: delete that line and re-run to redo the run."
      ) from None
  return records


def _cut_torn_tail(path: Path) -> None:
  """Cuts a last line without its newline (a killed append) off ``path``, so that the next
  record starts on a line of its own."""
  if not path.exists():
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def _check_recorded(run: Run, record: dict[str, Any], path: Path) -> None:
  """Raises ``ValueError`` unless ``record`` was made by ``run`` as it is asked for now (the
  same base config, overrides and source): a changed run must not pass for its old result."""
  asked = {"config": run.config, "overrides": run.overrides, "source": run.source}
  made = {k: record.get(k) for k in asked}
  if json.loads(json.dumps(asked)) != made:
    raise ValueError(
      f"{path} records {run.name} made as {made}, but the experiment now asks for {asked}: "
      "remove that run's line (and its directory under runs/) to make it anew, or give the "
      "changed run another name."
    )


def _train_one(run: Run, out: str) -> dict[str, Any]:
  """Trains ``run`` (in a worker process); returns its record for ``runs.jsonl``."""
  from snip_jax import train

  workdir = Path(out) / "runs" / run.name
  workdir.mkdir(parents=True, exist_ok=True)
  config = run.make_config(out)
  t0 = time.perf_counter()
  diverged = None
  with open(workdir / "log.txt", "w") as log, contextlib.redirect_stdout(log):
    try:
      summary = train.train_and_evaluate(config, str(workdir))
    except FloatingPointError as e:  # A non-finite loss: a result (the recipe diverges).
      summary, diverged = None, {"step": diverged_step(str(e)), "message": str(e)}
  metrics_file = workdir / "metrics.jsonl"
  lines = metrics_file.read_text().splitlines() if metrics_file.exists() else []
  record = {
    "name": run.name,
    "tags": run.tags,
    "config": run.config,
    "overrides": run.overrides,
    "command": run.command(),
    **({"source": run.source} if run.source is not None else {}),
    "summary": summary,
    "metrics": [json.loads(line) for line in lines],
    "wall_seconds": time.perf_counter() - t0,
    "cpu": provenance.cpu_type(),
    "cores": report.cores(),
  }
  if diverged:
    record["diverged"] = diverged
  return record


def diverged_step(message: str) -> int | None:
  """The step a non-finite-loss error names (``'... at step 6; ...'``)."""
  match = re.search(r"at step (\d+)", message)
  return int(match.group(1)) if match else None


def run_all(
  runs: Sequence[Run], out: str | os.PathLike[str], workers: int = 1
) -> list[dict[str, Any]]:
  """Trains every run of ``runs`` not yet recorded in ``<out>/runs.jsonl``.

  Returns:
    The records of ``runs``, in their order (from the file, old and new).
  """
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError("Run names must be unique within an experiment.")
  unknown = [r.name for r in runs if r.source is not None and r.source not in names]
  if unknown:
    raise ValueError(f"{unknown[0]} is pruned from a run that is not in the experiment.")
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  # One experiment process per output directory: two would train the same runs and append
  # each one's record twice.
  with files.DirectoryLock(out, "Experiment output", LOCK_ADVICE):
    _cut_torn_tail(out / RUNS_FILE)
    recorded = {r["name"]: r for r in read_records(out)}
    for run in runs:
      if run.name in recorded:
        _check_recorded(run, recorded[run.name], out / RUNS_FILE)
    _train_missing(runs, set(recorded), out, workers)
  by_name = {r["name"]: r for r in read_records(out)}
  return [by_name[name] for name in names]


def _train_missing(runs: Sequence[Run], done: set[str], out: Path, workers: int) -> None:
  """Trains the runs not in ``done`` (the names recorded) in waves (a run after its source),
  appending each record as it finishes."""
  todo = [r for r in runs if r.name not in done]
  print(f"{len(runs) - len(todo)} of {len(runs)} runs already done in {out}; {len(todo)} to go.")
  t0, total, finished = time.perf_counter(), len(todo), 0
  with open(out / RUNS_FILE, "a") as f:

    def record(rec: dict[str, Any]) -> None:
      nonlocal finished
      finished += 1
      done.add(rec["name"])
      f.write(json.dumps(rec) + "\n")
      f.flush()
      if rec.get("diverged"):
        result = f"diverged at step {rec['diverged']['step']}"
      else:
        result = f"test accuracy {rec['summary']['test_accuracy']:.4f}"
      print(
        f"[{finished}/{total}] {rec['name']}: {result} "
        f"({rec['wall_seconds']:.0f} s; {time.perf_counter() - t0:.0f} s so far)",
        flush=True,
      )

    while todo:
      # A wave: every run whose source is done (a diverged source is done: its runs fail).
      wave = [r for r in todo if r.source is None or r.source in done]
      todo = [r for r in todo if r not in wave]
      if workers <= 1 or len(wave) <= 1:
        for run in wave:
          record(_train_one(run, str(out)))
      else:
        _train_wave(wave, out, workers, record)


def _train_wave(
  wave: list[Run], out: Path, workers: int, record: Callable[[dict[str, Any]], None]
) -> None:
  """Trains ``wave`` in worker processes, recording each run as it finishes.

  A run that fails (or a worker that dies) stops the wave: the runs not started are cancelled,
  the ones in progress finish and are recorded, then the first error is raised. (A pool
  terminated instead would send SIGTERM to workers whose runs save a checkpoint and live on, and
  would wait for them forever.)
  """
  # spawn, not fork: a forked child of a process that has started JAX's threads can hang. A
  # spawned worker starts with this process's sys.path (the script's directory, experiments/,
  # first), so it imports this module as the script did.
  context = multiprocessing.get_context("spawn")
  with futures.ProcessPoolExecutor(
    min(workers, len(wave)), mp_context=context, max_tasks_per_child=8
  ) as pool:
    running = {pool.submit(_train_one, run, str(out)): run for run in wave}
    failure: BaseException | None = None
    for future in futures.as_completed(running):
      if future.cancelled():
        continue
      error = future.exception()
      if error is None:
        record(future.result())
      elif failure is None:
        failure = error
        print(
          f"{running[future].name} failed ({type(error).__name__}: {error}); the runs in "
          "progress finish, the others are left for the next invocation.",
          flush=True,
        )
        for other in running:
          other.cancel()
  if failure is not None:
    raise failure


# --------------------------------------------------------------------------------------------
# Tables.


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean and sample standard deviation (ddof=1; 0 for one value) of ``n`` values."""

  mean: float
  std: float
  n: int

  @classmethod
  def of(cls, values: Iterable[float]) -> Stat:
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
      return cls(math.nan, math.nan, 0)
    return cls(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))

  def pct(self, digits: int = 2) -> str:
    """``'12.34 ± 0.56'`` for a fraction, in percentage points."""
    return f"{100 * self.mean:.{digits}f} ± {100 * self.std:.{digits}f}"


def group(
  records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> dict[Any, list[dict[str, Any]]]:
  """Records grouped by ``key(record)``, groups in first-seen order."""
  groups: dict[Any, list[dict[str, Any]]] = {}
  for rec in records:
    groups.setdefault(key(rec), []).append(rec)
  return groups


def test_error(rec: dict[str, Any]) -> float:
  return 1.0 - rec["summary"]["test_accuracy"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
  """A GitHub markdown table; ``align`` has one of 'l'/'r' per column (default: all 'l')."""
  align = align or "l" * len(header)
  lines = [
    "| " + " | ".join(header) + " |",
    "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
  ]
  body = markdown_rows(rows)
  return "\n".join([*lines, body] if body else lines)


def markdown_rows(rows: Iterable[Sequence[Any]]) -> str:
  """The body rows of a GitHub markdown table (for a header written elsewhere)."""
  return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
  """``rows`` (dicts with the same keys) as a CSV file with a header."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def pyplot():
  """``matplotlib.pyplot`` on the file-only Agg backend (imported when a figure is drawn)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig, path: str | os.PathLike[str]) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  pyplot().close(fig)


def total_hours(records: Iterable[dict[str, Any]]) -> float:
  """Worker time of ``records`` in hours (each run's wall-clock, summed)."""
  return sum(r["wall_seconds"] for r in records) / 3600
