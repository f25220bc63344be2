"""How snip-jax compiles its steps and its scoring: XLA options chosen by measurement.

On CPU, XLA (jaxlib 0.10) hands dots, reductions *and convolutions* to the YNNPACK library by
default. Its convolutions are the slow part of a conv net's step: on LeNet-5-Caffe and VGG-D
(2-core Intel Xeon) XLA's own (Eigen) convolutions make the whole train step 1.5-1.7x faster
(BENCHMARKS.md, "Convolutions"). :data:`CPU_OPTIONS` keeps dots and reductions on YNNPACK and
gives convolutions back to XLA; a step without convolutions compiles to exactly the same
program either way, so a dense-only net's numbers do not change (``tests/test_xla.py``).

:func:`jit` is ``jax.jit`` with these options; use it (or ``compiler_options()``) for your own
step to get the same speed. The options are only used where they can be: on the CPU backend,
for a program on one device (see :func:`compiler_options`), when the installed XLA accepts them
(an XLA that renamed or dropped the flag just compiles without it), and never over a choice of
your own: if ``XLA_FLAGS`` names the flag, yours wins.

:class:`RunAhead` bounds how far the host dispatches ahead of the devices: on several CPU devices
an unbounded queue can deadlock XLA:CPU (its docstring says how). The training loop, the
evaluation and the scoring use it; a loop of your own over several CPU devices should too.
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

#: XLA:CPU debug options for the steps: YNNPACK for dots and reductions, not convolutions.
CPU_OPTIONS: dict[str, str] = {
  "xla_cpu_experimental_ynn_fusion_type": (
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
  ),
}


@functools.cache
def _accepted(options: tuple[tuple[str, str], ...]) -> bool:
  """Whether this XLA compiles with ``options`` (it rejects a name or value it does not know)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(jnp.float32(0)).compile()
  except jax.errors.JaxRuntimeError:
    return False
  return True


def compiler_options(backend: str | None = None, num_devices: int = 1) -> dict[str, str] | None:
  """The options for a step compiled for ``backend`` (default: JAX's default backend).

  Args:
    backend: ``'cpu'``, ``'gpu'``, ``'tpu'``; default: JAX's default backend.
    num_devices: how many devices the program spans (a mesh's size). Only a one-device program
      gets the options: that is where their speed was measured. (They were first withheld from
      several devices for a deadlock in a 2-device all-reduce; that deadlock was XLA:CPU's
      admission queue, see :class:`RunAhead`, and also struck networks without convolutions.)

  Returns:
    :data:`CPU_OPTIONS` on CPU for one device when XLA accepts them and ``XLA_FLAGS`` does not
    set them; otherwise ``None`` (XLA's defaults).
  """
  if (backend or jax.default_backend()) != "cpu" or num_devices > 1:
    return None
  flags = os.environ.get("XLA_FLAGS", "")
  if any(name in flags for name in CPU_OPTIONS):
    return None
  if not _accepted(tuple(CPU_OPTIONS.items())):
    return None
  return dict(CPU_OPTIONS)


def jit(fun: Callable, *, mesh: Mesh | None = None, **kwargs: Any):
  """``jax.jit(fun, **kwargs)`` compiled with :func:`compiler_options` for ``mesh`` (default:
  one device)."""
  num_devices = 1 if mesh is None else mesh.devices.size
  return jax.jit(fun, compiler_options=compiler_options(num_devices=num_devices), **kwargs)


#: How many results :class:`RunAhead` lets the host dispatch before it waits for the oldest.
MAX_AHEAD = 8


class RunAhead:
  """Keeps the host at most ``limit`` results ahead of the devices.

  XLA:CPU admits at most 32 computations per device at a time, later ones waiting for a slot,
  and jaxlib 0.10 launches the per-device parts of a program over several devices from a thread
  pool, in no fixed order. So a host that dispatches much further ahead than the devices run can
  deadlock on several CPU devices (``--xla_force_host_platform_device_count``): one device's part
  of a step waits in the step's all-reduce, the other's waits for a slot, and every slot is held
  by later computations that need the step's result. Seen in training runs on 2 host devices
  under load (one device's thread parked in the all-reduce, the other's in the slot's
  semaphore). Waiting for the result dispatched ``limit`` calls back caps the computations in
  flight far below 32 and still leaves the devices a queue of work. Elsewhere it costs nothing.

  Usage::

    ahead = RunAhead()
    for batch in batches:
      state, metrics = train_step(state, batch)
      ahead(metrics)  # Never a donated argument: it is read later.
  """

  def __init__(self, limit: int = MAX_AHEAD):
    if limit < 1:
      raise ValueError(f"RunAhead needs a limit of at least 1, got {limit}.")
    self.limit = limit
    self._in_flight: collections.deque[Any] = collections.deque()

  def __call__(self, result: Any) -> Any:
    """Records ``result`` (a pytree of arrays, never donated later) as in flight; waits until
    the oldest is ready when more than ``limit`` are. Returns ``result``."""
    self._in_flight.append(result)
    if len(self._in_flight) > self.limit:
      jax.block_until_ready(self._in_flight.popleft())
    return result

  def __len__(self) -> int:
    """How many recorded results may still be in flight."""
    return len(self._in_flight)
