"""Which snip-jax, and which CPU, made a result: the commit of the checkout it runs from, and
the CPU type.

A training run's ``summary.json`` and the benchmarks record :func:`code_version`, so a number
made weeks ago (a sweep is spread over many sessions) names the code that made it; the
experiments' run records and the benchmarks name the CPU with :func:`cpu_type`.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

#: The directory that holds the ``snip_jax`` package: a checkout's root when run from one.
ROOT = Path(__file__).resolve().parents[1]


def _git(root: Path, *args: str) -> str:
  return subprocess.run(
    ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
  ).stdout.strip()


def commit_of(root: Path) -> str | None:
  """The short commit of the git checkout whose top level is ``root``, with ``' + uncommitted
  changes'`` when tracked files differ from it; ``None`` when ``root`` is not the top of a
  checkout (an installed package, even one inside another project's repository) or there is no
  git."""
  try:
    if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != root.resolve():
      return None
    head = _git(root, "rev-parse", "--short", "HEAD")
    changed = _git(root, "status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return None
  return f"{head} + uncommitted changes" if changed else head


@functools.cache
def code_version() -> str | None:
  """:func:`commit_of` snip-jax's own checkout (``None`` for an installed package). Cached: the
  first call decides it for the whole process, so a file edited mid-run does not change it."""
  return commit_of(ROOT)


def cpu_type_of(cpuinfo: str, machine: str = "") -> str:
  """:func:`cpu_type` from the text of ``/proc/cpuinfo`` (its first processor's fields)."""
  fields = {}
  for line in cpuinfo.splitlines():
    if not line.strip():
      if fields:
        break  # The end of the first processor's block.
      continue
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  name = fields.get("model name") or f"{machine or 'unknown'} CPU"
  if "cpu family" in fields and "model" in fields:
    return f"{name} family {fields['cpu family']} model {fields['model']}"
  return name


@functools.cache
def cpu_type() -> str:
  """The CPU this process computes on: its model name and, on x86, its family and model numbers
  (``'AMD EPYC family 26 model 2'``); without ``/proc/cpuinfo``, the architecture.

  XLA:CPU compiles for the CPU it runs on, so float results drift between CPU types after the
  first epochs. A virtual machine's model name can be as bare as ``'AMD EPYC'`` for
  generations that XLA compiles differently for: two such machines gave different LeNet-300-100
  losses from the first epoch on, from the same mask and code. The numbers tell them apart.
  """
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
  except OSError:
    text = ""
  return cpu_type_of(text, platform.machine())
