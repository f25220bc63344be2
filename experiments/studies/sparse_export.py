"""The sparse export: what the compact file saves on disk and in memory; what inference costs.

What ``experiments/sparse_export.py`` trains and measures:

1. SNIP on LeNet-300-100 and LeNet-5-Caffe, Fashion-MNIST, at the sparsities of ``SPARSITIES``
   (the sweep's CPU budgets, seed 0: :func:`make_runs`); :func:`measure` exports each run with
   ``snip_jax.export.export_workdir`` and runs the export sparsely (its weight matrices as BCOO
   arrays) next to the dense masked model on the whole test set.
2. Sizes on disk: the export against the same masked params stored dense, as Flax serializes
   them (msgpack), as ``.npz``, as compressed ``.npz``, as an Orbax checkpoint of the params
   alone, and the run's own training checkpoint (params, optimizer state and mask); bytes of the
   params in memory, with BCOO weight matrices and dense.
3. Inference speed: the sparse forward (``export.sparse_apply`` on the export) against the dense
   masked forward (``model.apply``), both jitted, at batch 1 and 1,000 on random images, timed
   side by side in alternating rounds (``benchmarks/common.py``); each timed call runs the
   forward enough times to last ~50 ms. :func:`crossovers` finds where sparse overtakes dense.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import tempfile
import time
from pathlib import Path
from types import ModuleType

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

import runs
from snip_jax import checkpoint, data, export, masks, train
from studies import sweep

MODELS = ("lenet300", "lenet5")
#: The issue's four sparsities and, to find where sparse inference overtakes dense, three more.
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
BATCH_SIZES = (1, 1000)
#: Timed rounds per measurement, and the seconds each timed call should last.
ROUNDS, CALL_SECONDS = 15, 0.05
QUICK_SPARSITIES, QUICK_ROUNDS = (0.98,), 3


@functools.cache
def _common() -> ModuleType:
  """``benchmarks/common.py``: the side-by-side timing of the benchmark suite, used here too.

  Loaded from its file: ``python experiments/sparse_export.py`` puts ``experiments/``, not the
  repository root, on the import path, and ``benchmarks`` is not an installed package.
  """
  path = runs.ROOT / "benchmarks" / "common.py"
  spec = importlib.util.spec_from_file_location("benchmarks_common", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def make_runs(quick: bool = False) -> list[runs.Run]:
  """SNIP at every sparsity, for each model, at the sweep's budget (seed 0)."""
  budgets = sweep.QUICK if quick else None
  return [
    sweep.run_spec("fashion_mnist", model, "snip", s, 0, budgets or sweep.BUDGETS[model])
    for model in MODELS
    for s in (QUICK_SPARSITIES if quick else SPARSITIES)
  ]


