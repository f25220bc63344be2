"""The datasets snip-jax knows: where their original files live, their shape, their splits."""

from __future__ import annotations

import dataclasses
import os

#: Our split names -> TFDS split strings. As in the paper, 10% of train is held out.
SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A dataset snip-jax can prepare offline from its original files, and how to feed it."""

  tfds_name: str
  num_classes: int
  #: How the original files look: a key of :data:`snip_jax.data.sources.SOURCE_FORMATS`
  #: (``'idx'`` or ``'cifar10'``).
  source_format: str
  #: Directories searched for the original files when no ``source_dir`` is given (``~`` is
  #: expanded).
  default_source_dirs: tuple[str, ...]
  #: How to get the original files on this kind of machine, for the error message.
  install_hint: str
  #: Shape of one image, ``(height, width, channels)``.
  image_shape: tuple[int, int, int] = (28, 28, 1)
  #: Class names written into the TFDS metadata, as ``tfds build`` does; empty when TFDS keeps
  #: the default names ``'0'``, ``'1'``, ...
  label_names: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
  "fashion_mnist": DatasetSpec(
    tfds_name="fashion_mnist",
    num_classes=10,
    source_format="idx",
    default_source_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="apt-get install -y dataset-fashion-mnist   (Debian/Ubuntu: installs the IDX "
    "files in /usr/share/datasets/fashion-mnist, found automatically)",
  ),
  "mnist": DatasetSpec(
    tfds_name="mnist",
    num_classes=10,
    source_format="idx",
    default_source_dirs=("/usr/share/datasets/mnist",),
    install_hint="copy the four original MNIST IDX files into /usr/share/datasets/mnist "
    "(searched by default)",
  ),
  "cifar10": DatasetSpec(
    tfds_name="cifar10",
    num_classes=10,
    source_format="cifar10",
    image_shape=(32, 32, 3),
    # tf.keras 2 keeps its download and the extracted cifar-10-batches-py/ in ~/.keras/datasets.
    default_source_dirs=("/usr/share/datasets/cifar-10", "~/.keras/datasets"),
    install_hint="download cifar-10-python.tar.gz or cifar-10-binary.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html (on any machine) into "
    "/usr/share/datasets/cifar-10 (searched by default)",
    label_names=(
      "airplane",
      "automobile",
      "bird",
      "cat",
      "deer",
      "dog",
      "frog",
      "horse",
      "ship",
      "truck",
    ),
  ),
}


class DataNotFoundError(FileNotFoundError):
  """The dataset is neither prepared nor preparable from local files."""


def get_spec(name: str) -> DatasetSpec:
  """The :class:`DatasetSpec` of ``name``; a ``ValueError`` lists the known names."""
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
  return DATASETS[name]


def check_split(split: str) -> None:
  """Raises a ``ValueError`` listing our split names unless ``split`` is one of them."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLITS)}.")


def shape_text(shape: tuple[int, ...]) -> str:
  """A shape for messages: ``28x28x1``."""
  return "x".join(str(d) for d in shape)


def default_data_dir() -> str:
  """TFDS's data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
