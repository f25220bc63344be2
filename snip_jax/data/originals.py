"""The original files of a dataset, told from any others by their size and SHA-256.

A dataset whose :class:`~snip_jax.data.specs.DatasetSpec` lists its ``originals`` (MNIST,
Fashion-MNIST) has each file checked when it is prepared:

* found in one of the spec's default source directories (where snip-jax's set-up, its fetcher
  or a system package put them), a file must be the original exactly, or the preparation is
  refused with one line naming the file, what is wrong and how to replace it: a cut-off or
  swapped copy there would quietly change every result;
* in a directory the user named (``source_dir``), a file that is not the original only draws a
  warning, since one may prepare a variant on purpose (the tests prepare small random files as
  ``mnist``).

Sizes are checked before anything is read (a plain file's size, a ``.gz`` file's size field),
the SHA-256 of the uncompressed bytes as :mod:`snip_jax.data.idx` reads them. Once every file
is the original, the prepared splits must hold the original example counts too.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from snip_jax.data.idx import Digests, FileDigest, uncompressed_size
from snip_jax.data.specs import DatasetSpec, OriginalFile

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


def in_default_dir(spec: DatasetSpec, directory: str | os.PathLike[str]) -> bool:
  """Whether ``directory`` is one of ``spec``'s default source directories (``~`` expanded,
  links resolved)."""
  here = os.path.realpath(os.path.expanduser(directory))
  return any(here == os.path.realpath(os.path.expanduser(d)) for d in spec.default_source_dirs)


def _original_of(spec: DatasetSpec, path: str) -> OriginalFile | None:
  """The original file that ``path`` (``name`` or ``name.gz``) stands for, if any."""
  name = os.path.basename(path).removesuffix(".gz")
  return next((o for o in spec.originals if o.name == name), None)


def _paths(found: Any) -> Iterator[tuple[str, str]]:
  """``(split, path)`` of every file in a source format's ``find`` answer (IDX: ``{split:
  (images, labels)}``; a single archive or folder is never one of the originals)."""
  if isinstance(found, Mapping):
    for split, paths in found.items():
      for path in paths:
        yield split, os.fspath(path)


def _fix(spec: DatasetSpec, directory: str) -> str:
  hint = spec.repair_hint.format(dir=directory) if spec.repair_hint else spec.install_hint
  return f"Nothing was prepared. To fix it, {hint}."


def check_sizes(spec: DatasetSpec, found: Any, directory: str) -> None:
  """Refuses, before anything is read, a file of ``found`` whose uncompressed size is not its
  original's: for files in a default source directory.

  Raises:
    ValueError: one line naming the file, its size and the original's, and the fix.
  """
  for _, path in _paths(found):
    original = _original_of(spec, path)
    if original is None:
      continue
    size = uncompressed_size(path)
    if size != original.size:
      raise ValueError(
        f"{path!r} holds {size:,} bytes uncompressed, not the {original.size:,} of "
        f"{spec.display_name}'s {original.name}: it is truncated or not the original "
        f"{spec.display_name}. {_fix(spec, directory)}"
      )


def _mismatch(original: OriginalFile, digest: FileDigest) -> str | None:
  """What differs between a file's digest and its original's, or ``None``."""
  if digest.size != original.size:
    return f"{digest.size:,} bytes uncompressed, not {original.size:,}"
  if digest.sha256 != original.sha256:
    return f"SHA-256 {digest.sha256[:16]}..., not {original.sha256[:16]}..."
  return None


def check_digests(
  spec: DatasetSpec, found: Any, digests: Digests, directory: str, strict: bool
) -> dict[str, int] | None:
  """Compares each file of ``found`` with its original, by the digests taken as it was read.

  Args:
    spec: the dataset's spec; nothing is checked if it lists no ``originals``.
    found: the source format's ``find`` answer.
    digests: ``{path: FileDigest}`` of the files read (:func:`snip_jax.data.idx.read_idx`).
    directory: where the files were found, for the messages.
    strict: refuse a file that is not the original (files of a default source directory);
      otherwise it is a warning.

  Returns:
    ``{tfds split: example count}`` of the originals when every file is the original (the
    counts the prepared splits must then hold), else ``None``.

  Raises:
    ValueError: ``strict`` and a file is not the original: one line naming the file, what
      differs and the fix.
  """
  if not spec.originals:
    return None
  counts: dict[str, int] | None = {}
  for split, path in _paths(found):
    original, digest = _original_of(spec, path), digests.get(path)
    if original is None:
      wrong = "not one of its files"
    elif digest is None:
      wrong = "not read"
    else:
      wrong = _mismatch(original, digest)
    if wrong is None:
      if counts is not None:
        counts[split] = original.examples
      continue
    counts = None
    if strict:
      raise ValueError(
        f"{path!r} is not the original {spec.display_name} file ({wrong}): it is truncated, "
        f"corrupt or not the original {spec.display_name}. {_fix(spec, directory)}"
      )
    log.warning(
      "%s is not the original %s file (%s): results will not be comparable to the paper's.",
      path,
      spec.display_name,
      wrong,
    )
  return counts or None


def file_digest(path: str | os.PathLike[str], max_bytes: int) -> FileDigest | None:
  """The :class:`FileDigest` of a file's uncompressed bytes (``.gz`` or plain), read as a
  stream; ``None`` if it holds more than ``max_bytes`` of them or cannot be read (a cut-off
  ``.gz``)."""
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  sha256, size = hashlib.sha256(), 0
  try:
    with opener(path, "rb") as f:
      while chunk := f.read(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
          return None
        sha256.update(chunk)
  except (OSError, EOFError, zlib.error):
    return None
  return FileDigest(size, sha256.hexdigest())


def is_original(path: str | os.PathLike[str], original: OriginalFile) -> bool:
  """Whether ``path`` (``.gz`` or plain) holds exactly ``original``'s bytes; read only when
  its size (a plain file's, a ``.gz`` file's size field) is right."""
  try:
    if uncompressed_size(path) != original.size:
      return False
  except OSError:
    return False
  digest = file_digest(path, original.size)
  return digest is not None and _mismatch(original, digest) is None
