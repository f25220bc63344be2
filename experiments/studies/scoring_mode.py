"""Scoring mode on a model of one's own with BatchNorm and Dropout: how far it moves the mask.

What ``experiments/scoring_mode.py`` measures. A small CNN written as a user would write it
(:class:`ConvNet`: two Conv-BatchNorm-ReLU-pool blocks, Dropout, two Dense layers), freshly
initialised (seed ``s``), is scored by SNIP on Fashion-MNIST training batches in three modes
(:data:`MODES`):

* ``inference``: batch norm with its running statistics, which at initialisation are mean 0 and
  variance 1 (so it is the identity), dropout off. The authors' code and our runs' default.
* ``batch_stats``: batch norm normalises with the scoring batch's statistics, dropout off.
* ``train``: the training forward pass, batch statistics and dropout (with a dropout key).

Per seed and sparsity, the intersection over union of the kept sets (:data:`PAIRS`): between
modes on one batch, and the references of how far noise alone moves a mask (one mode on two
batches, two dropout keys on one batch). Then every mask (and the dense network) trains for
``epochs`` with the masked optimizer, and its test accuracy is recorded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import runs
import snip_jax

MODES = ("inference", "batch_stats", "train")
#: ``(name, (mode, batch, dropout key), (mode, batch, dropout key))``: the masks compared.
PAIRS = (
  ("inference vs batch_stats", ("inference", 0, 0), ("batch_stats", 0, 0)),
  ("batch_stats vs train", ("batch_stats", 0, 0), ("train", 0, 0)),
  ("inference vs train", ("inference", 0, 0), ("train", 0, 0)),
  ("inference, two batches", ("inference", 0, 0), ("inference", 1, 0)),
  ("batch_stats, two batches", ("batch_stats", 0, 0), ("batch_stats", 1, 0)),
  ("train, two dropout keys", ("train", 0, 0), ("train", 0, 1)),
)
SPARSITIES = (0.9, 0.98)
SCORE_BATCH = 100
#: Training: momentum SGD, batch 100, a constant learning rate.
BATCH, LEARNING_RATE, MOMENTUM = 100, 0.05, 0.9
EPOCHS, SEEDS = 3, 3
#: One line per seed in the output directory (read with ``runs.read_records(out, RECORDS_FILE)``).
RECORDS_FILE = "records.jsonl"
QUICK = {"epochs": 1, "train_examples": 1_000, "seeds": 1, "sparsities": (0.9,)}


class ConvNet(nn.Module):
  """A user's CNN for 28x28x1 images: Conv-BatchNorm-ReLU-pool twice, Dropout, Dense twice."""

  @nn.compact
  def __call__(self, x, *, batch_stats: bool = False, dropout: bool = False):
    for features in (16, 32):
      x = nn.Conv(features, (3, 3), use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not batch_stats)(x))
      n, h, w, c = x.shape
      x = x.reshape(n, h // 2, 2, w // 2, 2, c).max((2, 4))  # 2x2 max pool.
    x = nn.Dropout(0.5, deterministic=not dropout)(x.reshape(len(x), -1))
    x = nn.Dropout(0.5, deterministic=not dropout)(nn.relu(nn.Dense(128)(x)))
    return nn.Dense(10)(x)


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def scoring_loss(mode: str, batch_stats, dropout_key) -> Callable:
  """``loss(params, images, labels)`` as ``mode`` computes it (updated statistics discarded)."""
  model = ConvNet()

  def loss(params, images, labels):
    variables = {"params": params, "batch_stats": batch_stats}
    if mode == "inference":
      return _cross_entropy(model.apply(variables, images), labels)
    logits, _ = model.apply(
      variables,
      images,
      batch_stats=True,
      dropout=mode == "train",
      rngs={"dropout": dropout_key},
      mutable=["batch_stats"],
    )
    return _cross_entropy(logits, labels)

  return loss


def masks_of_seed(train_split, seed: int, sparsities: Sequence[float]) -> tuple[dict, dict]:
  """The initial variables and ``{(mode, batch, key, sparsity): mask}`` of one seed."""
  init_key, data_key = jax.random.split(jax.random.key(seed))
  variables = ConvNet().init(init_key, jnp.zeros((1, 28, 28, 1)))
  order = np.random.default_rng(seed).permutation(len(train_split))
  batches = [
    (train_split.images[idx], train_split.labels[idx])
    for idx in (order[:SCORE_BATCH], order[SCORE_BATCH : 2 * SCORE_BATCH])
  ]
  wanted = {a for _, a, _ in PAIRS} | {b for _, _, b in PAIRS}
  result = {}
  for mode, batch, key in sorted(wanted):
    dropout_key = jax.random.fold_in(data_key, key)
    loss = scoring_loss(mode, variables["batch_stats"], dropout_key)
    scores = snip_jax.connection_sensitivity(loss, variables["params"], *batches[batch])
    for sparsity in sparsities:
      result[mode, batch, key, sparsity] = snip_jax.top_k_mask(scores, sparsity)
  return variables, result


def train_accuracy(variables, mask, splits, epochs: int, seed: int, train_examples: int) -> float:
  """Test accuracy after ``epochs`` of masked momentum SGD (``mask=None``: dense)."""
  model = ConvNet()
  params, batch_stats = variables["params"], variables["batch_stats"]
  inner = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
  if mask is not None:
    params = snip_jax.apply_mask(params, mask)
  tx = inner if mask is None else snip_jax.masked(inner, mask)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, images, labels, key):
    def loss(p):
      logits, updates = model.apply(
        {"params": p, "batch_stats": batch_stats},
        images,
        batch_stats=True,
        dropout=True,
        rngs={"dropout": key},
        mutable=["batch_stats"],
      )
      return _cross_entropy(logits, labels), updates["batch_stats"]

    grads, batch_stats = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  @jax.jit
  def correct(params, batch_stats, images, labels):
    logits = model.apply({"params": params, "batch_stats": batch_stats}, images)
    return jnp.sum(jnp.argmax(logits, -1) == labels)

  train = splits["train"]
  n = min(train_examples, len(train))
  dropout_key = jax.random.key(10_000 + seed)
  for epoch in range(epochs):
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for b in range(n // BATCH):
      idx = order[b * BATCH : (b + 1) * BATCH]
      key = jax.random.fold_in(dropout_key, epoch * n + b)
      params, batch_stats, opt_state = step(
        params, batch_stats, opt_state, train.images[idx], train.labels[idx], key
      )
  if mask is not None:  # The guarantee the library makes, checked on every run.
    assert snip_jax.sparsity(params) == snip_jax.sparsity(mask)
  test = splits["test"]
  hits = sum(
    int(correct(params, batch_stats, test.images[i : i + 1000], test.labels[i : i + 1000]))
    for i in range(0, len(test), 1000)
  )
  return hits / len(test)


def measure_seed(splits, seed: int, epochs: int, train_examples: int, sparsities) -> dict:
  """One seed's record: the overlaps of :data:`PAIRS` and the test accuracies."""
  start = time.perf_counter()
  variables, found = masks_of_seed(splits["train"], seed, sparsities)
  record: dict[str, Any] = {"seed": seed, "iou": {}, "sparsity": {}, "test_accuracy": {}}
  for sparsity in sparsities:
    key = f"{sparsity:g}"
    record["iou"][key] = {
      name: snip_jax.overlap(found[(*a, sparsity)], found[(*b, sparsity)])["total"]
      for name, a, b in PAIRS
    }
    record["sparsity"][key] = snip_jax.sparsity(found["inference", 0, 0, sparsity])
    for mode in MODES:
      record["test_accuracy"][f"{mode} {key}"] = train_accuracy(
        variables, found[mode, 0, 0, sparsity], splits, epochs, seed, train_examples
      )
  record["test_accuracy"]["dense"] = train_accuracy(
    variables, None, splits, epochs, seed, train_examples
  )
  record["seconds"] = time.perf_counter() - start
  return record


def summarise(records: Sequence[dict], info: dict) -> dict:
  """Mean and sample standard deviation over seeds (:class:`runs.Stat`) of every overlap and
  accuracy."""

  def stat(values):
    return dataclasses.asdict(runs.Stat.of(values))

  first = records[0]
  return {
    **info,
    "seeds": [r["seed"] for r in records],
    "iou": {
      sparsity: {name: stat(r["iou"][sparsity][name] for r in records) for name in pairs}
      for sparsity, pairs in first["iou"].items()
    },
    "random_iou": {s: (1 - float(s)) / (1 + float(s)) for s in first["iou"]},
    "test_accuracy": {
      name: stat(r["test_accuracy"][name] for r in records) for name in first["test_accuracy"]
    },
  }


def table(summary: dict) -> str:
  """The README block: overlaps and accuracies per sparsity, with where they come from."""
  sparsities = list(summary["iou"])
  head = " | ".join(f"IoU at {float(s):.0%}" for s in sparsities)
  lines = [f"| masks compared | {head} |", "|---|" + "---|" * len(sparsities)]
  for name in summary["iou"][sparsities[0]]:
    cells = " | ".join(f"{summary['iou'][s][name]['mean']:.2f}" for s in sparsities)
    lines.append(f"| {name} | {cells} |")
  cells = " | ".join(f"{summary['random_iou'][s]:.3f}" for s in sparsities)
  lines += [f"| two random masks | {cells} |", ""]
  lines += [
    f"| scored in | test accuracy at {' | '.join(f'{float(s):.0%}' for s in sparsities)} |",
    "|---|" + "---|" * len(sparsities),
  ]
  accuracy = summary["test_accuracy"]
  for mode in MODES:
    cells = " | ".join(
      f"{accuracy[f'{mode} {s}']['mean']:.2%} ± {accuracy[f'{mode} {s}']['std']:.2%}"
      for s in sparsities
    )
    lines.append(f"| {mode} | {cells} |")
  dense = accuracy["dense"]
  lines += [
    f"| (dense) | {dense['mean']:.2%} ± {dense['std']:.2%} |" + " |" * (len(sparsities) - 1),
    "",
    f"Means over {len(summary['seeds'])} seeds (± their sample standard deviation), each trained "
    f"{summary['epochs']} epochs; produced by `{summary['command']}` on {summary['machine']} "
    f"(JAX {summary['jax']}); raw files in `results/scoring_mode/`.",
  ]
  return "\n".join(lines)
