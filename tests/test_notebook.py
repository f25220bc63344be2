"""The Colab notebook is stored clean, sets itself up, and runs top to bottom offline.

Its set-up cell (the code cell after the ``parameters`` cell) uses the checkout the notebook is
opened from, or clones ``REPO_URL`` and installs it with pip: executed here with
``subprocess.run`` replaced by a recorder, so that neither git nor pip runs. The end-to-end run
executes ``experiments/notebooks/snip_colab.ipynb`` in a fresh Jupyter kernel (nbclient) started
in its directory, as when it is opened from the repository, with the settings of its
``parameters`` cell overridden the way papermill does it (a cell inserted after it), on a small
setting, the real Fashion-MNIST, two host devices, and no download allowed.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import numpy as np
import pytest
from helpers import xla_flags
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "notebooks" / "snip_colab.ipynb"
#: Small enough for CI (a few seconds of training per run) and still the real data and model.
PARAMETERS = dict(
  DOWNLOAD=False, SPARSITY=0.98, TRAIN_EXAMPLES=3000, NUM_EPOCHS=2, PARALLEL_EPOCHS=1
)
DEVICES = 2


def parameter_cell_index(notebook) -> int:
  (index,) = [
    i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
  ]
  return index


def with_parameters(notebook, **parameters):
  """``notebook`` with a cell assigning ``parameters`` after its ``parameters`` cell."""
  source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
  cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
  cell.id = "injected-parameters"
  index = parameter_cell_index(notebook)
  notebook.cells.insert(index + 1, cell)
  return notebook


def setup_cell(notebook):
  """The set-up cell: the first code cell after the ``parameters`` cell."""
  cells = notebook.cells[parameter_cell_index(notebook) + 1 :]
  return next(cell for cell in cells if cell.cell_type == "code")


def text_output(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_notebook_is_stored_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
  nbformat.validate(notebook)
  assert notebook.nbformat == 4
  assert notebook.metadata == {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
  }
  for cell in notebook.cells:
    assert set(cell.metadata) <= {"tags"}, (cell.id, cell.metadata)  # No Colab or run state.
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.id
  # The settings, the repository's location first, are the first code cell: a fresh Colab
  # runtime starts there.
  index = parameter_cell_index(notebook)
  assert index == min(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code")
  parameters = notebook.cells[index].source
  for name in ("REPO_URL", "REPO_DIR", *PARAMETERS, "DATA_DIR", "WORKDIR"):
    assert f"\n{name} = " in f"\n{parameters}", name
  # The Colab link and REPO_URL name the same repository.
  link = "https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/"
  assert f"]({link}experiments/notebooks/snip_colab.ipynb)" in notebook.cells[0].source
  assert '"https://github.com/<owner>/<repo>")' in parameters


@pytest.fixture
def commands(monkeypatch):
  """The commands the set-up cell runs, with ``subprocess.run`` replaced by a recorder.

  ``git clone`` writes what makes a checkout (``pyproject.toml``, ``snip_jax/``), unless the URL
  ends in ``missing``.
  """
  commands = []

  def run(command, **kwargs):
    commands.append(command)
    if command[:2] == ["git", "clone"]:
      if command[-2].endswith("missing"):
        return subprocess.CompletedProcess(command, 128, "", "fatal: repository not found\n")
      (Path(command[-1]) / "snip_jax").mkdir(parents=True)
      (Path(command[-1]) / "snip_jax" / "__init__.py").touch()
      (Path(command[-1]) / "pyproject.toml").touch()
    return subprocess.CompletedProcess(command, 0, "", "")

  monkeypatch.setattr(subprocess, "run", run)
  monkeypatch.setattr(sys, "path", list(sys.path))  # The cell may put the checkout first.
  monkeypatch.delenv("SNIP_JAX_REPO_URL", raising=False)
  return commands


def run_setup(**parameters) -> dict:
  """The notebook's variables after its parameters cell, ``parameters`` and its set-up cell."""
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  variables = {}
  exec(notebook.cells[parameter_cell_index(notebook)].source, variables)
  variables.update(parameters)
  exec(setup_cell(notebook).source, variables)
  return variables


