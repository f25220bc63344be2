"""The optional parts of the package: which extra installs what, and the error that names it.

``pip install snip-jax`` is the library (masks, scoring, selection, the masked optimizer, the
models, sharding, sparse export). ``snip_jax.data`` needs the ``[data]`` extra and
``snip_jax.train`` (with the ``snip-jax-train`` command) ``[data,experiments]``; importing them
without it fails at once with the ``pip install`` line that fixes it.
"""

from __future__ import annotations

import importlib.util

#: The top-level modules each extra provides (pyproject.toml lists the distributions).
EXTRAS: dict[str, tuple[str, ...]] = {
  "data": ("tensorflow_datasets", "array_record", "PIL", "importlib_resources"),
  "experiments": ("orbax", "tqdm", "tensorboardX"),
}


def require(what: str, *extras: str) -> None:
  """Raises ``ImportError`` naming the ``pip install`` that provides ``extras`` when a module of
  one of them is missing; ``what`` is the part of snip-jax that needs them."""
  missing = [m for extra in extras for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
  if missing:
    names = ",".join(extras)
    raise ImportError(
      f"{what} needs snip-jax[{names}] ({', '.join(missing)} not installed): pip install "
      f"'snip-jax[{names}]', or pip install -e '.[{names}]' in a checkout."
    )
