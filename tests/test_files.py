"""Atomic files and directory locks (snip_jax.files): never a cut-off file, one owner at a time."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from snip_jax import files

pytestmark = pytest.mark.attack  # README, Reliability: the attack cases.


def test_atomic_write_replaces_the_whole_file(tmp_path):
  path = tmp_path / "config.json"
  files.write_json(path, {"seed": 0})
  files.write_json(path, {"seed": 1})
  assert json.loads(path.read_text()) == {"seed": 1}
  assert os.listdir(tmp_path) == ["config.json"]  # No temporary file left behind.
  plain = tmp_path / "plain.json"
  plain.write_text("{}")
  assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # Not mkstemp's 0600.


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "config.json"
  files.write_json(path, {"seed": 0})

  def full_disk(descriptor):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", full_disk)
  with pytest.raises(OSError, match="No space left"):
    files.write_json(path, {"seed": 1, "padding": "x" * 10_000})
  assert json.loads(path.read_text()) == {"seed": 0}
  assert os.listdir(tmp_path) == ["config.json"]

  monkeypatch.undo()
  with pytest.raises(ZeroDivisionError), files.atomic_writer(path) as f:
    f.write('{"seed": 2')
    1 / 0  # noqa: B018 - The writer fails halfway.
  assert json.loads(path.read_text()) == {"seed": 0}
  assert os.listdir(tmp_path) == ["config.json"]


def test_a_symlink_in_the_files_place_is_replaced_not_followed(tmp_path):
  outside = tmp_path / "outside.json"
  outside.write_text("precious\n")
  inside = tmp_path / "workdir"
  inside.mkdir()
  (inside / "summary.json").symlink_to(outside)
  files.write_json(inside / "summary.json", {"ours": True})
  assert outside.read_text() == "precious\n"
  assert not (inside / "summary.json").is_symlink()
  with pytest.raises(ValueError, match="whole files"):
    files.atomic_writer(inside / "x", "a").__enter__()


def test_a_locked_directory_names_its_holder_and_is_free_once_released(tmp_path):
  with files.DirectoryLock(tmp_path, "Workdir", "Wait for it to finish."):
    with pytest.raises(files.LockedError) as error:
      files.DirectoryLock(tmp_path, "Workdir", "Wait for it to finish.").acquire()
    message = str(error.value)
    assert f"is in use by pid {os.getpid()} on host " in message
    assert message.startswith(f"Workdir {str(tmp_path)!r}") and " UTC." in message
    assert message.endswith("Wait for it to finish.") and "\n" not in message
  with files.DirectoryLock(tmp_path):  # Released: free again.
    pass


def test_a_killed_holder_never_blocks_the_next_run(tmp_path):
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      textwrap.dedent(
        f"""
        import sys, time
        from snip_jax import files
        lock = files.DirectoryLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
        """
      ),
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(files.LockedError, match=f"pid {holder.pid} "):
      files.DirectoryLock(tmp_path).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
  with files.DirectoryLock(tmp_path):  # The kernel dropped the killed process's lock.
    pass


def test_a_symlink_in_the_lock_files_place_is_refused(tmp_path):
  (tmp_path / files.LOCK_FILE).symlink_to(tmp_path / "elsewhere")
  with pytest.raises(files.LockedError, match="cannot be locked"):
    files.DirectoryLock(tmp_path, "Workdir").acquire()
  assert not (tmp_path / "elsewhere").exists()
