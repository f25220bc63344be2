"""Data parallelism through ``jax.sharding``: the same code on 1 CPU, 8 GPUs or a TPU pod slice.

One mesh axis, ``"batch"``, spans the devices. The params, the optimizer state (which carries
the mask), batch-norm statistics and the RNG key are **replicated** on every device; each batch
is **split along its first axis** over the mesh. The jitted steps are given these shardings and
XLA's SPMD partitioner does the rest: every device runs the step on its slice of the batch, and
the reductions over the batch (the mean loss, hence the gradients; batch norm's batch
statistics; the evaluation's sums) become all-reduces across devices. A step therefore computes
what it computes on one device, up to the order of floating-point additions. There is no
``pmap`` and no hand-written collective. (Scoring several batches can instead give each device
whole batches: :func:`snip_jax.train.pruning.spreads_scoring`.)

Several processes (a TPU pod slice has one per host): :func:`initialize_distributed` first, in
every process; the mesh then spans the devices of all of them. Each process holds only its own
part of every batch (:func:`shard_batch`), read from its own range of the data
(:func:`process_range`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

#: The name of the mesh axis that batches are split along.
BATCH_AXIS = "batch"
PyTree = Any


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """``jax.distributed.initialize`` unless it ran already; call it before any other JAX call.

  On Cloud TPU pod slices, SLURM, Open MPI and Kubernetes JAX finds the arguments itself; give
  them elsewhere (e.g. several processes on one machine).
  """
  if jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except ValueError as e:  # E.g. "coordinator_address should be defined."
    raise ValueError(
      f"jax.distributed.initialize() failed: {e} JAX finds the processes of Cloud TPU, SLURM, "
      "Open MPI and Kubernetes clusters by itself; elsewhere give --coordinator_address, "
      "--num_processes and --process_id. For a one-process run, leave config.distributed False."
    ) from e


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A one-axis mesh (``"batch"``) over the first ``num_devices`` devices (default: all).

  With several processes the mesh must span every device of every process (each process feeds
  its own devices), so ``num_devices`` must then be ``None`` or ``jax.device_count()``.
  """
  devices = jax.devices()
  if num_devices is None:
    num_devices = len(devices)
  if not isinstance(num_devices, int) or not 1 <= num_devices <= len(devices):
    raise ValueError(
      f"num_devices={num_devices!r}: this run has {len(devices)} device(s); ask for 1 to "
      f"{len(devices)}, or None for all."
    )
  if jax.process_count() > 1 and num_devices != len(devices):
    raise ValueError(
      f"num_devices={num_devices} with {jax.process_count()} processes: a multi-process run "
      f"uses every device ({len(devices)}); leave num_devices unset (None)."
    )
  return jax.make_mesh(
    (num_devices,), (BATCH_AXIS,), (AxisType.Auto,), devices=devices[:num_devices]
  )


def replicated(mesh: Mesh) -> NamedSharding:
  """A whole copy of the array on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The first axis split evenly over the devices of ``mesh`` (the others whole)."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def check_divisible(size: int, mesh: Mesh, name: str = "batch_size") -> None:
  """Raises ``ValueError`` unless a global batch of ``size`` splits evenly over ``mesh``."""
  devices = mesh.devices.size
  if size % devices:
    multiple = -(-size // devices) * devices
    raise ValueError(
      f"config.{name}={size} is not divisible by the {devices} devices of the mesh: each "
      f"device takes an equal slice of a batch. Use a multiple of {devices} (e.g. {multiple}), "
      "or set config.num_devices to a divisor of it."
    )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """``tree`` (the same values in every process) placed whole on every device of ``mesh``.

  New buffers, never ``tree``'s own: a jitted step may donate the result without deleting the
  caller's arrays.
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    # device_put may reuse a buffer already on one of the devices (may_alias=False does not stop
    # it from doing so when it reshards), so copy first.
    return jax.device_put(jax.tree.map(jnp.copy, tree), sharding)

  def put(x):  # device_put cannot reach other processes' devices.
    if not isinstance(x, jax.Array):
      x = np.asarray(x)  # E.g. a TrainState's initial step, a Python int.
    elif x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    return multihost_utils.host_local_array_to_global_array(x, mesh, PartitionSpec())

  return jax.tree.map(put, tree)


def shard_batch(batch: Sequence[np.ndarray], mesh: Mesh) -> tuple[jax.Array, ...]:
  """Global arrays split over ``mesh`` from this process's part of a batch.

  Args:
    batch: host arrays with a leading batch axis: the whole batch with one process; with
      several, this process's consecutive slice of it (process ``i`` holds rows
      ``[i * b, (i + 1) * b)`` of a global batch of ``b * jax.process_count()``).
    mesh: from :func:`make_mesh`.

  Returns:
    The arrays of the global batch, each sharded along its first axis.
  """
  sharding, devices = batch_sharded(mesh), mesh.devices.size
  for x in batch:
    rows = np.shape(x)[0] * jax.process_count()
    if rows % devices:
      raise ValueError(
        f"A batch of {rows} examples does not split over the {devices} devices of the mesh; use "
        f"a multiple of {devices}."
      )
  if jax.process_count() == 1:
    return tuple(jax.device_put(x, sharding) for x in batch)
  return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(x)) for x in batch)


def process_values(value: int) -> list[int]:
  """Every process's ``value``, by process index (``[value]`` with one process, no collective).

  A collective with several processes: every process must call it.
  """
  if jax.process_count() == 1:
    return [value]
  return [int(v) for v in multihost_utils.process_allgather(np.int32(value))]


def most_over_processes(value: int) -> int:
  """The largest ``value`` of any process (a collective with several processes)."""
  return max(process_values(value))


def fewest_over_processes(value: int) -> int:
  """The smallest ``value`` of any process (a collective with several processes)."""
  return min(process_values(value))


def local_share(total: int) -> int:
  """This process's share of ``total`` (examples of a batch, batches of a round, ...), which
  the processes split evenly: each holds ``total / processes``."""
  return total // jax.process_count()


def sync(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def process_range(n: int, index: int, count: int) -> range:
  """Process ``index``'s share of ``n`` examples among ``count``: contiguous, sizes within 1."""
  if not 0 <= index < count:
    raise ValueError(f"Process index {index} is not in [0, {count}).")
  return range(index * n // count, (index + 1) * n // count)
