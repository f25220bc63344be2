"""What pruning costs, in dense train steps: SNIP's scoring and the top-κ selection.

* scoring: ``snip_jax.train.make_score_fn``, one ``jax.grad`` of the loss w.r.t. a ones-mask on
  one batch of the config's scoring batch size (jitted, compiled before timing);
* selection: :func:`snip_jax.selection.top_k_mask` at the config's sparsity, end to end as a
  run calls it (argument and finiteness checks, flattening, the exact global top-κ, the mask
  tree);
* the unit: one dense jitted train step of the same model and batch.

Goal: scoring + selection <= 1.5 dense steps for VGG-D (the other models are reported).
"""

from __future__ import annotations

from benchmarks import common
from snip_jax import selection, train, xla

TITLE = "Pruning cost: scoring and selection, in dense train steps"
#: profile (common.PROFILES) -> model -> (batch size, timed rounds).
SETTINGS = {
  "full": {"lenet300": (100, 30), "lenet5": (100, 20), "vgg_d": (128, 5)},
  "quick": {"lenet300": (16, 3)},
  "gpu": {"lenet300": (100, 30), "lenet5": (100, 20), "vgg_d": (128, 10)},
}
GOALS = {"vgg_d": 1.5}


def _measure(model: str, batch_size: int, rounds: int) -> list[dict]:
  """Scoring, selection and both, each over a dense step of ``model``."""
  rows = []
  work = common.Workload(model, batch_size)
  step = xla.jit(train.train_step, donate_argnums=0)
  score = train.make_score_fn(work.config, work.module.apply)
  filter_fn = train.filter_fn_for(work.config)
  scores = score(work.params, work.batch_stats, *work.batch)
  fns = {
    "dense step": common.stepper(step, work.dense_state(), work.batch),
    "scoring": lambda: score(work.params, work.batch_stats, *work.batch),
    "selection": lambda: selection.top_k_mask(scores, work.config.sparsity, filter_fn=filter_fn),
  }
  times = common.time_interleaved(fns, rounds)
  both = [a + b for a, b in zip(times["scoring"], times["selection"], strict=True)]
  setting = f"{model}, batch {batch_size}, sparsity {work.config.sparsity:g}"
  seconds = {k: common.stats(v) for k, v in times.items()}
  for name, values, goal in (
    ("scoring", times["scoring"], None),
    ("selection", times["selection"], None),
    ("scoring + selection", both, GOALS.get(model)),
  ):
    rows.append(
      common.row(
        f"{name} / dense step, {setting}",
        common.ratio_stats(values, times["dense step"]),
        goal,
        seconds={name: common.stats(values), "dense step": seconds["dense step"]},
      )
    )
  return rows


def run(quick: bool, gpu: bool = False) -> dict:
  """The section's result: its rows at the sizes of profile ``common.profile(quick, gpu)``."""
  rows = []
  for model, (batch_size, rounds) in SETTINGS[common.profile(quick, gpu)].items():
    rows += _measure(model, batch_size, rounds)
  return {"title": TITLE, "description": __doc__, "rows": rows}
