"""Which snip-jax made a result: the commit of the checkout it runs from.

A training run's ``summary.json`` and the benchmarks record :func:`code_version`, so a number
made weeks ago (a sweep is spread over many sessions) names the code that made it.
"""

from __future__ import annotations

import functools
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