@pytest.mark.parametrize("opened_from", ["checkout", "elsewhere"])
def test_setup_uses_the_checkout(opened_from, commands, monkeypatch, tmp_path, capsys):
  # Opened from the repository, the kernel runs in experiments/notebooks/; elsewhere, REPO_DIR
  # names the checkout (as papermill would). This environment has it installed (pip install -e).
  if opened_from == "checkout":
    monkeypatch.chdir(NOTEBOOK.parent)
    variables = run_setup()
  else:
    monkeypatch.chdir(tmp_path)
    variables = run_setup(REPO_DIR=str(ROOT))
  assert commands == []  # Neither git nor pip.
  assert variables["REPO_DIR"] == str(ROOT)
  assert variables["WORKDIR"] == str(ROOT / "runs" / "notebook")
  assert capsys.readouterr().out == (
    f"Using the snip-jax checkout in {ROOT}.\n"
    "snip_jax is already installed from there: nothing to install.\n"
  )


def test_setup_clones_and_installs(commands, monkeypatch, tmp_path, capsys):
  # A fresh Colab runtime: no checkout in /content, REPO_URL from the environment.
  monkeypatch.chdir(tmp_path)
  url = "https://github.com/someone/snip-jax"
  monkeypatch.setenv("SNIP_JAX_REPO_URL", url)
  variables = run_setup()
  repo_dir = str(tmp_path.resolve() / "snip-jax")
  assert variables["REPO_URL"] == url and variables["REPO_DIR"] == repo_dir
  (git, pip) = commands
  assert git == ["git", "clone", "--depth", "1", url, repo_dir]
  install = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{repo_dir}[data,experiments]"]
  assert pip[:7] == install
  # On a GPU or TPU machine, JAX with its accelerator's extra.
  assert set(pip[7:]) <= {"jax[tpu]", "jax[cuda12]", "jax[cuda13]"} and len(pip) <= 8
  assert sys.path[0] == repo_dir  # This session imports the clone, without a restart.
  out = capsys.readouterr().out
  assert (
    f"Cloning {url} into {repo_dir}.\n" in out and f"Installed snip-jax from {repo_dir}.\n" in out
  )
  # Run again, the cell finds the clone installed and runs nothing more.
  monkeypatch.delitem(sys.modules, "snip_jax", raising=False)  # Another test imported ROOT's.
  assert run_setup()["REPO_DIR"] == repo_dir and len(commands) == 2
  assert capsys.readouterr().out == (
    f"Using the snip-jax checkout in {repo_dir}.\n"
    "snip_jax is already installed from there: nothing to install.\n"
  )


