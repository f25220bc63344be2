"""The Colab notebook is stored clean, and runs top to bottom offline on a small setting.

The run executes ``experiments/notebooks/snip_colab.ipynb`` in a fresh Jupyter kernel (nbclient)
with the settings of its ``parameters`` cell overridden the way papermill does it (a cell
inserted after it), on the real Fashion-MNIST, two host devices, and no download allowed.
"""

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").

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
  parameters = notebook.cells[parameter_cell_index(notebook)].source
  for name in (*PARAMETERS, "REPO_DIR", "DATA_DIR", "WORKDIR"):
    assert f"\n{name} = " in f"\n{parameters}", name


def test_notebook_runs_offline(tmp_path, real_fashion_mnist):
  workdir = tmp_path / "runs"
  notebook = with_parameters(
    nbformat.read(NOTEBOOK, as_version=4),
    REPO_DIR=str(ROOT),
    WORKDIR=str(workdir),
    **PARAMETERS,
  )
  kernel = KernelManager(kernel_name="python3")
  # This interpreter, where snip_jax is installed: with any other the install cell would pip
  # install into it.
  assert kernel.format_kernel_cmd()[0] == sys.executable
  client = NotebookClient(
    notebook, km=kernel, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
  )
  env = {
    **os.environ,
    "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
    f"--xla_force_host_platform_device_count={DEVICES}".strip(),
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # Figures become outputs.
    "IPYTHONDIR": str(tmp_path / "ipython"),  # The kernel's history database, not in $HOME.
  }
  # The kernel's own output goes to a file, not to this process's stdout and stderr: under
  # pytest-xdist those are the worker's channel to its controller, and a kernel that inherited
  # them died at start-up in 2 of 3 parallel runs here, leaving the test waiting for it forever.
  with open(tmp_path / "kernel.log", "w") as log:
    # Raises CellExecutionError, with the traceback, if a cell fails.
    client.execute(env=env, stdout=log, stderr=log)

  cells = [c for c in notebook.cells if c.cell_type == "code"]
  outputs = "\n".join(text_output(c) for c in cells)
  assert "snip_jax is already installed: nothing to install." in outputs
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
