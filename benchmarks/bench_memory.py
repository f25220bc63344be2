"""Compile time of each jitted step, and the peak memory of scoring vs a dense train step.

* compile: ``.lower(...).compile()`` of the masked train step, the eval step (both
  ``snip_jax.xla.jit``-ed, as runs jit them) and SNIP's score function, in this process (no
  persistent compilation cache);
* peak RSS: each measurement is a fresh process (``python -m benchmarks.bench_memory MODEL
  MODE BATCH``) that builds the model and params the same way, then runs either one dense
  train step or one SNIP scoring (``snip_jax.train.make_score_fn``), and reports its peak
  resident set size (``ru_maxrss``, the JAX runtime included).

Goal: scoring's peak RSS <= 1.3x the dense step's (no goal on compile times).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax

from benchmarks import common
from snip_jax import train, xla

TITLE = "Compile time and peak memory"
#: (models and batch sizes, processes per measurement).
SETTINGS = {
  False: ({"lenet300": 100, "lenet5": 100, "vgg_d": 128}, 3),
  True: ({"lenet300": 16}, 1),
}


def _compile_seconds(jitted, *args) -> float:
  start = time.perf_counter()
  jitted.lower(*args).compile()
  return time.perf_counter() - start


def _peak_rss(model: str, mode: str, batch_size: int) -> int:
  """Peak RSS in bytes of a fresh process running ``mode`` once."""
  out = subprocess.run(
    [sys.executable, "-m", "benchmarks.bench_memory", model, mode, str(batch_size)],
    cwd=Path(__file__).resolve().parents[1],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  return json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"]


def run(quick: bool) -> dict:
  models, processes = SETTINGS[quick]
  rows = []
  for model, batch_size in models.items():
    work = common.Workload(model, batch_size)
    score = train.make_score_fn(work.config, work.module.apply)
    eval_batch = (*work.batch, jax.numpy.ones(batch_size))
    compile_s = {
      "masked train step": _compile_seconds(
        xla.jit(train.train_step), work.masked_state(), work.batch
      ),
      "eval step": _compile_seconds(xla.jit(train.eval_step), work.masked_state(), eval_batch),
      "SNIP scoring": _compile_seconds(score, work.params, work.batch_stats, *work.batch),
    }
    rss = {"scoring": [], "dense step": []}
    for _ in range(processes):
      for mode in rss:
        rss[mode].append(_peak_rss(model, mode, batch_size))
    rows.append(
      common.row(
        f"scoring / dense step peak RSS, {model}, batch {batch_size}",
        common.ratio_stats(rss["scoring"], rss["dense step"]),
        1.3,
        peak_rss_bytes={k: common.stats(v) for k, v in rss.items()},
        compile_seconds=compile_s,
      )
    )
  return {"title": TITLE, "description": __doc__, "rows": rows}


def _measure(model: str, mode: str, batch_size: int) -> None:
  """The child process: one dense step or one scoring, then print the peak RSS as JSON."""
  work = common.Workload(model, batch_size)
  if mode == "dense step":
    state, _ = xla.jit(train.train_step)(work.dense_state(), work.batch)
  elif mode == "scoring":
    score = train.make_score_fn(work.config, work.module.apply)
    state = score(work.params, work.batch_stats, *work.batch)
  else:
    raise SystemExit(f"unknown mode {mode!r}")
  jax.block_until_ready(state)
  print(json.dumps({"peak_rss_bytes": peak_rss_bytes()}))


def peak_rss_bytes() -> int:
  """This process's peak resident set size.

  ``VmHWM`` from ``/proc/self/status``: unlike ``getrusage``'s ``ru_maxrss``, which a child
  inherits from its parent across ``fork`` and ``exec`` on Linux, it starts afresh with the
  process's own address space. Falls back to ``ru_maxrss`` where there is no ``/proc``.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024  # In kB.
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux.


if __name__ == "__main__":
  _measure(sys.argv[1], sys.argv[2], int(sys.argv[3]))
