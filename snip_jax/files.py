"""Files that are never half-written, and directories that one process owns at a time.

* :func:`atomic_writer` (and :func:`write_bytes`, :func:`write_text`, :func:`write_json`): the
  new contents go to a temporary file beside the target, are flushed and ``fsync``-ed, and then
  replace the target in one ``os.replace``. A crash, a full disk or a kill leaves the old file or
  the new one, never a cut-off one; a failed write removes its temporary file and raises.
* :class:`DirectoryLock`: an exclusive ``flock`` on a lock file in a directory, held for as long
  as a run (or an export) uses it. A second process is refused at once with one line naming the
  holder (pid, host, start time). The kernel drops the lock when its process dies however it
  dies, so a lock left by a killed run never blocks the resume.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import lzma
import os
import socket
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, Any

try:
  import fcntl
except ImportError:  # Windows: no flock; directories are not locked there.
  fcntl = None

#: The lock file :class:`DirectoryLock` creates in the directory it locks.
LOCK_FILE = ".snip-jax.lock"
#: What reading a truncated or damaged ``.npz`` (a zip of ``.npy`` files) can raise: a flipped
#: bit can make a member look encrypted (``RuntimeError``) or compressed by an unknown method
#: (``NotImplementedError``), or a length point past the end (``OSError``).
ZIP_ERRORS = (
  zipfile.BadZipFile,
  zlib.error,
  lzma.LZMAError,
  ValueError,
  OSError,
  EOFError,
  KeyError,
  NotImplementedError,
  RuntimeError,
)
# The process's umask, read once (reading it means setting it): a replaced file gets the mode
# a plain open() would have given it, not mkstemp's 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
  """A file object whose contents replace ``path`` when the ``with`` block ends without error.

  ``mode`` is ``'w'`` (text) or ``'wb'``. A symlink at ``path`` is replaced, never followed.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_writer writes whole files: mode 'w' or 'wb', not {mode!r}.")
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  descriptor, temporary = tempfile.mkstemp(
    dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
  )
  try:
    os.chmod(temporary, 0o666 & ~_UMASK)
    with os.fdopen(descriptor, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise
  fsync(directory)  # The rename itself.


def fsync(path: str | os.PathLike[str]) -> None:
  """Flushes ``path`` to disk: a file's contents, or a directory's entries (a rename in it),
  where the platform allows (Windows cannot open a directory)."""
  try:
    descriptor = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(descriptor)
  except OSError:
    pass
  finally:
    os.close(descriptor)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
  """Replaces ``path`` by ``data`` atomically (see :func:`atomic_writer`)."""
  with atomic_writer(path, "wb") as f:
    f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """Replaces ``path`` by ``text`` atomically (see :func:`atomic_writer`)."""
  with atomic_writer(path) as f:
    f.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  """Replaces ``path`` by ``obj`` as indented JSON atomically (see :func:`atomic_writer`)."""
  write_text(path, json.dumps(obj, indent=2) + "\n")


class LockedError(RuntimeError):
  """Another process holds the lock of a directory."""


class DirectoryLock:
  """An exclusive lock on ``directory`` for as long as the ``with`` block (or :meth:`acquire`
  until :meth:`release`) runs.

  The lock file (:data:`LOCK_FILE`) records who holds it, so that a second process can say so:
  ``LockedError: <what> 'runs/x' is in use by pid 123 on host h since 2026-11-30 18:00:00 UTC``.

  Args:
    directory: an existing directory.
    what: how the error names it, e.g. ``'Workdir'``.
    advice: the end of the error, what to do instead.
  """

  def __init__(self, directory: str | os.PathLike[str], what: str = "Directory", advice: str = ""):
    self.directory = os.fspath(directory)
    self.what = what
    self.advice = advice
    self._file: IO[str] | None = None

  @property
  def path(self) -> str:
    return os.path.join(self.directory, LOCK_FILE)

  def acquire(self) -> DirectoryLock:
    if fcntl is None or self._file is not None:
      return self
    # Never follow a symlink planted in the lock file's place.
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
      f = os.fdopen(os.open(self.path, flags, 0o644), "r+")
    except OSError as e:
      raise LockedError(
        f"{self.what} {self.directory!r} cannot be locked ({e.strerror or e} at {self.path})."
        f"{' ' + self.advice if self.advice else ''}"
      ) from None
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = f.read().strip() or "another process"
      f.close()
      raise LockedError(
        f"{self.what} {self.directory!r} is in use by {holder}."
        f"{' ' + self.advice if self.advice else ''}"
      ) from None
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()} since {now}\n")
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
    if self._file is None:
      return
    with contextlib.suppress(OSError):
      self._file.truncate(0)
    self._file.close()  # Closing the descriptor drops the flock.
    self._file = None

  def __enter__(self) -> DirectoryLock:
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()
