"""Reading a snip-jax-sparse file back: dense (bit for bit) or with BCOO weight matrices.

Everything the format promises is checked before it is trusted; a file that breaks a promise
is an :class:`~snip_jax.export.format.ExportError` naming the fix.

Nothing is allocated on a crafted file's word alone. Before any array's data is read, the
reader checks, in this order: the zip's directory (each array once); the manifest (read only
if its zip entry declares at most :data:`MAX_MANIFEST_BYTES`); every leaf it declares (shape,
dtype, layout, ``nnz``) and that they hold at most ``max_elements`` (:data:`MAX_ELEMENTS`)
elements in all; ``like=`` when given (so that a file cannot declare more than the model
holds); the zip's arrays against the manifest's; each array's ``.npy`` header against the
manifest; and its zip entry's size against its header. Only then is its data read, in bounded
pieces, and a member that decompresses to more bytes than its zip entry declares (a zip bomb)
is refused at the first extra byte.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from snip_jax import files, trees
from snip_jax.export.format import (
  COLLECTIONS,
  FIX,
  FORMAT,
  MANIFEST,
  VERSION,
  Exported,
  ExportError,
  matrix_shape,
)

PyTree = Any

#: The most elements the leaves of an export may declare, all together (the default of
#: ``max_elements=``): 8 GiB of float32, 125 times the largest model of snip-jax's zoo
#: (WRN-22-8, 17.2M params), and the most for which every coordinate of a leaf fits the int32
#: indices of :func:`load_sparse`'s BCOO. It bounds what a file read without ``like=`` can make
#: the reader allocate; with ``like=``, the model's own sizes do.
MAX_ELEMENTS = 2**31
#: The most bytes the manifest's zip entry may declare: a manifest takes about 600 bytes a leaf
#: (JSON as UTF-32) plus its config, so 16 MiB is over twenty thousand leaves.
MAX_MANIFEST_BYTES = 16 * 2**20
_NPY_HEADER_BYTES = 10_000  # NumPy's own limit on a .npy header (numpy.lib.format).
_NPY_PREFIX_BYTES = 8 + 4 + _NPY_HEADER_BYTES  # Magic and version, header length, header.
_PIECE_BYTES = 16 * 2**20  # An array's data is read in pieces of at most this size.
_MAX_NDIM = 64  # NumPy's limit on an array's dimensions.
# A leaf path's longest and deepest: Flax's are a few parts deep, and jax.tree recurses into
# each part (and a message names the path).
_MAX_PATH, _MAX_DEPTH = 1024, 64
_LAYOUTS = ("dense", "csr")
_CSR_PARTS = ("indptr", "indices", "values")


def _fail(path: str, what: str) -> ExportError:
  return ExportError(f"{path}: {what}. {FIX}")


def _corrupt(path: str, why: object) -> ExportError:
  return _fail(path, f"not a readable .npz export, truncated or corrupt ({why})")


@contextmanager
def _reading(path: str) -> Iterator[None]:
  """Turns the errors of reading a broken zip or ``.npy`` into an :class:`ExportError`."""
  try:
    yield
  except ExportError:
    raise
  except files.ZIP_ERRORS as e:
    raise _corrupt(path, e) from None


def _brief(value: object, limit: int = 200) -> str:
  """``repr(value)``, cut at ``limit`` characters (a crafted manifest's strings can be long)."""
  text = repr(value)
  return text if len(text) <= limit else f"{text[:limit]}..."


@dataclasses.dataclass(frozen=True)
class _Header:
  """What an array's ``.npy`` header declares; its data starts ``offset`` bytes into its
  member."""

  name: str
  shape: tuple[int, ...]
  fortran_order: bool
  dtype: np.dtype
  offset: int


class _Archive:
  """The arrays of an ``.npz`` (a zip of ``.npy`` files), each read only as far as checked."""

  def __init__(self, path: str, zip_file: zipfile.ZipFile):
    self.path, self.zip = path, zip_file
    self.members: dict[str, zipfile.ZipInfo] = {}
    for info in zip_file.infolist():
      name = info.filename.removesuffix(".npy")  # The array's name, as np.load gives it.
      if name in self.members:
        raise _fail(path, f"its zip holds the array {_brief(name)} twice")
      self.members[name] = info

  def header(self, name: str) -> _Header:
    """The ``.npy`` header of the array ``name``, read from at most its first 10 KB."""
    info = self.members[name]
    with _reading(self.path):
      with self.zip.open(info) as member:
        stream = io.BytesIO(member.read(min(info.file_size, _NPY_PREFIX_BYTES)))
      version = np.lib.format.read_magic(stream)
      if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(stream, _NPY_HEADER_BYTES)
      elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(stream, _NPY_HEADER_BYTES)
      else:
        raise _corrupt(self.path, f"{name!r} is a .npy of version {version}, not 1.0 or 2.0")
    shape, fortran_order, dtype = header
    return _Header(name, tuple(shape), bool(fortran_order), dtype, stream.tell())

  def check_size(self, header: _Header) -> int:
    """The bytes of the array of ``header``, once its zip entry is seen to declare exactly
    those after the header."""
    info = self.members[header.name]
    nbytes = header.dtype.itemsize * math.prod(header.shape)
    if info.file_size != header.offset + nbytes:
      raise _fail(
        self.path,
        f"the zip entry of {header.name!r} declares {info.file_size} bytes, its .npy header "
        f"{header.offset + nbytes}",
      )
    return nbytes

  def data(self, header: _Header) -> np.ndarray:
    """The array of ``header``, read in pieces; no more bytes than its zip entry declares."""
    info, name, nbytes = self.members[header.name], header.name, self.check_size(header)
    # zipfile stops a member at its declared size: allowing one byte more shows one that holds
    # more (a zip bomb declares little and decompresses to much), which is refused. zipfile
    # checks no CRC-32 for a ZipInfo without one (it would fail on that extra byte first, with
    # a less clear message): this reader checks it.
    probe = copy.copy(info)
    probe.file_size += 1
    del probe.CRC
    data = bytearray(nbytes)
    view, done = memoryview(data), 0
    with _reading(self.path), self.zip.open(probe) as member:
      crc = zlib.crc32(member.read(header.offset))
      while done < nbytes:
        piece = member.read(min(_PIECE_BYTES, nbytes - done))
        if not piece:
          raise _corrupt(self.path, f"{name!r} ends after {done} of its {nbytes} bytes")
        view[done : done + len(piece)] = piece
        done += len(piece)
        crc = zlib.crc32(piece, crc)
      if member.read(1):
        raise _fail(
          self.path,
          f"{name!r} decompresses to more than the {info.file_size} bytes its zip entry declares",
        )
    if crc != info.CRC:
      raise _corrupt(self.path, f"bad CRC-32 for {name!r}")
    array = np.frombuffer(data, header.dtype) if nbytes else np.zeros(0, header.dtype)
    return array.reshape(header.shape, order="F" if header.fortran_order else "C")


@dataclasses.dataclass(frozen=True)
class _Leaf:
  """One manifest entry, checked."""

  collection: str
  path: str
  shape: tuple[int, ...]
  dtype: np.dtype
  layout: str
  nnz: int

  @property
  def name(self) -> str:
    return f"{self.collection}/{self.path}"

  @property
  def arrays(self) -> list[str]:
    """The names of the arrays that hold it."""
    if self.layout == "dense":
      return [self.name]
    return [f"{self.name}/{part}" for part in _CSR_PARTS]


def _manifest(path: str, archive: _Archive) -> dict[str, Any]:
  if MANIFEST not in archive.members:
    raise _fail(path, f"no {MANIFEST!r} entry: not a snip-jax sparse export")
  declared = archive.members[MANIFEST].file_size
  if declared > MAX_MANIFEST_BYTES:
    raise _fail(
      path,
      f"its zip entry {MANIFEST!r} declares {declared} bytes, more than the "
      f"{MAX_MANIFEST_BYTES} a manifest may take",
    )
  header = archive.header(MANIFEST)
  if header.dtype.kind != "U" or header.dtype.itemsize == 0 or header.shape != ():
    raise _fail(
      path, f"its manifest is not valid JSON (a {header.dtype} array of shape {header.shape})"
    )
  text = archive.data(header)[()]
  try:
    manifest = json.loads(str(text))
  except (TypeError, ValueError, RecursionError) as e:
    raise _fail(path, f"its manifest is not valid JSON ({_brief(str(e))})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise _fail(path, f"not a {FORMAT!r} file")
  if manifest.get("version") != VERSION:
    raise _fail(
      path,
      f"format version {_brief(manifest.get('version'))}; this snip-jax reads version {VERSION} "
      "(use the snip-jax that wrote it)",
    )
  return manifest


def _dtype(path: str, name: str, dtype_name: str) -> np.dtype:
  """The dtype a leaf declares: NumPy's numeric ones, and ``ml_dtypes`` (``bfloat16``)."""
  try:
    dtype = jnp.dtype(dtype_name)
  except (TypeError, ValueError):
    raise _fail(path, f"{name!r} has an unknown dtype {_brief(dtype_name)}") from None
  numeric = dtype.kind in "biufc" or (
    dtype.kind == "V" and dtype.names is None and dtype.type.__module__ == "ml_dtypes"
  )
  if not numeric or dtype.itemsize == 0:
    raise _fail(path, f"{name!r} has dtype {_brief(dtype_name)}, not a numeric one")
  return dtype


def _leaf(path: str, entry: Any) -> _Leaf:
  """One manifest entry as a :class:`_Leaf`, its fields' types and values checked."""
  fields = ("collection", "path", "shape", "dtype", "layout", "nnz")
  try:
    collection, leaf_path, shape, dtype_name, layout, nnz = (entry[f] for f in fields)
  except (KeyError, TypeError, IndexError):
    raise _fail(path, f"malformed manifest entry {_brief(entry)}") from None
  well_typed = (
    all(isinstance(s, str) for s in (collection, leaf_path, dtype_name, layout))
    and isinstance(shape, list)
    and all(type(n) is int for n in shape)  # Not bool, nor float.
    and type(nnz) is int
  )
  if not well_typed:
    raise _fail(path, f"malformed manifest entry {_brief(entry)}")
  if collection not in COLLECTIONS:
    raise _fail(path, f"unknown collection {_brief(collection)} in the manifest")
  if len(leaf_path) > _MAX_PATH or leaf_path.count("/") >= _MAX_DEPTH:
    raise _fail(
      path, f"the leaf path {_brief(leaf_path)} is over {_MAX_PATH} characters or {_MAX_DEPTH} deep"
    )
  name = f"{collection}/{leaf_path}"
  if layout not in _LAYOUTS:
    raise _fail(path, f"{name!r} has an unknown layout {_brief(layout)}")
  dtype = _dtype(path, name, dtype_name)
  if len(shape) > _MAX_NDIM:
    raise _fail(path, f"{name!r} declares {len(shape)} dimensions, NumPy holds {_MAX_NDIM}")
  if any(n < 0 for n in shape) or nnz < 0:
    raise _fail(path, f"{name!r} declares shape {shape} and {nnz} values: negative sizes")
  return _Leaf(collection, leaf_path, tuple(shape), dtype, layout, nnz)


def _too_large(path: str, what: str, max_elements: int) -> ExportError:
  return ExportError(
    f"{path}: {what}, above the reader's cap of max_elements={max_elements:,}; if the model "
    "really is that large, pass a larger max_elements= to load_dense or load_sparse."
  )


def _leaves(path: str, manifest: dict[str, Any], max_elements: int) -> list[_Leaf]:
  """The manifest's leaves, checked against each other and against ``max_elements``."""
  entries = manifest.get("leaves")
  if not isinstance(entries, list):
    raise _fail(path, "the manifest lists no leaves")
  leaves, names, total = [], set(), 0
  for entry in entries:
    leaf = _leaf(path, entry)
    if leaf.name in names:
      raise _fail(path, f"the manifest lists {leaf.name!r} twice")
    names.add(leaf.name)
    if any(n > max_elements for n in leaf.shape):
      raise _too_large(path, f"{leaf.name!r} declares shape {list(leaf.shape)}", max_elements)
    size = math.prod(leaf.shape)
    total += size
    if total > max_elements:
      raise _too_large(
        path,
        f"its leaves declare {total:,} elements or more (shape {list(leaf.shape)} of "
        f"{leaf.name!r})",
        max_elements,
      )
    if leaf.layout == "csr" and leaf.nnz > size:
      raise _fail(
        path,
        f"{leaf.name!r} declares {leaf.nnz} stored values, more than the {size} of its shape "
        f"{list(leaf.shape)}",
      )
    leaves.append(leaf)
  ordered = sorted(names)
  for name in ordered:  # A leaf "a/b" beside "a/b/c" cannot be nested (and bisect finds it).
    below = bisect.bisect_left(ordered, f"{name}/")
    if below < len(ordered) and ordered[below].startswith(f"{name}/"):
      raise _fail(path, f"the manifest lists {name!r} both as a leaf and as a module of leaves")
  return leaves


def _check_arrays(path: str, archive: _Archive, leaves: list[_Leaf]) -> None:
  """The zip holds exactly the arrays of ``leaves`` (and the manifest)."""
  listed = {name for leaf in leaves for name in leaf.arrays}
  for leaf in leaves:
    for name in leaf.arrays:
      if name not in archive.members:
        raise _fail(path, f"the array {name!r} is missing")
  extra = sorted(set(archive.members) - listed - {MANIFEST})
  if extra:
    shown = _brief(extra[:5], 1000) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
    raise _fail(path, f"it has arrays its manifest does not list: {shown}")


def _check_stored(path: str, name: str, stored: np.dtype, dtype: np.dtype) -> None:
  """``stored`` is how NumPy stores ``dtype``: itself, or its raw bits (``bfloat16``)."""
  if dtype.kind in "biufc":
    if stored != dtype:
      raise _fail(path, f"{name!r} is stored as {stored}, the manifest says {dtype}")
  elif stored.kind != "u" or stored.itemsize != dtype.itemsize:
    raise _fail(path, f"{name!r} holds {stored}, not the raw bits of {dtype}")


def _restore(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
  return values if dtype.kind in "biufc" else values.view(dtype)


def _headers(path: str, archive: _Archive, leaf: _Leaf) -> list[_Header]:
  """The ``.npy`` headers of ``leaf``'s arrays, checked against the manifest, and their zip
  entries' sizes against them."""
  name, shape, dtype, nnz = leaf.name, leaf.shape, leaf.dtype, leaf.nnz
  headers = [archive.header(array) for array in leaf.arrays]
  if leaf.layout == "dense":
    (header,) = headers
    _check_stored(path, name, header.dtype, dtype)
    if header.shape != shape:
      raise _fail(path, f"{name!r} has shape {header.shape}, the manifest says {shape}")
  else:
    indptr, indices, values = headers
    _check_stored(path, name, values.dtype, dtype)
    rows, _ = matrix_shape(shape)
    if (indptr.shape, indices.shape, values.shape) != ((rows + 1,), (nnz,), (nnz,)):
      raise _fail(
        path,
        f"{name!r} should hold {rows + 1} row offsets and {nnz} columns and values, it holds "
        f"{indptr.shape}, {indices.shape} and {values.shape}",
      )
    if indptr.dtype.kind != "u" or indices.dtype.kind != "u":
      raise _fail(
        path, f"{name!r} has {indptr.dtype}/{indices.dtype} indices, not unsigned integers"
      )
  for header in headers:
    archive.check_size(header)
  return headers


def _read_leaf(path: str, archive: _Archive, leaf: _Leaf, headers: list[_Header]):
  """``(flat C-order positions or None, values)`` of ``leaf``, read and checked."""
  name, dtype, nnz = leaf.name, leaf.dtype, leaf.nnz
  if leaf.layout == "dense":
    return None, _restore(archive.data(headers[0]), dtype)
  indptr, indices, values = (archive.data(header) for header in headers)
  values = _restore(values, dtype)
  rows, cols = matrix_shape(leaf.shape)
  counts = np.diff(indptr.astype(np.int64))
  if indptr[0] != 0 or indptr[-1] != nnz or np.any(counts < 0):
    raise _fail(path, f"the row offsets of {name!r} do not run from 0 up to {nnz}")
  flat = np.repeat(np.arange(rows, dtype=np.int64), counts) * cols + indices.astype(np.int64)
  if nnz and (np.any(indices >= cols) or np.any(np.diff(flat) <= 0)):
    raise _fail(path, f"the columns of {name!r} are not ascending within rows, below {cols}")
  return flat, values


def _nest(items: list[tuple[str, Any]]) -> dict[str, Any]:
  """Nested dicts from ``('a/b/c', leaf)`` pairs, as Flax's variable trees are."""
  tree: dict[str, Any] = {}
  for name, leaf in items:
    *parents, last = name.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[last] = leaf
  return tree


def _check_like(path: str, tree: PyTree, like: PyTree, collection: str) -> PyTree:
  """``tree`` in the structure of ``like``, or an error naming the first difference."""
  try:
    return trees.conform(tree, like, collection)
  except trees.MismatchError as e:
    raise ExportError(
      f"{path} was exported from another model: {e}. Load it with the model it was exported from."
    ) from None


def _like(like: PyTree, collection: str) -> PyTree:
  return like["params"] if collection == "params" else like.get(collection, {})


def matrices(name: str, shape: tuple[int, ...]) -> bool:
  """Default ``sparse_filter`` of :func:`load_sparse`: the 2-D weights (``Dense`` kernels)."""
  del name
  return len(shape) == 2


def _check_precision(path: str, leaves) -> None:
  """Refuses leaves whose dtype this JAX would narrow (64-bit ones without ``jax_enable_x64``):
  they could not come back bit for bit."""
  for leaf in leaves:
    dtype = np.dtype(leaf.dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
      raise ExportError(
        f"{path}: {leaf.collection}/{leaf.path} is {dtype.name}, which JAX holds only with "
        "jax_enable_x64: call jax.config.update('jax_enable_x64', True) before loading it, or "
        "export params cast to 32 bits."
      )


def _load(
  path: str | os.PathLike[str],
  like: PyTree | None,
  as_bcoo: Callable[[str, tuple[int, ...]], bool] | None,
  max_elements: int,
) -> Exported:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"No export at {path!r}; make one with python experiments/export.py --workdir DIR."
    )
  if like is not None and (not isinstance(like, dict) or "params" not in like):
    raise TypeError("like= takes the model's variables: {'params': ..., 'batch_stats': ...}.")
  try:
    zip_file = zipfile.ZipFile(path)
  except files.ZIP_ERRORS as e:
    raise _corrupt(path, e) from None
  with zip_file:
    archive = _Archive(path, zip_file)
    manifest = _manifest(path, archive)
    leaves = _leaves(path, manifest, max_elements)
    _check_precision(path, leaves)
    if like is not None:  # The model's shapes and dtypes bound what is read.
      for collection in COLLECTIONS:
        declared = [
          (leaf.path, jax.ShapeDtypeStruct(leaf.shape, jax.dtypes.canonicalize_dtype(leaf.dtype)))
          for leaf in leaves
          if leaf.collection == collection
        ]
        _check_like(path, _nest(declared), _like(like, collection), collection)
    _check_arrays(path, archive, leaves)
    headers = [_headers(path, archive, leaf) for leaf in leaves]  # Before any data is read.
    collected: dict[str, list[tuple[str, Any]]] = {c: [] for c in COLLECTIONS}
    for leaf, leaf_headers in zip(leaves, headers, strict=True):
      indices, values = _read_leaf(path, archive, leaf, leaf_headers)
      if indices is None:
        value = jnp.asarray(values)
      elif as_bcoo is not None and as_bcoo(leaf.path, leaf.shape):
        coords = np.stack(np.unravel_index(indices, leaf.shape), axis=-1).astype(np.int32)
        value = sparse.BCOO(
          (jnp.asarray(values), jnp.asarray(coords)),
          shape=leaf.shape,
          indices_sorted=True,
          unique_indices=True,
        )
      else:
        dense = np.zeros(math.prod(leaf.shape), leaf.dtype)
        dense[indices] = values
        value = jnp.asarray(dense.reshape(leaf.shape))
      collected[leaf.collection].append((leaf.path, value))
  params, batch_stats = _nest(collected["params"]), _nest(collected["batch_stats"])
  if like is not None:
    params = _check_like(path, params, like["params"], "params")
    batch_stats = _check_like(path, batch_stats, _like(like, "batch_stats"), "batch_stats")
  return Exported(params, batch_stats, manifest.get("config"), manifest.get("step"))


def load_dense(
  path: str | os.PathLike[str],
  like: PyTree | None = None,
  *,
  max_elements: int = MAX_ELEMENTS,
) -> Exported:
  """Reads an export into dense arrays: the masked params that were exported, bit for bit.

  Args:
    path: a file written by :func:`export_sparse`.
    like: optional variables of the model the file should fit, ``{'params': ...,
      'batch_stats': ...}`` of arrays or ``jax.ShapeDtypeStruct`` s (e.g.
      ``jax.eval_shape(model.init, key, x)``): the result takes their tree structures, and a
      missing, extra, differently shaped or typed leaf is an :class:`ExportError`, found from
      the manifest before any array is read. Without it the trees are nested dicts built from
      the stored paths, as Flax's are.
    max_elements: the most elements the file's leaves may declare, all together
      (:data:`MAX_ELEMENTS`, 2**31): what a file can make the reader allocate.

  Raises:
    FileNotFoundError: no file at ``path``.
    ExportError: the file is truncated, corrupt, crafted (a zip bomb, sizes that disagree),
      of another format or version, declares more than ``max_elements`` elements, or does not
      fit ``like``.
  """
  return _load(path, like, None, max_elements)


def load_sparse(
  path: str | os.PathLike[str],
  like: PyTree | None = None,
  sparse_filter: Callable[[str, tuple[int, ...]], bool] = matrices,
  *,
  max_elements: int = MAX_ELEMENTS,
) -> Exported:
  """Reads an export with its sparse leaves as ``jax.experimental.sparse.BCOO`` arrays.

  Run the model on the result with :func:`sparse_apply`.

  Args:
    path: a file written by :func:`export_sparse`.
    like: as for :func:`load_dense` (shapes and dtypes are compared with the BCOO's).
    sparse_filter: ``sparse_filter(path, shape)`` picks which stored-sparse leaves become BCOO;
      the others are made dense. The default, :func:`matrices`, takes the 2-D weights, the
      kernels of ``nn.Dense`` layers, which :func:`sparse_apply` multiplies sparsely (a conv
      kernel must stay dense: XLA has no sparse convolution).
    max_elements: as for :func:`load_dense`.

  Raises:
    as :func:`load_dense`.
  """
  return _load(path, like, sparse_filter, max_elements)
