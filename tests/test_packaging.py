"""The package as people install it: the core without extras, the wheel, the console script,
its --help, the set-up script's extras, and lint that a run's outputs cannot change."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import snip_jax
from snip_jax import cli, extras, train

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIP = (sys.executable, "-m", "pip")
#: Every top-level module an extra provides, and those of the test and benchmark tools.
NOT_CORE = sorted(
  {m for modules in extras.EXTRAS.values() for m in modules} | {"matplotlib", "torch"}
)


def python_without(modules, code: str, cwd) -> subprocess.CompletedProcess:
  """Runs ``code`` in a fresh interpreter where ``modules`` cannot be imported (as if not
  installed: ``sys.modules[name] = None`` makes importing them fail and ``find_spec`` None)."""
  hide = f"import sys\nHIDDEN = {list(modules)!r}\nfor m in HIDDEN: sys.modules[m] = None\n"
  return subprocess.run(
    [sys.executable, "-c", hide + code], capture_output=True, text=True, cwd=cwd, timeout=600
  )


def test_the_core_library_works_without_any_extra(tmp_path):
  code = """
import jax, jax.numpy as jnp, optax
import snip_jax, snip_jax.models, snip_jax.parallel
from snip_jax import export
model = snip_jax.models.get_model("lenet300")
params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
x, y = jax.random.normal(jax.random.key(1), (8, 28, 28, 1)), jnp.arange(8) % 10
loss = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(
  model.apply({"params": p}, x), y).mean()
