"""Batches cut from a :class:`~snip_jax.data.arrays.Split` in memory.

Training batches come in a seeded per-epoch shuffle and, for CIFAR-10, with the paper's
augmentation (random horizontal flips and translations by up to 4 pixels); evaluation batches
cover a split once, in order, padded to a fixed size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike

from snip_jax.data.arrays import Split


def augment_batch(
  images_BxHxWxC: np.ndarray, rng: np.random.Generator, max_shift: int = 4
) -> np.ndarray:
  """The paper's CIFAR augmentation: random horizontal flips and translations.

  Each example is mirrored left-right with probability 0.5, then shifted by integers ``dy`` and
  ``dx`` drawn independently and uniformly from ``[-max_shift, max_shift]``:
  ``out[y, x] = flipped[y - dy, x - dx]``, and 0 where that falls outside the image. On
  normalised inputs 0 is the channel mean, as with the authors' imgaug
  ``Affine(translate_px=(-4, 4))`` applied after normalisation.

  Vectorised, because it runs on the host for every training batch: the batch is zero-padded
  once and every output pixel gathered with one ``np.take``, with no Python loop over examples.

  Args:
    images_BxHxWxC: a batch of images, any dtype.
    rng: the generator the flips and shifts are drawn from.
    max_shift: the largest shift in pixels, along each axis.

  Returns:
    A new array of the same shape and dtype.
  """
  if images_BxHxWxC.ndim != 4:
    raise ValueError(f"Expected images [B, H, W, C], got shape {images_BxHxWxC.shape}.")
  if max_shift < 0:
    raise ValueError(f"max_shift={max_shift} must be >= 0.")
  B, H, W, C = images_BxHxWxC.shape
  s = max_shift
  Hp, Wp = H + 2 * s, W + 2 * s
  padded_BxHpxWpxC = np.zeros((B, Hp, Wp, C), images_BxHxWxC.dtype)
  padded_BxHpxWpxC[:, s : s + H, s : s + W] = images_BxHxWxC
  flip_B = rng.random(B) < 0.5
  shift_Bx2 = rng.integers(-s, s + 1, size=(B, 2))
  # Source coordinates in the (flipped) unpadded image, then shifted into the padded one.
  rows_BxH = np.arange(H) - shift_Bx2[:, :1] + s
  cols_BxW = np.arange(W) - shift_Bx2[:, 1:]
  cols_BxW = np.where(flip_B[:, None], W - 1 - cols_BxW, cols_BxW) + s
  flat_BxHxW = (np.arange(B)[:, None, None] * Hp + rows_BxH[:, :, None]) * Wp + cols_BxW[:, None]
  return np.take(padded_BxHpxWpxC.reshape(B * Hp * Wp, C), flat_BxHxW, axis=0)


def train_batches(
  split: Split, batch_size: int, seed: ArrayLike, augment: bool = False, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of shuffled full batches (the remainder is dropped, so shapes never change).

  Args:
    split: the training split.
    batch_size: examples per batch.
    seed: anything ``np.random.SeedSequence`` takes (the train loop passes the key data of
      ``fold_in(data_key, epoch)``); the order and the augmentation depend only on it.
    augment: apply :func:`augment_batch` to every batch (``config.augment``; the CIFAR-10
      configs turn it on, as the paper does). Batch ``b`` draws its flips and shifts from a
      generator of its own (``seed`` spawned with key ``b``), so skipping batches is free.
    start: skip the first ``start`` batches of the epoch (a resumed run starts mid-epoch); the
      batches that follow are exactly those of the full epoch.
  """
  if not 0 < batch_size <= len(split):
    raise ValueError(f"batch_size={batch_size} must be in [1, {len(split)}] (the split size).")
  seed_sequence = np.random.SeedSequence(seed)
  order = np.random.default_rng(seed_sequence).permutation(len(split))
  for b in range(start, len(order) // batch_size):
    idx = order[b * batch_size : (b + 1) * batch_size]
    images = split.images[idx]
    if augment:
      batch_seed = np.random.SeedSequence(seed_sequence.entropy, spawn_key=(b,))
      images = augment_batch(images, np.random.default_rng(batch_seed))
    yield images, split.labels[idx]


def eval_batches(
  split: Split, batch_size: int, num_batches: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Every example once, in order, as ``(images, labels, weights)`` of a fixed batch size.

  The last batch is padded with copies of example 0 whose weight is 0, so one compiled eval
  step serves the whole split. ``num_batches`` (at least enough for the split) pads with more
  weight-0 batches: in a multi-process run every process must take the same number of steps.
  """
  n = len(split)
  num_batches = -(-n // batch_size) if num_batches is None else num_batches
  if num_batches * batch_size < n:
    raise ValueError(f"{num_batches} batches of {batch_size} cannot hold {n} examples.")
  for start in range(0, num_batches * batch_size, batch_size):
    idx = np.arange(start, start + batch_size)
    weights = (idx < n).astype(np.float32)
    idx = np.where(idx < n, idx, 0)
    yield split.images[idx], split.labels[idx], weights
