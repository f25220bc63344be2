"""A run's workdir is its own: one owner at a time, only files snip-jax wrote, no links followed.

These call ``workdir.prepare`` directly (no training); the end-to-end cases, a second CLI run
in a workdir in use included, are in ``test_reliability.py``.
"""

import json
import os
import shutil

import pytest
from helpers import config

from snip_jax import files
from snip_jax.train import workdir as workdir_lib

pytestmark = pytest.mark.attack  # README, Reliability: the attack cases.


def snapshot(directory) -> dict:
  """Every entry under ``directory``: a file's bytes, a link's target, a directory's name."""
  found = {}
  for root, dirs, names in os.walk(directory):
    for name in dirs + names:
      path = os.path.join(root, name)
      if os.path.islink(path):
        found[path] = ("link", os.readlink(path))
      elif os.path.isfile(path):
        with open(path, "rb") as f:
          found[path] = f.read()
      else:
        found[path] = "dir"
  return found


def a_run(directory, **overrides):
  """A workdir holding a finished run of ``config(**overrides)`` (its files, no real arrays)."""
  os.makedirs(directory / "checkpoints" / "18")
  (directory / "checkpoints" / "18" / "state").write_bytes(b"arrays")
  workdir_lib.write_json(str(directory / "config.json"), config(**overrides).to_dict())
  workdir_lib.write_json(str(directory / "summary.json"), {"steps": 18})
  (directory / "mask.npz").write_bytes(b"mask")


def test_a_workdir_in_use_is_refused_naming_the_holder_and_free_after(tmp_path):
  with workdir_lib.prepare(str(tmp_path), config(), overwrite=False):
    before = snapshot(tmp_path)
    for overwrite in (False, True):
      with pytest.raises(files.LockedError, match=rf"in use by pid {os.getpid()} on host"):
        workdir_lib.prepare(str(tmp_path), config(seed=1), overwrite=overwrite)
    assert snapshot(tmp_path) == before
  with workdir_lib.prepare(str(tmp_path), config(seed=1), overwrite=False):
    pass


def test_a_refused_prepare_releases_the_lock(tmp_path):
  a_run(tmp_path)
  with pytest.raises(ValueError, match="another config"):
    workdir_lib.prepare(str(tmp_path), config(seed=1), overwrite=False)
  with workdir_lib.prepare(str(tmp_path), config(), overwrite=False):  # Resumes: not locked.
    pass


@pytest.mark.parametrize("overwrite", [False, True])
def test_files_snip_jax_did_not_write_are_never_touched(tmp_path, overwrite):
  (tmp_path / "config.json").write_text('{"name": "my other tool"}\n')
  (tmp_path / "metrics.jsonl").write_text("precious\n")
  before = snapshot(tmp_path)
  with pytest.raises(ValueError, match=r"holds 'config.json', which snip-jax did not write"):
    workdir_lib.prepare(str(tmp_path), config(), overwrite=overwrite)
  assert snapshot(tmp_path) == before  # Not even a lock file.


def test_a_run_from_before_the_lock_file_is_ours(tmp_path):
  a_run(tmp_path)
  assert workdir_lib.is_ours(str(tmp_path))
  with workdir_lib.prepare(str(tmp_path), config(), overwrite=False):
    pass
  assert (tmp_path / files.LOCK_FILE).exists()
  (tmp_path / "notes.txt").write_text("mine\n")  # Files of other names are never ours to touch.
  with workdir_lib.prepare(str(tmp_path), config(seed=1), overwrite=True):
    pass
  assert sorted(os.listdir(tmp_path)) == [files.LOCK_FILE, "notes.txt"]


def test_a_linked_checkpoints_directory_is_refused_and_overwrite_removes_only_the_link(tmp_path):
  elsewhere = tmp_path / "elsewhere"
  a_run(elsewhere)
  workdir = tmp_path / "run"
  workdir.mkdir()
  workdir_lib.write_json(str(workdir / "config.json"), config().to_dict())
  (workdir / "checkpoints").symlink_to(elsewhere / "checkpoints")
  before = snapshot(tmp_path)
  with pytest.raises(ValueError, match=r"checkpoints is a symbolic link .* --overwrite"):
    workdir_lib.prepare(str(workdir), config(), overwrite=False)
  assert snapshot(tmp_path) == {**before, str(workdir / files.LOCK_FILE): b""}
  with workdir_lib.prepare(str(workdir), config(seed=1), overwrite=True):
    pass
  assert not os.path.lexists(workdir / "checkpoints")
  assert (elsewhere / "checkpoints" / "18" / "state").read_bytes() == b"arrays"


def test_overwrite_that_cannot_delete_fails_loudly(tmp_path, monkeypatch):
  a_run(tmp_path)

  def refuse(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", path)

  monkeypatch.setattr(shutil, "rmtree", refuse)
  with pytest.raises(ValueError, match=r"--overwrite cannot delete .*checkpoints \(Permission"):
    workdir_lib.prepare(str(tmp_path), config(seed=1), overwrite=True)
  monkeypatch.undo()
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0
  with workdir_lib.prepare(str(tmp_path), config(), overwrite=False):  # Unlocked, resumable.
    pass