@pytest.mark.parametrize(
  ("url", "error"),
  [
    (None, r"REPO_URL = 'https://github.com/<owner>/<repo>' is the placeholder: set it"),
    (
      "https://github.com/someone/missing",
      r"(?s)Could not clone REPO_URL = .*repository not found",
    ),
  ],
)
def test_setup_cannot_clone(url, error, commands, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  with pytest.raises((ValueError, RuntimeError), match=error):
    run_setup(**({} if url is None else {"REPO_URL": url}))
  assert commands == ([] if url is None else [commands[0]])  # Never pip.
  assert all(command[:2] == ["git", "clone"] for command in commands)


#: The notebook runs in about a minute here. A kernel that dies mid-run can leave nbclient waiting
#: for its output forever (seen once in a parallel run): past this, the test fails instead.
LIMIT_S = 600


def execute(client: NotebookClient, kernel: KernelManager, log: Path, **kwargs) -> None:
  """``client.execute(**kwargs)``, failed after :data:`LIMIT_S` with the end of the kernel's
  ``log``. nbclient runs in a thread of its own, left behind (a daemon) if it never returns."""
  errors = []

  def target():
    try:
      client.execute(**kwargs)
    except BaseException as e:  # Re-raised in the test's thread.
      errors.append(e)

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(LIMIT_S)
  if thread.is_alive():
    alive = kernel.has_kernel and kernel.is_alive()
    with contextlib.suppress(Exception):
      kernel.shutdown_kernel(now=True)
    pytest.fail(
      f"The notebook did not finish in {LIMIT_S} s; its kernel was "
      f"{'still running' if alive else 'gone'}. The end of its log:\n{log.read_text()[-3000:]}"
    )
  if errors:
    raise errors[0]


@pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").
def test_notebook_runs_offline(tmp_path, real_fashion_mnist):
  workdir = tmp_path / "runs"
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  setup = setup_cell(notebook)  # Found before the injected cell follows the parameters cell.
  notebook = with_parameters(notebook, WORKDIR=str(workdir), **PARAMETERS)
  kernel = KernelManager(kernel_name="python3")
  # This interpreter, where snip_jax is installed from this checkout: with any other the set-up
  # cell would pip install into it.
  assert kernel.format_kernel_cmd()[0] == sys.executable
  # In the notebook's directory, as when it is opened from the repository: REPO_DIR is found.
  notebook_dir_before = sorted(os.listdir(NOTEBOOK.parent))
  client = NotebookClient(
    notebook, km=kernel, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
  )
  env = {
    **os.environ,
    "XLA_FLAGS": xla_flags(f"--xla_force_host_platform_device_count={DEVICES}"),
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # Figures become outputs.
    "IPYTHONDIR": str(tmp_path / "ipython"),  # The kernel's history database, not in $HOME.
  }
  # The kernel's own output goes to a file, not to this process's stdout and stderr: under
  # pytest-xdist those are the worker's channel to its controller, and a kernel that inherited
  # them died at start-up in 2 of 3 parallel runs here, leaving the test waiting for it forever.
  with open(tmp_path / "kernel.log", "w") as log:
    # Raises CellExecutionError, with the traceback, if a cell fails.
    execute(client, kernel, tmp_path / "kernel.log", env=env, stdout=log, stderr=log)

  cells = [c for c in notebook.cells if c.cell_type == "code"]
  outputs = "\n".join(text_output(c) for c in cells)
  # The local checkout, as it is: no git, no pip, and nothing written next to the notebook.
  assert text_output(setup) == (
    f"Using the snip-jax checkout in {ROOT}.\n"
    "snip_jax is already installed from there: nothing to install.\n"
  )
  assert sorted(os.listdir(NOTEBOOK.parent)) == notebook_dir_before
  # The three-call loop: exactly κ of the 266,200 kernel weights, still zero after a step.
  assert re.search(r"^total +266,200 +5,324 +98\.00%$", outputs, re.M)
  assert "measured sparsity after one step: 98.0000%" in outputs
  images = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
  assert len(images) == 2  # The mask picture, and the SNIP vs random comparison.

  summaries = {
    name: json.loads((workdir / name / "summary.json").read_text())
    for name in ("snip", "random", "snip_all_devices")
  }
  for name, summary in summaries.items():
    assert summary["criterion"] == ("random" if name == "random" else "snip")
    assert summary["train_examples"] == PARAMETERS["TRAIN_EXAMPLES"]
    assert summary["num_kept"] == 5_324 and summary["num_prunable"] == 266_200
    assert summary["sparsity"] == 1 - 5_324 / 266_200  # Measured on the trained params.
    with np.load(workdir / name / "mask.npz") as mask:
      assert int(sum(mask[k].sum() for k in mask.files if mask[k].ndim == 2)) == 5_324
  for name in ("snip", "random"):
    lines = (workdir / name / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == PARAMETERS["NUM_EPOCHS"]
  assert summaries["snip_all_devices"]["epochs"] == PARAMETERS["PARALLEL_EPOCHS"]
  assert [summaries[n]["devices"] for n in summaries] == [1, 1, DEVICES]
  # SNIP shapes the layers; random pruning keeps about 2% of each.
  snip_rows, random_rows = (summaries[n]["per_layer"] for n in ("snip", "random"))
  assert snip_rows[-1]["sparsity"] < 0.9 and random_rows[-1]["sparsity"] > 0.95
  # On 3,000 images in 2 epochs SNIP's network learns, the random one barely starts (chance: 0.1).
  accuracy = {name: summary["test_accuracy"] for name, summary in summaries.items()}
  assert accuracy["snip"] > 0.6 and accuracy["snip_all_devices"] > 0.5
  assert accuracy["random"] < accuracy["snip"] - 0.2
  # The data-parallel section ran on both host devices.
  assert f"mesh {{'batch': {DEVICES}}} over {DEVICES} device(s)" in outputs
  assert outputs.count("images (50, 28, 28, 1)") == DEVICES