def dense_sizes(params, scratch: Path) -> dict[str, int]:
  """Bytes the masked ``params`` take on disk in the usual dense formats."""
  host = jax.device_get(params)
  leaves = {masks.path_name(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(host)}
  sizes = {"dense_msgpack": len(flax.serialization.to_bytes(host))}
  for key, save in (("dense_npz", np.savez), ("dense_npz_compressed", np.savez_compressed)):
    buffer = io.BytesIO()
    save(buffer, **leaves)
    sizes[key] = buffer.getbuffer().nbytes
  with ocp.StandardCheckpointer() as orbax:
    orbax.save(scratch / "orbax_params", host)
  sizes["orbax_params"] = export.disk_bytes(scratch / "orbax_params")
  return sizes


def inference_speed(run: export.TrainedRun, exported, batch_size: int, rounds: int) -> dict:
  """Seconds per example of the sparse forward on ``exported`` (the variables of
  :func:`export.load_sparse`) and of the dense masked forward, side by side."""
  images = jax.random.normal(jax.random.key(0), (batch_size, *run.input_shape))
  dense_fn = jax.jit(run.model.apply)
  sparse_fn = jax.jit(export.sparse_apply(run.model.apply))
  _common().block(dense_fn(run.variables, images))
  _common().block(sparse_fn(exported, images))
  single = min(_common().timed(lambda: dense_fn(run.variables, images)) for _ in range(3))
  calls = int(np.clip(CALL_SECONDS / single, 1, 500))

  def repeat(fn, variables):
    return lambda: [fn(variables, images) for _ in range(calls)]

  times = _common().time_interleaved(
    {"dense": repeat(dense_fn, run.variables), "sparse": repeat(sparse_fn, exported)}, rounds
  )
  per_example = {k: [t / calls / batch_size for t in v] for k, v in times.items()}
  return {
    "batch_size": batch_size,
    "calls_per_round": calls,
    "dense_seconds_per_example": _common().stats(per_example["dense"]),
    "sparse_seconds_per_example": _common().stats(per_example["sparse"]),
    # < 1: sparse is faster.
    "sparse_over_dense": _common().ratio_stats(per_example["sparse"], per_example["dense"]),
  }


def measure(spec: runs.Run, out: Path, rounds: int) -> dict:
  """Exports the run of ``spec`` (training it first if its workdir is gone) and measures it."""
  workdir = out / "runs" / spec.name
  if not (workdir / "summary.json").exists() or not checkpoint.has_checkpoints(workdir):
    print(f"{spec.name}: workdir missing, training it again", flush=True)
    train.train_and_evaluate(spec.make_config(), str(workdir), overwrite=True)
  run, path, info = export.export_workdir(workdir)
  summary = json.loads((workdir / "summary.json").read_text())
  config = run.config
  splits, _ = data.load_dataset(config.dataset, config.data_dir, config.source_dir)
  test = export.check_on(run, path, splits["test"], batch_size=1000)
  with tempfile.TemporaryDirectory() as scratch:
    sizes = dense_sizes(run.params, Path(scratch))
  sizes["export"] = info["file_bytes"]
  newest = workdir / checkpoint.CHECKPOINT_DIR / str(run.step)
  sizes["train_checkpoint"] = export.disk_bytes(newest)
  exported = export.load_sparse(path, like=run.variables)
  memory = {"dense": export.tree_bytes(run.params), "sparse": export.tree_bytes(exported.params)}
  speed = [inference_speed(run, exported.variables, b, rounds) for b in BATCH_SIZES]
  result = {
    "model": spec.tags["model"],
    "sparsity": spec.tags["sparsity"],
    "run": spec.name,
    "command": spec.command(),
    "kept": info["kept"],
    "prunable": info["prunable"],
    "num_params": summary["num_params"],
    "run_test_accuracy": summary["test_accuracy"],
    "test": test,
    "bytes_on_disk": sizes,
    "bytes_in_memory": memory,
    "speed": speed,
  }
  b1, b1000 = (s["sparse_over_dense"]["median"] for s in speed)
  print(
    f"{spec.name}: export {sizes['export']:,} B ({sizes['export'] / sizes['dense_msgpack']:.1%} "
    f"of msgpack), test accuracy sparse {test['sparse_accuracy']:.4f} / dense "
    f"{test['dense_accuracy']:.4f}, sparse/dense time: batch 1 {b1:.2f}, batch 1000 "
    f"{b1000:.2f}",
    flush=True,
  )
  return result


def csv_rows(results: list[dict]) -> list[dict]:
  rows = []
  for r in results:
    row = {
      "model": r["model"],
      "sparsity": r["sparsity"],
      "kept": r["kept"],
      "test_accuracy_sparse": r["test"]["sparse_accuracy"],
      "test_accuracy_dense": r["test"]["dense_accuracy"],
      "predictions_differ": r["test"]["predictions_differ"],
      "max_abs_logit_diff": r["test"]["max_abs_diff"],
      **{f"{k}_bytes": v for k, v in r["bytes_on_disk"].items()},
      "memory_dense_bytes": r["bytes_in_memory"]["dense"],
      "memory_sparse_bytes": r["bytes_in_memory"]["sparse"],
    }
    for s in r["speed"]:
      b = s["batch_size"]
      row[f"b{b}_dense_us_per_example"] = 1e6 * s["dense_seconds_per_example"]["median"]
      row[f"b{b}_sparse_us_per_example"] = 1e6 * s["sparse_seconds_per_example"]["median"]
      row[f"b{b}_sparse_over_dense"] = s["sparse_over_dense"]["median"]
    rows.append(row)
  return rows


def crossovers(results: list[dict]) -> list[dict]:
  """Per model and batch size: the measured sparsities between which sparse becomes faster.

  ``from`` is the lowest measured sparsity from which the sparse forward is faster (median
  ratio < 1) at every higher measured sparsity, ``below`` the measured sparsity just under it
  (``None`` when sparse is faster everywhere measured; ``from`` is ``None`` when it is faster
  nowhere, or not at the highest sparsity); ``*_ratio`` are their median sparse / dense ratios
  and ``faster_at`` lists every measured sparsity where sparse is faster.
  """
  found = []
  for model in dict.fromkeys(r["model"] for r in results):
    mine = sorted((r for r in results if r["model"] == model), key=lambda r: r["sparsity"])
    for i, batch in enumerate(BATCH_SIZES):
      ratios = [r["speed"][i]["sparse_over_dense"]["median"] for r in mine]
      start = len(mine)
      while start > 0 and ratios[start - 1] < 1:
        start -= 1
      above, below = mine[start:], mine[:start]
      found.append(
        {
          "model": model,
          "batch_size": batch,
          "from": above[0]["sparsity"] if above else None,
          "from_ratio": ratios[start] if above else None,
          "below": below[-1]["sparsity"] if below else None,
          "below_ratio": ratios[start - 1] if below else None,
          "faster_at": [r["sparsity"] for r, q in zip(mine, ratios, strict=True) if q < 1],
        }
      )
  return found


def measure_all(specs: list[runs.Run], out: Path, rounds: int, command: str) -> dict:
  """Measures every run of ``specs`` (see :func:`measure`) and writes ``sparse_export.json``
  (everything, with the machine) and ``sparse_export.csv`` (one row per model and sparsity)
  into ``out``; returns the report."""
  t0 = time.perf_counter()
  results = [measure(spec, out, rounds) for spec in specs]
  report = {
    "command": command,
    "machine": _common().machine(),
    "rounds": rounds,
    "measure_seconds": time.perf_counter() - t0,
    "results": results,
    "crossovers": crossovers(results),
  }
  with open(out / "sparse_export.json", "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
  runs.write_csv(csv_rows(results), out / "sparse_export.csv")
  return report
