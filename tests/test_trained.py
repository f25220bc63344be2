"""Pruning a trained network: magnitude after training, retraining, rewinding (lottery tickets),
iterated; and a bit-exact resume of such a run."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
  ROOT,
  assert_same_outcome,
  checkpoint_steps,
  config,
  outcome,
  read_state,
  run_script,
  tiny_config,
)
from test_reliability import INTERRUPT, cli_flags

from snip_jax import masks, top_k_mask, train
from snip_jax.train import config as config_lib

pytestmark = pytest.mark.slow  # Each trains tiny runs end to end.


@pytest.fixture(scope="module")
def dense(tmp_path_factory, tiny_mnist):
  """A finished dense run keeping the checkpoints of steps 0 (its init) and 4."""
  runs = {}
  for step in (0, 4):
    workdir = tmp_path_factory.mktemp("dense") / f"keep{step}"
    cfg = tiny_config(tiny_mnist, sparsity=0.0, keep_checkpoint_step=step, checkpoint_every_steps=0)
    train.train_and_evaluate(cfg, str(workdir))
    runs[step] = workdir
  return runs


def pruned(tiny_mnist, source, workdir, **overrides):
  cfg = tiny_config(tiny_mnist, criterion="magnitude", prune_trained=str(source), **overrides)
  return train.train_and_evaluate(cfg, str(workdir))


def first_state(workdir):
  return read_state(workdir, 0)


def test_sources_keep_the_step_they_were_told_to(dense):
  # Without periodic checkpoints: the one after pruning, the last, and the kept step.
  assert checkpoint_steps(dense[0]) == [0, 18]
  assert checkpoint_steps(dense[4]) == [0, 4, 18]


def test_magnitude_after_training_retrains_the_trained_weights(tmp_path, tiny_mnist, dense):
  source = train.read_run(dense[0])
  summary = pruned(tiny_mnist, dense[0], tmp_path / "retrain", keep_checkpoint_step=0)
  expected = top_k_mask(jax.tree.map(jnp.abs, source.params), 0.9)
  start = first_state(tmp_path / "retrain")
  for m, e in zip(
    jax.tree.leaves(start["opt_state"]["mask"]), jax.tree.leaves(expected), strict=True
  ):
    np.testing.assert_array_equal(m, e)
  retrained_from = masks.apply_mask(source.params, expected)
  for a, b in zip(jax.tree.leaves(start["params"]), jax.tree.leaves(retrained_from), strict=True):
    np.testing.assert_array_equal(a, b)
  assert summary["prune_trained"] == str(dense[0]) and "rewind_to_step" not in summary
  assert (summary["pretrain_steps"], summary["steps"]) == (18, 18)
  assert summary["num_kept"] == round(0.1 * 266_200)
  # Iterated: the next round keeps only what this one kept, and counts both rounds before it.
  again = pruned(tiny_mnist, tmp_path / "retrain", tmp_path / "again", sparsity=0.99)
  new, old = first_state(tmp_path / "again")["opt_state"]["mask"], start["opt_state"]["mask"]
  for n, o in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True):
    assert not np.any(np.asarray(n) & ~np.asarray(o))
  assert again["pretrain_steps"] == 36 and again["num_kept"] == round(0.01 * 266_200)
  with pytest.raises(ValueError, match=r"raise the sparsity to at least 0\.9"):
    pruned(tiny_mnist, tmp_path / "retrain", tmp_path / "looser", sparsity=0.5)


@pytest.mark.parametrize("step", [0, 4])
def test_rewinding_trains_the_source_weights_of_that_step(tmp_path, tiny_mnist, dense, step):
  pruned(tiny_mnist, dense[step], tmp_path / "ticket", rewind_to_step=step)
  start = first_state(tmp_path / "ticket")
  rewound = read_state(dense[step], step)["params"]
  kept = start["opt_state"]["mask"]
  for a, b, m in zip(*map(jax.tree.leaves, (start["params"], rewound, kept)), strict=True):
    np.testing.assert_array_equal(a, np.where(m, b, 0))
  summary = json.loads((tmp_path / "ticket" / "summary.json").read_text())
  assert summary["rewind_to_step"] == step and summary["pretrain_steps"] == 18


def test_a_rewind_step_the_source_did_not_keep_is_refused(tmp_path, tiny_mnist, dense):
  with pytest.raises(ValueError, match=r"keeps no checkpoint of step 4 .*keep_checkpoint_step=4"):
    pruned(tiny_mnist, dense[0], tmp_path / "no", rewind_to_step=4)
  assert not (tmp_path / "no" / "checkpoints").exists() or not checkpoint_steps(tmp_path / "no")


def test_another_network_or_an_unfinished_run_is_refused(tmp_path, tiny_mnist, dense):
  with pytest.raises(ValueError, match="is a run with model='lenet300', this config has 'lenet5'"):
    pruned(tiny_mnist, dense[0], tmp_path / "other", model="lenet5")
  unfinished = tmp_path / "unfinished"
  shutil.copytree(dense[0], unfinished)
  (unfinished / "summary.json").unlink()  # As a run stopped before its end leaves it.
  with pytest.raises(ValueError, match=r"has not finished .* step 18"):
    pruned(tiny_mnist, unfinished, tmp_path / "x")
  with pytest.raises(FileNotFoundError, match="No trained run"):
    pruned(tiny_mnist, tmp_path / "nothing", tmp_path / "y")


def test_config_refuses_a_rewind_without_a_source():
  with pytest.raises(ValueError, match=r"rewinds the run named by config\.prune_trained"):
    config_lib.validate_config(config(rewind_to_step=0))
  with pytest.raises(ValueError, match="re-initialisation trains fresh ones"):
    config_lib.validate_config(
      config(prune_trained="x", rewind_to_step=0, reinit_after_pruning=True)
    )


def test_a_run_pruned_after_training_resumes_bit_exactly_after_sigkill(tmp_path, tiny_mnist, dense):
  extra = [
    f"--config.prune_trained={dense[4]}",
    "--config.rewind_to_step=4",
    "--config.criterion=magnitude",
  ]
  reference = tmp_path / "reference"
  done = run_script(ROOT / "experiments" / "train.py", *cli_flags(reference, tiny_mnist), *extra)
  assert done.returncode == 0, done.stderr[-2000:]
  workdir = tmp_path / "run"
  flags = [*cli_flags(workdir, tiny_mnist), *extra]
  killed = run_script(INTERRUPT, "batch:7", *flags)
  assert killed.returncode == -9, killed.stderr[-2000:]
  finished = run_script(ROOT / "experiments" / "train.py", *flags)
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert "Resuming from" in finished.stdout
  assert_same_outcome(outcome(workdir), outcome(reference))
