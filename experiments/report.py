"""Shared by the scripts that write the README's generated tables (and print sizes).

A generated block of README.md is the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; its script rewrites it from its raw output file, so that every figure
there comes from a script. Prose that such a script writes lives in a template of named
fragments (:class:`Fragments`), so that the script computes only the values.
"""

import os
import platform
import re
import string
from pathlib import Path

from snip_jax import provenance


def cores() -> int:
  """The cores this process may run on: XLA:CPU splits a convolution's sums over as many
  threads, so a conv net's numbers depend on it (README, "Exact per CPU type")."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


def machine() -> str:
  """The machine the numbers were measured on, for the tables' footnotes."""
  return f"a {cores()}-core {provenance.cpu_type()} ({platform.machine()}, {platform.system()})"


def size_text(num_bytes: int) -> str:
  """A size for people: ``'30.7 kB'``, ``'1.07 MB'`` (decimal units)."""
  if num_bytes >= 1e6:
    return f"{num_bytes / 1e6:.2f} MB"
  return f"{num_bytes / 1e3:.1f} kB"


def replace_block(readme: Path, name: str, body: str) -> None:
  """Replaces the body of block ``name`` in ``readme``; exits if there is not exactly one."""
  start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
  text = readme.read_text()
  block = f"{start}\n{body}\n{end}"
  # A function as the replacement keeps backslashes in ``body`` literal.
  new_text, count = re.subn(
    re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S
  )
  if count != 1:
    raise SystemExit(f"{readme} needs exactly one {start} ... {end} block.")
  readme.write_text(new_text)


class Fragments:
  """The named fragments of a markdown template, filled in with ``string.Template``.

  A fragment runs from its line ``<!-- fragment: NAME -->`` to the next such line (or the end
  of the file), its final newlines stripped; text before the first one is a comment on the
  file. ``$name`` / ``${name}`` are placeholders, ``$$`` a literal ``$``.
  """

  _MARKER = re.compile(r"^<!-- fragment: (\w+) -->\n", re.M)

  def __init__(self, path: str | os.PathLike[str]):
    self.path = Path(path)
    parts = self._MARKER.split(self.path.read_text())
    # parts = [comment, name, body, name, body, ...]
    self.templates = {
      name: string.Template(body.rstrip("\n"))
      for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }

  def __call__(self, name: str, **values) -> str:
    """Fragment ``name`` with its placeholders replaced by ``values`` (str() of each).

    Raises:
      KeyError: there is no fragment ``name``.
      ValueError: ``values`` lack a placeholder of the fragment or have one it does not use
        (the template and the code that fills it disagree).
    """
    template = self.templates[name]
    wanted = {
      m.group("named") or m.group("braced")
      for m in template.pattern.finditer(template.template)
      if m.group("named") or m.group("braced")
    }
    if wanted != set(values):
      raise ValueError(
        f"{self.path}, fragment {name!r}: placeholders {sorted(wanted)}, values for "
        f"{sorted(values)}."
      )
    return template.substitute({k: str(v) for k, v in values.items()})
