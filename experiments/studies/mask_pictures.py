"""What SNIP keeps: LeNet-300-100's retained first-layer connections per input pixel.

What ``experiments/mask_pictures.py`` computes and draws: SNIP scores a freshly initialised
LeNet-300-100 (VS-H) on one batch of ``BATCH`` training images of a single class, and on as many
images of all classes; the exact global top-κ mask is taken at each sparsity, and the number of
the 300 first-layer connections each of the 784 input pixels keeps is drawn as a 28x28 image
(the paper's visualisation figure). One ``jax.grad`` per batch gives the scores of every
sparsity. :func:`measure` writes ``counts.npz`` (the counts, and each batch's mean image) and
``mask_pictures.json`` (settings, and per class and sparsity the correlation between the counts
and the mean image of the batch, over the 784 pixels); :func:`write_outputs` draws
``mask_pictures_<dataset>.png`` from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import runs
from studies import names

SPARSITIES = (0.1, 0.3, 0.5, 0.7, 0.9, 0.98)
QUICK_SPARSITIES = (0.5, 0.98)
BATCH = 100
FASHION_CLASSES = (
  "T-shirt",
  "trouser",
  "pullover",
  "dress",
  "coat",
  "sandal",
  "shirt",
  "sneaker",
  "bag",
  "boot",
)
CLASS_NAMES = {"fashion_mnist": FASHION_CLASSES, "mnist": tuple(str(d) for d in range(10))}
TITLES = names.DATASETS


def first_layer_counts(images, labels, sparsities, seed: int):
  """Per batch (all classes, then each class) and sparsity, kept connections per pixel.

  Returns:
    ``(counts [11, S, 28, 28] int32, mean_images [11, 28, 28] float32)``.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from snip_jax import models, selection, sensitivity

  model = models.get_model("lenet300", num_classes=10, init="vs_h")
  init_key, batch_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key, jnp.zeros((1, *images.shape[1:])))["params"]

  def loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, x), y)

  mean_loss = lambda p, x, y: jnp.mean(loss(p, x, y))  # noqa: E731
  score = jax.jit(lambda p, x, y: sensitivity.connection_sensitivity(mean_loss, p, x, y))
  order = np.asarray(jax.random.permutation(batch_key, len(labels)))
  batches = [order[:BATCH]] + [order[labels[order] == c][:BATCH] for c in range(10)]
  counts, means = [], []
  for idx in batches:
    scores = score(params, jnp.asarray(images[idx]), jnp.asarray(labels[idx]))
    per_sparsity = []
    for sparsity in sparsities:
      kernel = selection.top_k_mask(scores, sparsity)["Dense_0"]["kernel"]  # [784, 300]
      per_sparsity.append(np.asarray(kernel).sum(axis=1).reshape(images.shape[1:3]))
    counts.append(per_sparsity)
    means.append(images[idx].mean(axis=(0, 3)))
  return np.asarray(counts, np.int32), np.asarray(means, np.float32)


def correlations(counts, means) -> list[list[float]]:
  """Pearson correlation over pixels of each count image with its batch's mean image."""
  import numpy as np

  result = []
  for per_sparsity, mean in zip(counts, means, strict=True):
    row = []
    for c in per_sparsity:
      c = c.astype(np.float64).ravel()
      row.append(float(np.corrcoef(c, mean.ravel())[0, 1]) if c.std() > 0 else float("nan"))
    result.append(row)
  return result


def figure(counts, means, sparsities, dataset: str, path: Path) -> None:
  """Rows: the batch's mean image, then one row per sparsity; columns: all, then each class."""
  plt = runs.pyplot()

  names = ("all",) + CLASS_NAMES[dataset]
  rows, cols = 1 + len(sparsities), len(names)
  fig, axes = plt.subplots(rows, cols, figsize=(1.05 * cols, 1.1 * rows + 0.5), squeeze=False)
  for j, name in enumerate(names):
    axes[0, j].imshow(means[j], cmap="gray")
    axes[0, j].set_title(name, fontsize=8)
    for i, _ in enumerate(sparsities, start=1):
      # One scale per row (0 .. the row's largest count), so that 98% is as readable as 10%.
      axes[i, j].imshow(counts[j, i - 1], cmap="gray", vmin=0, vmax=max(1, counts[:, i - 1].max()))
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0, 0].set_ylabel("input", fontsize=8)
  for i, s in enumerate(sparsities, start=1):
    axes[i, 0].set_ylabel(f"{s:.0%}", fontsize=8)
  fig.suptitle(
    f"{TITLES[dataset]}: LeNet-300-100 first-layer connections kept per pixel by SNIP "
    "(rows: sparsity, each scaled to its largest count)",
    fontsize=9,
  )
  runs.save_figure(fig, path)


def write_outputs(out: Path) -> dict | None:
  """The figures from ``counts.npz`` and ``mask_pictures.json``; returns the JSON."""
  import numpy as np

  if not (out / "mask_pictures.json").exists():
    return None
  info = json.loads((out / "mask_pictures.json").read_text())
  arrays = np.load(out / "counts.npz")
  for dataset in info["datasets"]:
    figure(
      arrays[f"{dataset}_counts"],
      arrays[f"{dataset}_means"],
      info["sparsities"],
      dataset,
      out / f"mask_pictures_{dataset}.png",
    )
  return info


def measure(
  out: Path,
  datasets: Sequence[str],
  load: Callable[[str], tuple],
  sparsities: Sequence[float],
  seed: int,
  command: str,
) -> dict:
  """Counts and correlations of every dataset, written to ``out`` with their figures.

  Args:
    out: the output directory (it exists).
    datasets: dataset names, e.g. ``['fashion_mnist', 'mnist']``.
    load: ``load(dataset) -> (normalised images [N, 28, 28, 1], labels [N])``.
    sparsities: the sparsities of the masks.
    seed: of the initialisation and of the batches.
    command: the command that made them, recorded in ``mask_pictures.json``.

  Returns:
    The contents of ``mask_pictures.json``.
  """
  import numpy as np

  arrays, info = (
    {},
    {
      "command": command,
      "model": "lenet300",
      "init": "vs_h",
      "seed": seed,
      "batch": BATCH,
      "sparsities": list(sparsities),
      "groups": ["all", *range(10)],
      "datasets": list(datasets),
      "correlation_with_mean_image": {},
    },
  )
  for dataset in datasets:
    images, labels = load(dataset)
    counts, means = first_layer_counts(images, labels, sparsities, seed)
    arrays[f"{dataset}_counts"], arrays[f"{dataset}_means"] = counts, means
    info["correlation_with_mean_image"][dataset] = correlations(counts, means)
  np.savez_compressed(out / "counts.npz", **arrays)
  (out / "mask_pictures.json").write_text(json.dumps(info, indent=1) + "\n")
  write_outputs(out)
  return info
