"""Test helpers: small random pytrees, a functional MLP, MNIST IDX files, experiment configs, the
CLI in a subprocess and what a run leaves (TensorBoard events too). The CIFAR-10 archives are
``benchmarks/mock_data.py``'s (the benchmarks train on them too)."""

import gzip
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from snip_jax.checkpoint import read_state
from snip_jax.checkpoint import saved_steps as checkpoint_steps
from snip_jax.train.config import default_config

ROOT = Path(__file__).resolve().parents[1]


def config(**overrides):
  """The default experiment's config (LeNet-300-100, Fashion-MNIST) with ``overrides``."""
  cfg = default_config()
  cfg.update(overrides)
  return cfg


def tiny_config(data_dir, **overrides):
  """The default config on the tiny MNIST of the ``tiny_mnist`` fixture: 2 x 9 steps."""
  settings = dict(
    dataset="mnist",
    data_dir=data_dir,
    num_epochs=2,
    batch_size=20,
    score_batch_size=20,
    eval_batch_size=32,
    sparsity=0.9,
  )
  return config(**{**settings, **overrides})


def dropout_mlp(inputs: int, hidden: int, outputs: int):
  """An NNX MLP (``hidden``, ``drop``, ``out``) in inference mode: its whole state holds
  Dropout's RNG key and counter beside the params."""
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(inputs, hidden, rngs=rngs)
      self.out = nnx.Linear(hidden, outputs, rngs=rngs)
      self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
      return self.out(self.drop(jax.nn.relu(self.hidden(x))))

  model = Net(nnx.Rngs(0))
  model.eval()  # Scored in inference mode: dropout off.
  return model


def random_params(key: jax.Array, sizes=((6, 5), (5, 4), (4, 3))) -> dict:
  """An MLP-shaped params dict: kernels ``[fan_in, fan_out]`` and bias vectors."""
  params = {}
  for i, (fan_in, fan_out) in enumerate(sizes):
    key, k1, k2 = jax.random.split(key, 3)
    params[f"Dense_{i}"] = {
      "kernel": jax.random.normal(k1, (fan_in, fan_out)),
      "bias": jax.random.normal(k2, (fan_out,)),
    }
  return params


def flat_kernels(tree) -> np.ndarray:
  """The ``ndim >= 2`` leaves (the default prunable ones) flattened and joined in tree order."""
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree) if np.ndim(x) >= 2])


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
  """ReLU MLP over ``params`` from :func:`random_params`."""
  layers = [params[k] for k in sorted(params)]
  for layer in layers[:-1]:
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
  return x @ layers[-1]["kernel"] + layers[-1]["bias"]


def write_idx(path, array: np.ndarray, magic_type: int = 0x08, compress: bool = True) -> None:
  """Writes ``array`` as an IDX file (gzipped unless ``compress`` is false)."""
  header = bytes([0, 0, magic_type, array.ndim]) + b"".join(
    int(d).to_bytes(4, "big") for d in array.shape
  )
  payload = header + array.astype(np.uint8).tobytes()
  if compress:
    with gzip.open(path, "wb") as f:
      f.write(payload)
  else:
    path.write_bytes(payload)


def write_mnist_like(directory, num_train=20, num_test=10, seed=0):
  """Random 28x28 MNIST-format IDX files; returns ``{prefix: (images, labels)}``."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    # Labels uncompressed: both forms are accepted.
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    arrays[prefix] = (images, labels)
  return arrays


def refuse_network(monkeypatch) -> None:
  """Makes any attempt to open a network connection fail the test (for a ``no_network`` fixture)."""

  def refuse(*args, **kwargs):
    raise AssertionError("a network connection was attempted")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


def xla_flags(*flags: str) -> str:
  """This session's ``XLA_FLAGS`` (its optimisation level: ``conftest.py``) and ``flags``, for a
  subprocess's environment."""
  return " ".join((os.environ.get("XLA_FLAGS", ""), *flags)).strip()


