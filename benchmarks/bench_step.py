"""The masked train step against a dense one (goal <= 1.03) and against PyTorch (goal <= 1.0).

Both comparisons time the step every run uses, ``snip_jax.train.train_step`` jitted with
``snip_jax.xla.jit`` (XLA's own convolutions on CPU), on the state
:func:`snip_jax.train.create_train_state` builds (the mask lives in the optimizer state;
see :mod:`snip_jax.optim`), with the model's experiment config (SGD, momentum 0.9, weight
decay 5e-4).

* dense: the same jitted step on a plain ``TrainState`` with the same optimizer, no mask;
* PyTorch: ``benchmarks/torch_models.py``, the step as the popular PyTorch SNIP ports write it
  (mask multiplied into the weights in the forward pass, weights re-masked after the update),
  eager, NCHW, with as many threads as XLA uses (every core); on a GPU, on CUDA, as JAX is.
"""

from __future__ import annotations

import os

import jax

from benchmarks import common
from snip_jax import train, xla

TITLE = "Train step: masked vs dense, and vs PyTorch"
#: profile (common.PROFILES) -> model -> (batch size, steps per timed call, timed rounds); quick
#: is plumbing only, gpu fits an H200's share of a ~10 minute check (compiles included).
SETTINGS = {
  "full": {"lenet300": (100, 20, 60), "lenet5": (100, 5, 80), "vgg_d": (128, 1, 5)},
  "quick": {"lenet300": (16, 2, 3)},
  "gpu": {"lenet300": (100, 20, 30), "lenet5": (100, 10, 30), "vgg_d": (128, 5, 15)},
}


def torch_device() -> str:
  """Where PyTorch runs to compare with JAX: CUDA when JAX runs on a GPU, else the CPU."""
  return "cuda" if jax.default_backend() == "gpu" else "cpu"


def _torch_step(model: str, batch_size: int):
  """PyTorch's masked step for ``model`` on :func:`torch_device`, or why there is none."""
  try:
    import torch

    from benchmarks import torch_models
  except ImportError:
    return "PyTorch not installed"
  device = torch_device()
  if device == "cuda" and not torch.cuda.is_available():
    return "JAX runs on a GPU but this PyTorch has no CUDA device"
  return torch_models.make_step(model, batch_size, threads=os.cpu_count(), device=device)


def _measure(model: str, batch_size: int, steps: int, rounds: int) -> list[dict]:
  """The two rows of ``model``: masked / dense and ours / PyTorch."""
  rows = []
  work = common.Workload(model, batch_size)
  step = xla.jit(train.train_step, donate_argnums=0)
  fns = {
    "dense": common.stepper(step, work.dense_state(), work.batch, steps),
    "masked": common.stepper(step, work.masked_state(), work.batch, steps),
  }
  torch_step = _torch_step(model, batch_size)
  if not isinstance(torch_step, str):
    fns["pytorch"] = lambda: [torch_step() for _ in range(steps)]
  times = common.time_interleaved(fns, rounds)
  per_step = {k: [t / steps for t in v] for k, v in times.items()}
  seconds = {k: common.stats(v) for k, v in per_step.items()}
  setting = f"{model}, batch {batch_size}"
  rows.append(
    common.row(
      f"masked / dense step, {setting}",
      common.ratio_stats(per_step["masked"], per_step["dense"]),
      1.03,
      seconds={"masked": seconds["masked"], "dense": seconds["dense"]},
    )
  )
  if isinstance(torch_step, str):
    rows.append({"name": f"ours / PyTorch step, {setting}", "skipped": torch_step})
  else:
    rows.append(
      common.row(
        f"ours / PyTorch step, {setting}",
        common.ratio_stats(per_step["masked"], per_step["pytorch"]),
        1.0,
        seconds={"ours (masked)": seconds["masked"], "PyTorch": seconds["pytorch"]},
        pytorch_device=torch_device(),
      )
    )
  return rows


def run(quick: bool, gpu: bool = False) -> dict:
  """The section's result: its rows at the sizes of profile ``common.profile(quick, gpu)``."""
  rows = []
  for model, (batch_size, steps, rounds) in SETTINGS[common.profile(quick, gpu)].items():
    rows += _measure(model, batch_size, steps, rounds)
  return {"title": TITLE, "description": __doc__, "rows": rows}
