"""A crafted export is refused, naming the file and what is wrong, before it allocates what it
declares: a leaf of a huge shape, a zip bomb, sizes that disagree.

The known attacks also run in a subprocess that prints its peak RSS and the peak of what the
load allocated through Python and NumPy (``tracemalloc``, which counts a ``np.zeros`` whose
pages are not yet touched): beside a baseline subprocess that imports the same modules and
builds the same ``like`` but loads nothing, the load may add at most 200 MB of either, in at
most 10 s. The peak RSS is Linux's ``VmHWM``: ``ru_maxrss`` would be no measure, since a child
that ``subprocess`` starts (by ``vfork``) inherits its parent's, the test process's, peak.
"""

import dataclasses
import functools
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT

from snip_jax import export, models
from snip_jax.export import read

pytestmark = pytest.mark.attack  # README, Reliability: the attack cases.

MAX_SECONDS = 10
MAX_GROWTH_BYTES = 200 * 1000**2
GIB = 2**30
PIECE = 2**24  # A zip bomb's zeros are deflated 16 MiB at a time.
LENET_INPUT = jnp.zeros((1, 28, 28, 1))


@pytest.fixture(scope="module")
def lenet300():
  """LeNet-300-100's params (random, NumPy: no compilation) with 2% of each kernel kept, and
  the mask."""
  shapes = jax.eval_shape(models.get_model("lenet300").init, jax.random.key(0), LENET_INPUT)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), shapes["params"])
  mask = jax.tree.map(
    lambda p: rng.random(p.shape) < 0.02 if p.ndim == 2 else np.ones(p.shape, bool), params
  )
  return {"params": jax.tree.map(lambda p, m: np.where(m, p, np.float32(0)), params, mask)}, mask


@pytest.fixture(scope="module")
def good(lenet300, tmp_path_factory):
  """The export of ``lenet300`` and what it holds: ``(path, arrays, manifest)``."""
  variables, mask = lenet300
  path = tmp_path_factory.mktemp("export") / "lenet300.npz"
  export.export_sparse(path, variables["params"], mask)
  with np.load(path) as f:
    arrays = {name: f[name] for name in f.files}
  return path, arrays, json.loads(str(arrays.pop("__manifest__")))


# --------------------------------------------------------------------------------------------
# Zip files written by hand: a member may declare any size and CRC, and hold a zip bomb.


@dataclasses.dataclass(frozen=True)
class Member:
  """A deflated zip member and what its zip entry declares."""

  name: str
  deflated: bytes
  crc: int
  size: int


def npy_member(name: str, array) -> Member:
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
  data = buffer.getvalue()
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  return Member(
    f"{name}.npy", compressor.compress(data) + compressor.flush(), zlib.crc32(data), len(data)
  )


@functools.cache
def deflated_zeros() -> bytes:
  """``PIECE`` zero bytes as raw deflate blocks that refer to nothing before them (16 KB)."""
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  return compressor.compress(bytes(PIECE)) + compressor.flush(zlib.Z_FULL_FLUSH)


def bomb_member(name: str, shape, dtype, zero_bytes: int, declared: int | None = None) -> Member:
  """A ``.npy`` header of ``shape`` and ``dtype`` then ``zero_bytes`` zeros, deflated about
  1000:1; the zip entry declares ``declared`` bytes (default: all) with their CRC-32."""
  buffer = io.BytesIO()
  descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
  header = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
  np.lib.format.write_array_header_1_0(buffer, header)
  header = buffer.getvalue()
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  stream = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
  pieces, rest = divmod(zero_bytes, PIECE)
  assert rest == 0
  stream += deflated_zeros() * pieces + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
  if declared is None:
    declared, crc, zeros = len(header) + zero_bytes, zlib.crc32(header), bytes(PIECE)
    for _ in range(pieces):
      crc = zlib.crc32(zeros, crc)
  else:  # The CRC-32 of the bytes it declares: zipfile alone would accept those.
    crc = zlib.crc32(header + bytes(declared - len(header)))
  return Member(f"{name}.npy", stream, crc, declared)


def write_zip(path, members: list[Member]):
  """A zip of ``members`` (deflated, no ZIP64), as np.savez_compressed lays one out."""
  out, directory = bytearray(), bytearray()
  for m in members:
    name = m.name.encode()
    # Version 2.0, no flags, deflate, 1980-01-01, CRC-32, sizes, name length.
    fields = struct.pack("<HHHHHIIIH", 20, 0, 8, 0, 0x21, m.crc, len(m.deflated), m.size, len(name))
    directory += struct.pack("<IH", 0x02014B50, 20) + fields
    directory += struct.pack("<HHHHII", 0, 0, 0, 0, 0, len(out)) + name
    out += struct.pack("<I", 0x04034B50) + fields + struct.pack("<H", 0) + name + m.deflated
  count = len(members)
  end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), len(out), 0)
  path.write_bytes(bytes(out + directory + end))
  return path


