"""Every packaged config (snip_jax/configs) runs end to end for a few steps on tiny data.

One parametrised test: each paper row (LeNets, AlexNets, VGGs, WRNs, LSTMs, GRUs) is initialised,
pruned by SNIP at its sparsity (exact κ), trained for a few masked steps and evaluated, through
the same ``train_and_evaluate`` the CLI calls; one CIFAR-10 config also goes through the CLI.
The data are tiny random datasets in the original MNIST and CIFAR-10 file formats.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli, write_mnist_like
from test_models import COUNTS

from benchmarks.mock_data import write_cifar10
from snip_jax import data, models, provenance, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "snip_jax" / "configs"
CONFIGS = train.config_names()
TINY = dict(num_epochs=1, batch_size=6, score_batch_size=6, eval_batch_size=8)


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir with tiny random 'mnist' (40 + 10) and 'cifar10' (20 + 6) datasets."""
  root = tmp_path_factory.mktemp("tiny")
  for name in ("mnist", "cifar10"):
    (root / name).mkdir()
  write_mnist_like(root / "mnist", num_train=40, num_test=10)
  write_cifar10(root / "cifar10", per_batch=4, num_test=6)
  data_dir = str(root / "tfds")
  for name in ("mnist", "cifar10"):
    data.ensure_prepared(name, data_dir, str(root / name))
  return data_dir


def test_there_is_a_config_per_paper_row():
  assert tuple(sorted(p.stem for p in CONFIG_DIR.glob("[!_]*.py"))) == CONFIGS
  rows = {f"{name}_{spec.paper_dataset}" for name, spec in models.MODELS.items()}
  assert rows <= set(CONFIGS)


def test_the_default_config_file_is_the_librarys_default():
  defaults = train.default_config().to_dict()
  assert train.load_config(CONFIG_DIR / "default.py").to_dict() == defaults
  # The default experiment is the paper's LeNet-300-100 row on Fashion-MNIST.
  assert train.load_config(CONFIG_DIR / "lenet300_fashion_mnist.py").to_dict() == defaults


def test_cifar10_configs_share_the_papers_recipe():
  """Each CIFAR-10 config starts from vgg_d_cifar10's recipe: the same everywhere."""
  recipe = train.load_config(CONFIG_DIR / "vgg_d_cifar10.py").to_dict()
  del recipe["model"], recipe["sparsity"]
  cifar = [m for m in CONFIGS if m.endswith("_cifar10")]
  assert len(cifar) == 8
  for module in cifar:
    config = train.load_config(CONFIG_DIR / f"{module}.py").to_dict()
    assert {k: v for k, v in config.items() if k in recipe} == recipe, module


@pytest.mark.slow
def test_config_files_load_from_anywhere(tmp_path):
  """Each file needs only the installed package, whatever the directory: by path, by the
  checkout's experiments/configs link and by name."""
  code = (
    "import sys; from snip_jax.train.config import load_config\n"
    "for path in sys.argv[1:]: print(load_config(path).model)"
  )
  link = ROOT / "experiments" / "configs"
  paths = [str(d / f"{m}.py") for d in (CONFIG_DIR, link) for m in CONFIGS] + list(CONFIGS)
  result = subprocess.run(
    [sys.executable, "-c", code, *paths], capture_output=True, text=True, cwd=tmp_path
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == [train.load_config(m).model for m in CONFIGS] * 3


@pytest.mark.slow
@pytest.mark.parametrize("module", CONFIGS)
def test_config_runs_a_few_steps(tmp_path, tiny_data_dir, module):
  config = train.load_config(CONFIG_DIR / f"{module}.py")
  assert config.dataset in data.DATASETS
  assert config.augment == (config.dataset == "cifar10")  # The paper's recipe.
  config.update(TINY, data_dir=tiny_data_dir)
  if config.dataset == "fashion_mnist":
    config.dataset = "mnist"  # The tiny data is in MNIST's place; the format is the same.

  summary = train.train_and_evaluate(config, str(tmp_path / "run"))

  num_params, num_prunable = COUNTS[config.model]
  if config.prune_biases:  # The authors' code's MNIST recipe prunes the biases too.
    num_prunable = num_params
  assert (summary["num_params"], summary["num_prunable"]) == (num_params, num_prunable)
  kappa = round((1 - config.sparsity) * num_prunable)
  assert summary["num_kept"] == kappa
  # Measured on the params after the training steps: pruned weights are still exactly zero.
  assert summary["sparsity"] == pytest.approx(1 - kappa / num_prunable, abs=1e-12)
  assert isinstance(summary["collapsed_layers"], list)
  assert summary["steps"] == len(data.load_split(config.dataset, "train", tiny_data_dir)[1]) // 6
  metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  assert len(metrics) == 1 and math.isfinite(metrics[0]["train_loss"])
  assert math.isfinite(summary["test_loss"])
  assert summary["code"] == provenance.code_version()  # The commit that made it.


@pytest.mark.slow
def test_cifar10_config_file_through_the_cli(tmp_path, tiny_data_dir):
  workdir = tmp_path / "run"
  result = run_cli(
    "--config",
    str(ROOT / "experiments" / "configs" / "alexnet_s_cifar10.py"),
    "--workdir",
    str(workdir),
    f"--config.data_dir={tiny_data_dir}",
    *(f"--config.{k}={v}" for k, v in TINY.items()),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert (summary["model"], summary["dataset"], summary["target_sparsity"]) == (
    "alexnet_s",
    "cifar10",
    0.9,
  )
  assert "conv1/kernel" in result.stdout
