"""Which code made a result: the commit of snip-jax's own checkout, never another repository's."""

import subprocess
from pathlib import Path

from snip_jax import provenance


def git(cwd: Path, *args: str) -> str:
  return subprocess.run(
    ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
  ).stdout.strip()


def test_a_checkout_names_its_commit():
  head = git(provenance.ROOT, "rev-parse", "--short", "HEAD")
  changed = git(provenance.ROOT, "status", "--porcelain", "--untracked-files=no")
  expected = f"{head} + uncommitted changes" if changed else head
  assert provenance.code_version() == expected


def test_only_the_top_of_a_checkout_names_a_commit(tmp_path):
  repo = tmp_path / "project"
  (repo / "venv" / "site-packages").mkdir(parents=True)
  git(repo, "init", "-q")
  (repo / "a.txt").write_text("a\n")
  git(repo, "add", "a.txt")
  git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
  head = git(repo, "rev-parse", "--short", "HEAD")
  assert provenance.commit_of(repo) == head
  (repo / "a.txt").write_text("b\n")
  assert provenance.commit_of(repo) == f"{head} + uncommitted changes"
  # snip-jax installed in a virtual environment inside another project's repository.
  assert provenance.commit_of(repo / "venv" / "site-packages") is None
  assert provenance.commit_of(tmp_path) is None  # No repository at all.


def test_no_git_means_no_commit(monkeypatch, tmp_path):
  monkeypatch.setenv("PATH", str(tmp_path))  # No git executable on the PATH.
  assert provenance.commit_of(provenance.ROOT) is None
