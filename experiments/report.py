"""Shared by the scripts that write the README's generated tables (and print sizes).

A generated block of README.md is the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; its script rewrites it from its raw output file, so that every figure
there comes from a script.
"""

import os
import platform
import re
from pathlib import Path


def machine() -> str:
  """The machine the numbers were measured on, for the tables' footnotes."""
  return f"a {os.cpu_count()}-core {platform.machine()} CPU ({platform.system()})"


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
