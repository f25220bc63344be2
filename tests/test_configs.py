"""Every config of experiments/configs runs end to end for a few steps on tiny data.

One parametrised test: each paper row (LeNets, AlexNets, VGGs, WRNs, LSTMs, GRUs) is initialised,
pruned by SNIP at its sparsity (exact κ), trained for a few masked steps and evaluated, through
the same ``train_and_evaluate`` the CLI calls; one CIFAR-10 config also goes through the CLI.
The data are tiny random datasets in the original MNIST and CIFAR-10 file formats.

In-process, the CIFAR-10 nets convolve with ``nn.Conv`` instead of their im2col ``layers.Conv``
(the same params and results, tested in test_models.py), which XLA compiles about three times
as fast; the CLI test runs the im2col convs as users do.
"""

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
from helpers import run_cli, write_cifar10, write_mnist_like
from test_models import COUNTS

from snip_jax import data, models, train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
pytestmark = pytest.mark.usefixtures("flax_convs")  # In-process runs only; see the docstring.
CONFIGS = sorted(
  p.stem for p in (ROOT / "experiments" / "configs").glob("*.py") if p.stem != "__init__"
)
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
  rows = {f"{name}_{spec.paper_dataset}" for name, spec in models.MODELS.items()}
  assert rows <= set(CONFIGS)


@pytest.mark.parametrize("module", CONFIGS)
def test_config_runs_a_few_steps(tmp_path, tiny_data_dir, module):
  config = importlib.import_module(f"configs.{module}").get_config()
  assert config.dataset in data.DATASETS
  assert config.augment == (config.dataset == "cifar10")  # The paper's recipe.
  config.update(TINY, data_dir=tiny_data_dir)
  if config.dataset == "fashion_mnist":
    config.dataset = "mnist"  # The tiny data is in MNIST's place; the format is the same.

  summary = train.train_and_evaluate(config, str(tmp_path / "run"))

  num_params, num_prunable = COUNTS[config.model]
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