def run_script(script, *args: str, cwd=None) -> subprocess.CompletedProcess:
  """Runs ``python SCRIPT ARGS`` in a subprocess, as a user would: with the package installed
  and nothing added to the import path."""
  return subprocess.run(
    [sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=600
  )


def run_cli(*flags: str, cwd=None) -> subprocess.CompletedProcess:
  """Runs ``python experiments/train.py FLAGS`` in a subprocess, as a user would."""
  return run_script(ROOT / "experiments" / "train.py", *flags, cwd=cwd)


# --------------------------------------------------------------------------------------------
# What a run leaves, for resume and determinism checks.

#: Summary and metrics fields that are timings, not results.
TIMING_KEYS = {"seconds", "prune_seconds", "train_seconds", "examples_per_second"}
#: TensorBoard tags that are timings.
TIMING_TAGS = {"epoch/seconds", "train/examples_per_second"}


def read_tfrecords(path: Path) -> list[bytes]:
  """The records of a TFRecord file (a TensorBoard event file), their checksums checked.

  Each record is its length (8 bytes, little-endian), the length's masked CRC-32C (4 bytes), the
  payload and the payload's masked CRC-32C (4 bytes). An incomplete last record (a killed run's)
  is left out, as TensorBoard leaves it.
  """
  from tensorboardX.record_writer import masked_crc32c

  data, offset, records = path.read_bytes(), 0, []
  while offset + 12 <= len(data):
    header = data[offset : offset + 8]
    (length,) = struct.unpack("<Q", header)
    if offset + 16 + length > len(data):
      break
    (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
    payload = data[offset + 12 : offset + 12 + length]
    (payload_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
    assert header_crc == masked_crc32c(header) and payload_crc == masked_crc32c(payload)
    records.append(payload)
    offset += 16 + length
  return records


def tensorboard_scalars(logdir: Path, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
  """The scalars of the event files in ``logdir`` as TensorBoard shows them: ``{tag: [(step,
  value), ...]}`` in the order written, the files read in name (time) order, and (unless not
  ``purge``) a file's ``SessionLog.START`` at step ``s`` (its ``purge_step``) dropping the
  earlier events at ``s`` and after."""
  from tensorboardX.proto.event_pb2 import Event, SessionLog

  scalars: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    for record in read_tfrecords(path):
      event = Event.FromString(record)
      restart = event.HasField("session_log") and event.session_log.status == SessionLog.START
      if purge and restart:
        scalars = {
          t: [(s, v) for s, v in points if s < event.step] for t, points in scalars.items()
        }
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return {tag: points for tag, points in scalars.items() if points}


def read_jsonl(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


def outcome(workdir: Path) -> dict:
  """Everything a run leaves that must not depend on interruptions (timings stripped).

  TensorBoard's scalars are keyed by step: a finished run run again writes its test metrics
  again, at the same step and with the same values.
  """
  state = read_state(workdir, checkpoint_steps(workdir)[-1])
  state["rng"] = jax.random.key_data(state["rng"])
  summary = json.loads((workdir / "summary.json").read_text())
  metrics = read_jsonl(workdir / "metrics.jsonl")
  step_metrics = read_jsonl(workdir / "step_metrics.jsonl")
  scalars = tensorboard_scalars(workdir / "tensorboard")
  return {
    "state": jax.tree.map(np.asarray, state),
    "mask.npz": (workdir / "mask.npz").read_bytes(),
    "metrics": [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in metrics],
    "step_metrics": [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in step_metrics],
    "tensorboard": {t: dict(points) for t, points in scalars.items() if t not in TIMING_TAGS},
    "summary": {k: v for k, v in summary.items() if k not in TIMING_KEYS},
  }


def assert_same_outcome(a: dict, b: dict) -> None:
  assert a["mask.npz"] == b["mask.npz"]
  assert a["metrics"] == b["metrics"]
  assert a["step_metrics"] == b["step_metrics"]
  assert a["tensorboard"] == b["tensorboard"]
  assert a["summary"] == b["summary"]
  assert jax.tree.structure(a["state"]) == jax.tree.structure(b["state"])
  for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)  # Bit for bit (NaN-free, so equality is exact).