def manifest_member(manifest) -> Member:
  return npy_member("__manifest__", np.asarray(json.dumps(manifest)))


def craft(path, arrays, manifest, replace=(), extra=()):
  """The export of ``arrays`` and ``manifest``, some members replaced or added."""
  replaced = {m.name: m for m in replace}
  members = [manifest_member(manifest)] + [npy_member(k, v) for k, v in arrays.items()]
  members = [replaced.pop(m.name, m) for m in members]
  assert not replaced
  return write_zip(path, [*members, *extra])


# --------------------------------------------------------------------------------------------
# The known attacks: each ``(tmp_path, good) -> (path, with like=?, what the error says)``.

CSR_LEAF = {"collection": "params", "path": "Dense_0/kernel", "dtype": "float32", "layout": "csr"}


def one_huge_leaf(tmp_path, good):
  """1.1 KB: one CSR leaf of shape [1, 2**28], read with the model's like= (which the reader
  compared only after making the leaf dense: 1 GiB)."""
  manifest = {**good[2], "leaves": [{**CSR_LEAF, "shape": [1, 2**28], "nnz": 1}]}
  arrays = {
    "params/Dense_0/kernel/indptr": np.array([0, 1], np.uint8),
    "params/Dense_0/kernel/indices": np.array([2**28 - 1], np.uint32),
    "params/Dense_0/kernel/values": np.ones(1, np.float32),
  }
  path = craft(tmp_path / "huge_leaf.npz", arrays, manifest)
  assert path.stat().st_size < 1200
  return path, True, "exported from another model: its params lack ['Dense_0/bias', "


def lenet_with_a_huge_kernel(tmp_path, good):
  """The real export, its first kernel declared [1, 2**28] (its entries in that one row)."""
  _, arrays, manifest = good
  leaves = [dict(e) for e in manifest["leaves"]]
  (kernel,) = [e for e in leaves if e["path"] == "Dense_0/kernel"]
  kernel["shape"] = [1, 2**28]
  indptr, columns = arrays["params/Dense_0/kernel/indptr"], arrays["params/Dense_0/kernel/indices"]
  rows = np.repeat(np.arange(784), np.diff(indptr.astype(np.int64)))
  edited = {
    **arrays,
    "params/Dense_0/kernel/indptr": np.array([0, kernel["nnz"]], np.uint32),
    "params/Dense_0/kernel/indices": (rows * 300 + columns).astype(np.uint32),
  }
  path = craft(tmp_path / "huge_kernel.npz", edited, {**manifest, "leaves": leaves})
  return (
    path,
    True,
    "params/Dense_0/kernel is float32[1, 268435456], the model's is float32[784, 300]",
  )


def more_than_the_cap(tmp_path, good):
  """A [2**16, 2**16] leaf (2**32 elements, 64 GiB of float32 made dense), without like=."""
  manifest = {**good[2], "leaves": [{**CSR_LEAF, "shape": [2**16, 2**16], "nnz": 0}]}
  arrays = {
    "params/Dense_0/kernel/indptr": np.zeros(2**16 + 1, np.uint8),
    "params/Dense_0/kernel/indices": np.zeros(0, np.uint16),
    "params/Dense_0/kernel/values": np.zeros(0, np.float32),
  }
  path = craft(tmp_path / "over_cap.npz", arrays, manifest)
  return path, False, "above the reader's cap of max_elements=2,147,483,648"


