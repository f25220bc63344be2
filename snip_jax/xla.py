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
"""

from __future__ import annotations

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
      gets the options: XLA's own convolutions run on the thread pool that XLA:CPU's devices
      share, and a program over several CPU devices (``--xla_force_host_platform_device_count``)
      could then block in its all-reduce, each device waiting for a thread the others hold.

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