mask = snip_jax.top_k_mask(snip_jax.connection_sensitivity(loss, params, x, y), sparsity=0.9)
tx = snip_jax.masked(optax.sgd(0.1), mask)
export.export_sparse("m.npz", snip_jax.apply_mask(params, mask), mask)
restored = export.load_dense("m.npz").params
print(snip_jax.count_prunable(params), round(snip_jax.sparsity(restored), 6))
print(sorted(m for m in sys.modules if sys.modules[m] and m.split(".")[0] in HIDDEN))
"""
  result = python_without(NOT_CORE, code, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == ["266200 0.9", "[]"]


@pytest.mark.parametrize(
  ("code", "needs"),
  [
    ("import snip_jax.data", "snip_jax.data needs snip-jax[data] (tensorflow_datasets"),
    ("from snip_jax import export; export.read_run", "snip_jax.train needs snip-jax[data,exp"),
  ],
)
def test_a_part_without_its_extra_names_the_pip_install(tmp_path, code, needs):
  result = python_without(NOT_CORE, code, tmp_path)
  assert result.returncode == 1
  assert needs in result.stderr
  assert "pip install 'snip-jax[" in result.stderr.splitlines()[-1]


def test_the_command_without_its_extras_is_one_error_line(tmp_path):
  code = "from snip_jax import cli; cli.train_main(['snip-jax-train'])"
  result = python_without(["orbax", "tqdm", "tensorboardX"], code, tmp_path)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    "error: snip_jax.train needs snip-jax[data,experiments] (orbax, tqdm, tensorboardX not "
    "installed): pip install 'snip-jax[data,experiments]', or pip install -e "
    "'.[data,experiments]' in a checkout."
  ]


def test_pyproject_is_the_one_source_of_dependencies_and_version():
  project = PYPROJECT["project"]
  assert project["dynamic"] == ["version"] and "version" not in project
  assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "snip_jax.__version__"}
  assert importlib.metadata.version("snip-jax") == snip_jax.__version__
  extras_ = project["optional-dependencies"]
  assert set(extras_) == {"data", "experiments", "bench", "dev"}
  assert extras_["dev"][0] == "snip-jax[data,experiments,bench]"
  # Every dependency has a lower bound, and only ruff an upper one (its formatter's style).
  for requirement in project["dependencies"] + [r for e in extras_.values() for r in e[1:]]:
    assert ">=" in requirement or requirement.startswith("ruff=="), requirement
  assert "matplotlib" not in " ".join(project["dependencies"])
  assert (ROOT / "requirements.txt").read_text().splitlines()[-1] == "-e .[data,experiments]"
  assert not (ROOT / "requirements-dev.txt").exists()


def test_help_exits_zero_and_lists_every_flag_and_config_field(capsys):
  assert cli.train_main(["snip-jax-train", "--help"]) == 0
  text = capsys.readouterr().out
  assert text.startswith("usage: snip-jax-train [--config=NAME_OR_PATH]")
  for flag in ("--config (default: default)", "--workdir", "--overwrite", "--process_id"):
    assert f"\n  {flag}" in text
  defaults = train.default_config()
  for field in train.FIELDS:
    assert f"\n  {field.name} = {defaults[field.name]!r}\n" in text
    assert " ".join(field.help.split()[:3]) in " ".join(text.split())
  # The values shown are those of the chosen config.
  assert cli.train_main(["snip-jax-train", "--config=lenet5_mnist", "-h"]) == 0
  text = capsys.readouterr().out
  assert "\n  model = 'lenet5'\n" in text and "\n  sparsity = 0.99\n" in text


def test_configs_load_by_name_or_path(tmp_path):
  names = train.config_names()
  assert "default" in names and "lenet5_mnist" in names and "vgg_d_cifar10" in names
  assert len(names) == 17
  assert train.load_config("lenet5_mnist").model == "lenet5"
  assert train.load_config("lenet5_mnist.py") == train.load_config("lenet5_mnist")
  # The checkout's experiments/configs is the same directory, so its paths keep working.
  assert (ROOT / "experiments" / "configs").resolve() == ROOT / "snip_jax" / "configs"
  assert train.load_config(ROOT / "experiments" / "configs" / "vgg_c_cifar10.py").model == "vgg_c"
  own = tmp_path / "mine.py"
  own.write_text(
    "from snip_jax.train import default_config\n\n\ndef get_config():\n"
    "  config = default_config()\n  config.sparsity = 0.5\n  return config\n"
  )
  assert train.load_config(own).sparsity == 0.5
  with pytest.raises(FileNotFoundError, match=r"one of: alexnet_b_cifar10, .*, wrn_22_8_cifar10"):
    train.load_config("lenet5_mnistt")


@pytest.mark.slow
def test_the_wheel_holds_a_whole_package_and_its_command_trains(tmp_path, tiny_mnist):
  subprocess.run(
    [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), ROOT],
    check=True,
    capture_output=True,
    timeout=600,
  )
  (wheel,) = (tmp_path / "dist").glob("snip_jax-*.whl")
  assert wheel.name.startswith(f"snip_jax-{snip_jax.__version__}-py3-none-any")
  names = set(zipfile.ZipFile(wheel).namelist())
  assert "snip_jax/py.typed" in names and "snip_jax/cli.py" in names
  assert {f"snip_jax/configs/{n}.py" for n in train.config_names()} <= names
  assert not [n for n in names if n.split("/")[0] in ("tests", "experiments", "benchmarks")]
  info = f"snip_jax-{snip_jax.__version__}.dist-info"
  entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
  assert "snip-jax-train = snip_jax.cli:main" in entry_points
  metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
  for extra in ("data", "experiments", "bench", "dev"):
    assert f"Provides-Extra: {extra}" in metadata
  assert 'Requires-Dist: tensorflow-datasets>=4.9.10; extra == "data"' in metadata

  # Installed on its own (the dependencies are this environment's), run from elsewhere.
  site = tmp_path / "site"
  subprocess.run(
    [*PIP, "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
    check=True,
    capture_output=True,
    timeout=600,
  )
  env = {**os.environ, "PYTHONPATH": str(site)}
  command = [sys.executable, str(site / "bin" / "snip-jax-train")]
  where = subprocess.run(
    [sys.executable, "-c", "import snip_jax; print(snip_jax.__file__)"],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    env=env,
    check=True,
  )
  assert where.stdout.strip() == str(site / "snip_jax" / "__init__.py")
  helped = subprocess.run(
    [*command, "--config=vgg_d_cifar10", "--help"], capture_output=True, text=True, env=env
  )
  assert helped.returncode == 0 and "\n  model = 'vgg_d'\n" in helped.stdout
  workdir = tmp_path / "run"
  trained = subprocess.run(
    [
      *command,
      "--config=lenet300_mnist",
      f"--workdir={workdir}",
      *TINY_RUN,
      f"--config.data_dir={tiny_mnist}",
    ],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    env=env,
    timeout=600,
  )
  assert trained.returncode == 0, trained.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["model"] == "lenet300" and summary["dataset"] == "mnist"
  assert summary["steps"] == 9 and summary["num_kept"] == 5324  # 180 examples / 20; 2% of 266,200.


#: One epoch of the tiny dataset; the data dir comes last.
TINY_RUN = ("--config.num_epochs=1", "--config.batch_size=20", "--config.score_batch_size=20")


def fake_venv(root: Path) -> Path:
  """A ``.venv`` whose python records its arguments instead of installing anything."""
  bin_dir = root / ".venv" / "bin"
  bin_dir.mkdir(parents=True)
  python = bin_dir / "python"
  python.write_text(f'#!/bin/sh\necho "$@" >> {root / "pip.log"}\n')
  python.chmod(0o755)
  return root / "pip.log"


def test_setup_installs_the_runtime_for_the_main_job_and_the_tools_for_the_tests(tmp_path):
  (tmp_path / "scripts").mkdir()
  for name in ("scripts/setup.sh", "scripts/constraints.txt", "pyproject.toml"):
    shutil.copy(ROOT / name, tmp_path / name)
  log = fake_venv(tmp_path)
  # The tools the script uses, and no apt-get: the dataset step is not what is tested here.
  tools = tmp_path / "bin"
  tools.mkdir()
  for tool in ("cat", "sha256sum", "cut", "tr", "sort", "id", "dirname"):
    (tools / tool).symlink_to(shutil.which(tool))

  def setup(kind: str) -> str | None:
    """The pip install a set-up ran (its last argument), or None."""
    before = log.read_text().splitlines() if log.exists() else []
    subprocess.run(
      [shutil.which("bash"), "-c", f"source scripts/setup.sh {kind}"],
      cwd=tmp_path,
      env={"PATH": str(tools), "HOME": str(tmp_path)},
      check=True,
      capture_output=True,
    )
    after = log.read_text().splitlines() if log.exists() else []
    assert len(after) - len(before) in (0, 1)
    assert all(" -c scripts/constraints.txt -e " in line for line in after)
    return after[-1].split()[-1] if len(after) > len(before) else None

  assert [setup(kind) for kind in ("runtime", "runtime", "dev", "runtime", "bench")] == [
    ".[data,experiments]",  # The main job: no test or benchmark tools.
    None,  # Already there.
    ".[bench,data,dev,experiments]",  # The tests: everything.
    None,  # The main job after the tests: nothing to add, nothing removed.
    None,
  ]
  with open(tmp_path / "pyproject.toml", "a") as f:
    f.write("\n# A changed dependency.\n")
  assert setup("runtime") == ".[data,experiments]"  # What this set-up needs, again.


def test_a_runs_outputs_change_nothing_lint_sees(tmp_path):
  """The main job writes runs/ at the root; ruff must still take the experiments' sibling
  modules (``import runs``) for first-party ones, as CI's clean clone does."""
  ruff = Path(sys.executable).with_name("ruff")
  for name in ("snip_jax", "experiments", "benchmarks", "tests"):
    shutil.copytree(
      ROOT / name, tmp_path / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
  shutil.copy(ROOT / "pyproject.toml", tmp_path)
  run = tmp_path / "runs" / "lenet300_fashion_mnist_sp0.98_seed0_f54c18c2"
  run.mkdir(parents=True)
  (run / "config.json").write_text("{}\n")
  (tmp_path / "runs" / "notes.py").write_text("import os\nimport sys\n")
  for check in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
    result = subprocess.run([str(ruff), *check], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
