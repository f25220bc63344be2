"""Measures every model of the paper on this machine and writes the README's model table.

  python experiments/model_zoo.py                  # ~20 min on a 2-core CPU
  python experiments/model_zoo.py --models=lenet300,vgg_d --reps=5

For each model, with its paper config (experiments/configs/<model>_<dataset>.py): the parameter
count against the paper's, the prunable count and the connections kept at the config's
sparsity, the time of SNIP's scoring (one ``jax.grad`` w.r.t. the mask, on a batch of
``score_batch_size``) and of the global top-κ selection, and the time of one masked train step
at ``batch_size``. Times are medians over ``--reps`` runs after a compiling run, measured on
random inputs of the model's input shape (the time does not depend on the pixel values); the
compile time of the first run is reported too. For CIFAR-10 it also times the input pipeline
(cutting a batch of 128 from the in-memory training set and augmenting it) against the
fastest CIFAR-10 train step.

Raw results go to results/model_zoo/models.json; the table between the model-zoo markers in
README.md is rewritten from them.
"""

import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from report import machine, replace_block
from snip_jax import data, masks, models, selection, train, xla

ROOT = Path(__file__).resolve().parents[1]
_OUT = flags.DEFINE_string("out", str(ROOT / "results" / "model_zoo"), "Output directory.")
_README = flags.DEFINE_string("readme", str(ROOT / "README.md"), "README to update.")
_MODELS = flags.DEFINE_list("models", list(models.MODELS), "Models to measure.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions after the compiling run.")


def paper_config(name: str):
  """The config of the paper's row for model ``name``, and its file's name."""
  module = f"{name}_{models.get_spec(name).paper_dataset}"
  return train.load_config(Path(__file__).parent / "configs" / f"{module}.py"), module


def timed(fn, reps: int) -> tuple[float, float]:
  """``(seconds of the first call, median seconds of the next reps calls)``."""
  times = []
  for _ in range(reps + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times[0], statistics.median(times[1:])


def measure(name: str, reps: int) -> dict:
  config, module = paper_config(name)
  spec = models.get_spec(name)
  model = models.get_model(name, init=config.init)
  init_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 3)
  variables = jax.jit(model.init)(init_key, jnp.zeros((1, *spec.input_shape)))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  filter_fn = train.filter_fn_for(config)

  def batch(size):
    images = jax.random.normal(data_key, (size, *spec.input_shape))
    return images, jax.random.randint(data_key, (size,), 0, 10)

  score = train.make_score_fn(config, model.apply)
  images, labels = batch(config.score_batch_size)
  score_compile, score_s = timed(lambda: score(params, batch_stats, images, labels), reps)
  scores = score(params, batch_stats, images, labels)
  select = lambda: selection.top_k_mask(scores, config.sparsity, filter_fn=filter_fn)  # noqa: E731
  select_first, select_s = timed(select, reps)
  mask = select()
  rows = masks.layer_summary(mask, filter_fn, params=params)

  state = train.create_train_state(
    model, params, mask, train.make_optimizer(config), step_key, batch_stats
  )
  step = xla.jit(train.train_step, donate_argnums=0)
  train_batch = batch(config.batch_size)

  def one_step():
    nonlocal state
    state, metrics = step(state, train_batch)
    return metrics

  step_compile, step_s = timed(one_step, reps)
  return {
    "model": name,
    "config": f"experiments/configs/{module}.py",
    "num_params": sum(int(np.size(p)) for p in jax.tree.leaves(params)),
    "paper_params": spec.paper_params,
    "num_prunable": masks.count_prunable(params, filter_fn),
    "sparsity": config.sparsity,
    "num_kept": sum(r["kept"] for r in rows),
    "collapsed_layers": masks.collapsed_layers(rows),
    "score_batch_size": config.score_batch_size,
    "score_seconds": score_s,
    "score_first_call_seconds": score_compile,
    "select_seconds": select_s,
    "select_first_call_seconds": select_first,
    "batch_size": config.batch_size,
    "train_step_seconds": step_s,
    "train_step_first_call_seconds": step_compile,
  }


def measure_cifar_pipeline(reps: int) -> dict:
  """Seconds to cut one shuffled batch of 128 from a 45,000-image training set and augment it."""
  rng = np.random.default_rng(0)
  split = data.Split(
    rng.standard_normal((45_000, 32, 32, 3), np.float32), np.zeros(45_000, np.int32)
  )
  batches = data.train_batches(split, 128, seed=0, augment=True)
  times = []
  for _ in range(max(reps, 20) + 1):
    t0 = time.perf_counter()
    next(batches)
    times.append(time.perf_counter() - t0)
  return {"batch_size": 128, "augment": True, "seconds_per_batch": statistics.median(times[1:])}


def ms(seconds: float) -> str:
  return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def paper_size(count: int) -> str:
  """The paper's rounded style: 267k, 5.1M."""
  return f"{count / 1e3:.0f}k" if count < 1e6 else f"{count / 1e6:.1f}M"


def table(results: dict) -> str:
  lines = [
    "| model | params (ours) | paper | Δ | prunable | sparsity | kept | SNIP scoring | "
    "top-κ selection | train step |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in results["models"]:
    delta = r["num_params"] / r["paper_params"] - 1
    lines.append(
      f"| `{r['model']}` | {r['num_params']:,} | {paper_size(r['paper_params'])} | {delta:+.1%} | "
      f"{r['num_prunable']:,} | {r['sparsity']:.0%} | {r['num_kept']:,} | "
      f"{ms(r['score_seconds'])} (b{r['score_batch_size']}) | {ms(r['select_seconds'])} | "
      f"{ms(r['train_step_seconds'])} (b{r['batch_size']}) |"
    )
  lines.append("")
  pipeline = results.get("cifar10_pipeline")
  if pipeline:
    cifar_steps = [r["train_step_seconds"] for r in results["models"] if "cifar10" in r["config"]]
    if cifar_steps:
      lines.append(
        f"CIFAR-10 input pipeline: {ms(pipeline['seconds_per_batch'])} to cut and augment a "
        f"batch of {pipeline['batch_size']} on the host, against {ms(min(cifar_steps))} for "
        "the fastest CIFAR-10 train step above (the host prepares the next batch while the "
        "device runs the step: dispatch is asynchronous)."
      )
      lines.append("")
  lines.append(
    f"Produced by `{results['command']}` on {results['machine']} (JAX {results['jax']}, "
    f"{results['backend']}); medians of {results['reps']} runs after a compiling run, on random "
    "inputs; raw numbers (with compile times) in `results/model_zoo/models.json`."
  )
  return "\n".join(lines)


def main(argv):
  del argv
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  results = {
    "command": "python experiments/model_zoo.py",
    "machine": machine(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "reps": _REPS.value,
    "models": [],
  }
  for name in _MODELS.value:
    t0 = time.perf_counter()
    results["models"].append(measure(name, _REPS.value))
    print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
  results["cifar10_pipeline"] = measure_cifar_pipeline(_REPS.value)
  (out / "models.json").write_text(json.dumps(results, indent=2) + "\n")
  replace_block(Path(_README.value), "model-zoo", table(results))
  print(table(results))


if __name__ == "__main__":
  app.run(main)
