"""Timing and reporting helpers shared by the benchmark sections.

Every goal is a ratio of two things measured side by side in one process: this CPU is shared
and noisy, so the two sides are timed in alternating order, round after round, and each round
gives one ratio. A result reports the median and the min-max of those per-round ratios, with
the median and min-max of each side's time.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import models, provenance, selection, train


def block(result: Any) -> Any:
  """Waits until every array in ``result`` is computed (JAX dispatches asynchronously)."""
  return jax.block_until_ready(result)


def timed(fn: Callable[[], Any]) -> float:
  """Seconds one call of ``fn`` takes, including waiting for its arrays."""
  start = time.perf_counter()
  block(fn())
  return time.perf_counter() - start


def time_interleaved(
  fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
  """Seconds per call of each function, measured round by round in alternating order.

  Each round calls every function once; odd rounds go in reverse order, so that neither side
  always runs first (after the other has warmed the caches, or been slowed by a neighbour).

  Args:
    fns: name -> zero-argument function (its result is waited for).
    rounds: timed rounds.
    warmup: untimed rounds first (compilation, allocation).

  Returns:
    name -> the ``rounds`` times, in seconds.
  """
  names = list(fns)
  for _ in range(warmup):
    for name in names:
      block(fns[name]())
  times: dict[str, list[float]] = {name: [] for name in names}
  for r in range(rounds):
    for name in names if r % 2 == 0 else names[::-1]:
      times[name].append(timed(fns[name]))
  return times


def stats(values: Sequence[float]) -> dict[str, float]:
  """``{"median", "min", "max", "n"}`` of ``values``."""
  if not values:
    raise ValueError("stats of an empty sequence")
  return {
    "median": float(statistics.median(values)),
    "min": float(min(values)),
    "max": float(max(values)),
    "n": len(values),
  }


def ratio_stats(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
  """:func:`stats` of the per-round ratios ``numerator[i] / denominator[i]``."""
  if len(numerator) != len(denominator):
    raise ValueError(f"{len(numerator)} numerators but {len(denominator)} denominators")
  return stats([a / b for a, b in zip(numerator, denominator, strict=True)])


def row(
  name: str,
  ratio: Mapping[str, float],
  goal: float | None,
  *,
  higher_is_better: bool = False,
  **details: Any,
) -> dict[str, Any]:
  """One line of a results table: a ratio, its goal and whether the median meets it.

  Args:
    name: what was measured.
    ratio: :func:`stats` of the ratio.
    goal: the bound the median ratio must meet; ``None`` for a row without a goal.
    higher_is_better: the goal is a lower bound (``>=``) instead of an upper bound (``<=``).
    **details: anything else to record (the two sides' time statistics, sizes, ...).
  """
  met = None
  if goal is not None:
    met = ratio["median"] >= goal if higher_is_better else ratio["median"] <= goal
  return {
    "name": name,
    "ratio": dict(ratio),
    "goal": goal,
    "goal_op": ">=" if higher_is_better else "<=",
    "met": met,
    **details,
  }


def value_row(name: str, value: str, **details: Any) -> dict[str, Any]:
  """One line of a results table that reports a measurement, not a ratio: no goal, no verdict.

  Args:
    name: what was measured.
    value: the measurement as the report shows it (``"41.2 steps/s"``).
    **details: anything else to record (the raw numbers behind ``value``, sizes, ...).
  """
  return {"name": name, "value": value, "goal": None, "goal_op": None, "met": None, **details}


#: The benchmark profiles: the CPU suite, its plumbing check, and the sizes for an accelerator.
PROFILES = ("full", "quick", "gpu")


def profile(quick: bool, gpu: bool = False) -> str:
  """The profile of a section's ``run(quick, gpu)``: ``quick`` wins (plumbing only, anywhere)."""
  if quick:
    return "quick"
  return "gpu" if gpu else "full"


# Words of a CPU's model name that do not tell CPU types apart: trademarks, "CPU", the clock.
_CPU_NAME_NOISE = re.compile(
  r"\((r|tm)\)|\b(cpu|processor)\b|@.*$|\b\d+-core\b|\bw(ith|/)\s*radeon.*$", re.IGNORECASE
)


def slug(text: str) -> str:
  """``text`` lower-cased, every run of characters other than ``a-z0-9`` one ``-``."""
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_id(record: Mapping[str, Any]) -> str:
  """A short, filesystem-safe name of the kind of machine that :func:`machine` describes.

  Numbers from different kinds of machines must never be read as each other's: XLA emits
  different code for each CPU type and device. On the CPU backend the id is the CPU model and
  the cores (``cpu-amd-epyc-2-cores``, ``cpu-intel-xeon-2-cores``); on an accelerator it is the
  backend and the device kind (``gpu-nvidia-h200``), with the device count when there are
  several (``gpu-nvidia-h200-8-devices``).

  Args:
    record: a :func:`machine` record; one without ``device_kind`` (written before it was
      recorded) falls back to its first device's name.

  Returns:
    The id, e.g. ``cpu-amd-epyc-2-cores``.
  """
  backend = slug(record["backend"]) or "unknown"
  if backend == "cpu":
    model = slug(_CPU_NAME_NOISE.sub(" ", record["cpu"])) or "unknown"
    return f"cpu-{model}-{record['cores']}-cores"
  devices = record.get("devices") or []
  kind = slug(record.get("device_kind") or (devices[0] if devices else "")) or "unknown"
  if kind != backend and kind.startswith(f"{backend}-"):  # "tpu-v5-lite", not "tpu-tpu-v5-lite".
    kind = kind[len(backend) + 1 :]
  several = f"-{len(devices)}-devices" if len(devices) > 1 else ""
  return f"{backend}-{kind}{several}"


def machine() -> dict[str, Any]:
  """The machine and the versions the numbers were measured with; ``id`` is its
  :func:`machine_id`, the name of its results folder."""
  versions = {}
  for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  record = {
    "cpu": provenance.cpu_type(),
    "cores": os.cpu_count(),
    "system": f"{platform.system()} {platform.release()}",
    "python": platform.python_version(),
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "device_kind": jax.devices()[0].device_kind,
    "versions": versions,
  }
  return {"id": machine_id(record), **record}


def random_batch(input_shape: Sequence[int], batch_size: int, seed: int = 0):
  """A fixed batch of standard normal images and uniform labels in ``[0, 10)``.

  Timings do not depend on the values; the data sections time real data.
  """
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((batch_size, *input_shape)).astype(np.float32)
  return images, rng.integers(0, 10, batch_size).astype(np.int32)


#: The benchmark models: (name, config module, batch size of the paper).
MODELS = {
  "lenet300": ("lenet300_fashion_mnist", 100),
  "lenet5": ("lenet5_fashion_mnist", 100),
  "vgg_d": ("vgg_d_cifar10", 128),
}


#: The experiment config files (``experiments/configs/<name>.py``).
CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def get_config(model: str):
  """The experiment config of ``model`` (its file in ``experiments/configs``): its optimizer,
  batch, ..."""
  return train.load_config(CONFIGS / f"{MODELS[model][0]}.py")


class Workload:
  """A model of the paper ready to train: params, a 95%-sparse mask, a batch, two states.

  :meth:`dense_state` is a plain Flax ``TrainState`` with the config's optimizer;
  :meth:`masked_state` is the one :func:`snip_jax.train.create_train_state` builds from the
  same params and optimizer, as every run does. The mask is the top 5% of random scores: the
  step's cost does not depend on which weights are kept.
  """

  def __init__(
    self,
    model: str,
    batch_size: int | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
  ):
    self.name = model
    self.config = get_config(model)
    self.batch_size = batch_size or MODELS[model][1]
    self.module = models.get_model(model, num_classes=10)
    self.input_shape = input_shape = input_shape or models.get_spec(model).input_shape
    # Initialise with one example: eager VGG init with a full batch takes ~14 s on this CPU.
    variables = jax.jit(self.module.init)(jax.random.key(seed), jnp.zeros((1, *input_shape)))
    self.params = variables["params"]
    self.batch_stats = variables.get("batch_stats", {})
    scores = jax.tree.map(
      lambda p: jax.random.uniform(jax.random.key(seed + 1), p.shape), self.params
    )
    self.mask = selection.top_k_mask(scores, 0.95, filter_fn=train.filter_fn_for(self.config))
    self.tx = train.make_optimizer(self.config)
    images, labels = random_batch(input_shape, self.batch_size, seed)
    self.batch = (jnp.asarray(images), jnp.asarray(labels))

  def dense_state(self):
    """A fresh unmasked ``TrainState`` (its buffers are donated to the step)."""
    return train.TrainState.create(
      apply_fn=self.module.apply,
      params=jax.tree.map(jnp.copy, self.params),
      tx=self.tx,
      batch_stats=jax.tree.map(jnp.copy, self.batch_stats),
      rng=jax.random.key(1),
    )

  def masked_state(self):
    """A fresh masked ``TrainState``, as :func:`snip_jax.train.train_and_evaluate` makes it."""
    return train.create_train_state(
      self.module,
      jax.tree.map(jnp.copy, self.params),
      self.mask,
      self.tx,
      jax.random.key(1),
      jax.tree.map(jnp.copy, self.batch_stats),
    )


def stepper(step_fn: Callable, state: Any, batch: Any, steps: int = 1) -> Callable[[], Any]:
  """A zero-argument function running ``steps`` train steps from a state it keeps updated.

  The step donates its state, so the function holds the latest one and returns it to be
  waited for.
  """
  holder = [state]

  def run():
    for _ in range(steps):
      holder[0], _ = step_fn(holder[0], batch)
    return holder[0]

  return run
