"""Which code made a result (the commit of snip-jax's own checkout, never another repository's) and
on which CPU type."""

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


def test_the_cpu_type_names_the_family_and_model_where_the_name_is_bare():
  intel = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
    "model name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: another\n"
  )
  assert provenance.cpu_type_of(intel) == "Intel(R) Xeon(R) Processor family 6 model 143"
  amd = "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
  assert provenance.cpu_type_of(amd) == "AMD EPYC family 26 model 2"
  # No x86 fields (an ARM /proc/cpuinfo) or no file: the architecture.
  assert provenance.cpu_type_of("processor\t: 0\nBogoMIPS\t: 50.00\n", "aarch64") == "aarch64 CPU"
  assert provenance.cpu_type_of("", "") == "unknown CPU"
  assert provenance.cpu_type() and provenance.cpu_type() == provenance.cpu_type()