def bomb_beside_the_arrays(tmp_path, good):
  """1 MB: the real export and a member no manifest entry lists, 1 GiB of zeros."""
  _, arrays, manifest = good
  bomb = bomb_member("params/Dense_9/kernel", (GIB // 4,), np.float32, GIB)
  path = craft(tmp_path / "bomb_extra.npz", arrays, manifest, extra=[bomb])
  return path, False, "arrays its manifest does not list: ['params/Dense_9/kernel']"


def bomb_for_the_values(tmp_path, good):
  """1 MB: the first kernel's values replaced by 1 GiB of zeros its header declares."""
  _, arrays, manifest = good
  bomb = bomb_member("params/Dense_0/kernel/values", (GIB // 4,), np.float32, GIB)
  path = craft(tmp_path / "bomb_values.npz", arrays, manifest, replace=[bomb])
  nnz = arrays["params/Dense_0/kernel/values"].size
  return path, False, f"it holds (785,), ({nnz},) and (268435456,)"


def bomb_for_the_manifest(tmp_path, good):
  """1 MB: a manifest of 1 GiB (2**28 characters of UTF-32 zeros)."""
  _, arrays, manifest = good
  bomb = bomb_member("__manifest__", (), f"<U{GIB // 4}", GIB)
  path = craft(tmp_path / "bomb_manifest.npz", arrays, manifest, replace=[bomb])
  return path, False, "'__manifest__' declares 1073741952 bytes, more than the 16777216"


def bomb_declaring_its_header(tmp_path, good):
  """1 MB: values whose zip entry (and CRC-32) declare what their header does, which
  decompress to 1 GiB: zipfile alone would stop at the declared size and say nothing."""
  _, arrays, manifest = good
  nnz = arrays["params/Dense_0/kernel/values"].size
  declared = 128 + 4 * nnz  # The header is 128 bytes.
  name = "params/Dense_0/kernel/values"
  bomb = bomb_member(name, (nnz,), np.float32, GIB, declared=declared)
  path = craft(tmp_path / "bomb_declared.npz", arrays, manifest, replace=[bomb])
  return path, False, f"'{name}' decompresses to more than the {declared} bytes its zip entry"


def entry_larger_than_its_header(tmp_path, good):
  """A zip entry declaring 1 GiB more than its .npy header's array: never decompressed."""
  _, arrays, manifest = good
  nnz = arrays["params/Dense_0/kernel/values"].size
  name = "params/Dense_0/kernel/values"
  bomb = bomb_member(name, (nnz,), np.float32, GIB)
  path = craft(tmp_path / "entry_larger.npz", arrays, manifest, replace=[bomb])
  return path, False, f"the zip entry of '{name}' declares {128 + GIB} bytes, its .npy header "


ATTACKS = [
  one_huge_leaf,
  lenet_with_a_huge_kernel,
  more_than_the_cap,
  bomb_beside_the_arrays,
  bomb_for_the_values,
  bomb_for_the_manifest,
  bomb_declaring_its_header,
  entry_larger_than_its_header,
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_is_refused_quickly_naming_the_file_and_the_fault(
  attack, tmp_path, good, lenet300
):
  path, with_like, message = attack(tmp_path, good)
  like = lenet300[0] if with_like else None
  for load in (export.load_dense, export.load_sparse):
    start = time.perf_counter()
    with pytest.raises(export.ExportError) as e:
      load(path, like=like)
    assert time.perf_counter() - start < MAX_SECONDS
    assert message in str(e.value)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# The same attacks in a subprocess, for their memory.

PROBE = """
import json, resource, sys, time, tracemalloc

import jax, jax.numpy as jnp

from snip_jax import export, models

model = models.get_model("lenet300")
like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
path, with_like = sys.argv[1], sys.argv[2] == "like"
message, seconds = None, 0.0
tracemalloc.start()  # NumPy reports its arrays to it, even pages not yet touched.
if path:
  start = time.perf_counter()
  try:
    export.load_dense(path, like=like if with_like else None)
  except export.ExportError as e:
    message = str(e)
  seconds = time.perf_counter() - start
allocated_peak = tracemalloc.get_traced_memory()[1]
try:  # This process's own peak RSS, in KiB.
  with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:  # Not Linux.
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
  "message": message, "seconds": seconds, "peak_kib": peak_kib, "allocated_peak": allocated_peak
}))
"""


def probe(path="", with_like=False) -> dict:
  """Loads ``path`` (nothing for ``""``) in a fresh process: its message, time, peak RSS and
  peak allocation."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
    [sys.executable, "-c", PROBE, str(path), "like" if with_like else "none"],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=ROOT,
    env=env,
  )
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def baseline_kib() -> int:
  return probe()["peak_kib"]


@pytest.mark.slow
@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_is_refused_in_little_memory(attack, tmp_path, good, baseline_kib):
  path, with_like, message = attack(tmp_path, good)
  outcome = probe(path, with_like)
  assert outcome["message"] is not None and message in outcome["message"]
  assert outcome["seconds"] < MAX_SECONDS
  assert (outcome["peak_kib"] - baseline_kib) * 1024 < MAX_GROWTH_BYTES, outcome
  assert outcome["allocated_peak"] < MAX_GROWTH_BYTES, outcome


# --------------------------------------------------------------------------------------------
# Other crafted manifests and zips.


def edit_kernel_entry(good, tmp_path, **changes):
  """The real export with its first kernel's manifest entry changed."""
  _, arrays, manifest = good
  leaves = [dict(e, **changes) if e["path"] == "Dense_0/kernel" else e for e in manifest["leaves"]]
  return craft(tmp_path / "edited.npz", arrays, {**manifest, "leaves": leaves})


@pytest.mark.parametrize(
  ("changes", "message"),
  [
    ({"shape": [784, -300]}, "'params/Dense_0/kernel' declares shape [784, -300] and"),
    ({"shape": [784.0, 300]}, "malformed manifest entry"),
    ({"nnz": True}, "malformed manifest entry"),
    ({"shape": [1] * 65}, "declares 65 dimensions, NumPy holds 64"),
    ({"shape": [0, 2**70]}, "declares shape [0, 1180591620717411303424], above the reader's cap"),
    (
      {"nnz": 784 * 300 + 1},
      "declares 235201 stored values, more than the 235200 of its shape [784, 300]",
    ),
    ({"dtype": "object"}, "'params/Dense_0/kernel' has dtype 'object', not a numeric one"),
    ({"dtype": "V8"}, "'params/Dense_0/kernel' has dtype 'V8', not a numeric one"),
    ({"dtype": "float128x"}, "'params/Dense_0/kernel' has an unknown dtype 'float128x'"),
    ({"path": "Dense_0"}, "'params/Dense_0' both as a leaf and as a module of leaves"),
    ({"path": "Dense_1/kernel"}, "the manifest lists 'params/Dense_1/kernel' twice"),
    ({"path": "a/" * 64 + "k"}, "deep"),
  ],
)
def test_an_inconsistent_manifest_is_refused_before_any_array_is_read(
  good, tmp_path, changes, message
):
  path = edit_kernel_entry(good, tmp_path, **changes)
  with pytest.raises(export.ExportError, match=r"Export it again|max_elements=") as e:
    export.load_dense(path)
  assert message in str(e.value) and str(e.value).startswith(str(path))


def test_zip_and_npy_faults_are_clear_errors(good, tmp_path):
  _, arrays, manifest = good
  values = "params/Dense_0/kernel/values"
  twice = craft(
    tmp_path / "twice.npz", arrays, manifest, extra=[npy_member(values, arrays[values])]
  )
  with pytest.raises(export.ExportError, match=f"its zip holds the array '{values}' twice"):
    export.load_dense(twice)
  # A .npy 2.0 header that declares a 4 GiB header: refused after reading 10 KB.
  long_header = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + bytes(2**20)
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  deflated = compressor.compress(long_header) + compressor.flush()
  member = Member(f"{values}.npy", deflated, zlib.crc32(long_header), len(long_header))
  bad = craft(tmp_path / "header.npz", arrays, manifest, replace=[member])
  with pytest.raises(export.ExportError, match=r"truncated or corrupt.*Export it again"):
    export.load_dense(bad)
  # A manifest that is not a string, and one nested too deeply for json.
  for text in (np.arange(3), np.asarray("[" * 100_000)):
    bad = craft(
      tmp_path / "manifest.npz", arrays, manifest, replace=[npy_member("__manifest__", text)]
    )
    with pytest.raises(export.ExportError, match="its manifest is not valid JSON"):
      export.load_dense(bad)


def test_the_cap_counts_every_element_and_is_a_keyword(good, lenet300):
  """LeNet-300-100 declares 266,610 elements: one more than a cap refuses it."""
  path, variables = good[0], lenet300[0]
  assert read.MAX_ELEMENTS == 2**31
  with pytest.raises(export.ExportError, match=r"pass a larger max_elements= to load_dense"):
    export.load_dense(path, max_elements=266_609)
  loaded = export.load_dense(path, variables, max_elements=266_610)
  assert export.bit_equal(loaded.params, variables["params"])
  sparse = export.load_sparse(path, variables, max_elements=266_610)
  assert sparse.params["Dense_0"]["kernel"].shape == (784, 300)


def test_a_hand_written_zip_of_the_real_arrays_reads_back(good, lenet300, tmp_path):
  """The zip writer above (the attacks' base) makes a file the reader accepts; so does a dense
  leaf stored in Fortran order, as NumPy writes a transposed array."""
  _, arrays, manifest = good
  path = craft(tmp_path / "same.npz", arrays, manifest)
  assert export.bit_equal(export.load_dense(path).params, lenet300[0]["params"])
  mean = np.asfortranarray(np.arange(12.0, dtype=np.float32).reshape(3, 4))
  entry = {"collection": "batch_stats", "path": "BN/mean", "shape": [3, 4], "dtype": "float32"}
  leaves = [*manifest["leaves"], {**entry, "layout": "dense", "nnz": 12}]
  arrays = {**arrays, "batch_stats/BN/mean": mean}
  path = craft(tmp_path / "fortran.npz", arrays, {**manifest, "leaves": leaves})
  np.testing.assert_array_equal(export.load_dense(path).batch_stats["BN"]["mean"], mean)
