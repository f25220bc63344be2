"""The experiment end to end: the training split, the criteria and options through a run and the
CLI, and the CLI on real Fashion-MNIST. Resume and bad input: test_reliability.py."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import config, run_cli, tiny_config

from snip_jax import data, masked, train

ROOT = Path(__file__).resolve().parents[1]


def test_training_split_takes_a_prefix_and_shuffles_labels_by_one_permutation():
  rng = np.random.default_rng(0)
  split = data.Split(rng.normal(size=(50, 2, 2, 1)).astype(np.float32), np.arange(50) % 10)
  key = jax.random.key(3)
  same = train.training_split(config(train_examples=30), split, key)
  np.testing.assert_array_equal(same.images, split.images[:30])
  np.testing.assert_array_equal(same.labels, split.labels[:30])
  shuffled = train.training_split(config(train_examples=30, random_labels=True), split, key)
  np.testing.assert_array_equal(shuffled.images, split.images[:30])
  # A permutation of the true labels: class counts kept, most labels moved, deterministic.
  np.testing.assert_array_equal(np.sort(shuffled.labels), np.sort(split.labels[:30]))
  assert (shuffled.labels != split.labels[:30]).mean() > 0.5
  again = train.training_split(config(train_examples=30, random_labels=True), split, key)
  np.testing.assert_array_equal(again.labels, shuffled.labels)
  assert len(train.training_split(config(), split, key)) == 50


class _DenseBatchNorm(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train)(nn.Dense(6)(x))
    return nn.Dense(3)(nn.relu(x))


def test_train_state_is_flax_create_on_the_masked_params_leaf_for_leaf():
  model = _DenseBatchNorm()
  images = jax.random.normal(jax.random.key(0), (5, 4))
  variables = model.init(jax.random.key(1), images)
  params = variables["params"]
  mask = jax.tree.map(lambda p: jax.random.bernoulli(jax.random.key(p.size), 0.5, p.shape), params)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.adam(1e-3))
  rng = jax.random.key(2)
  state = train.create_train_state(model, params, mask, tx, rng, variables["batch_stats"])
  expected = train.TrainState.create(
    apply_fn=model.apply,
    params=jax.tree.map(lambda p, m: jnp.where(m, p, 0.0), params, mask),
    tx=masked(tx, mask),
    batch_stats=variables["batch_stats"],
    rng=rng,
  )
  got_leaves, got_tree = jax.tree.flatten(state.replace(rng=0, tx=None, apply_fn=None))
  want_leaves, want_tree = jax.tree.flatten(expected.replace(rng=0, tx=None, apply_fn=None))
  assert got_tree == want_tree
  for got, want in zip(got_leaves, want_leaves, strict=True):
    assert np.asarray(got).dtype == np.asarray(want).dtype
    np.testing.assert_array_equal(got, want)
  assert state.step == 0 and state.rng is rng
  # The state's optimizer is built on the concrete mask (none of the compiled set-up's tracers):
  # it initialises and steps outside any trace, and pruned weights stay exactly zero.
  assert jax.tree.structure(state.tx.init(state.params)) == jax.tree.structure(state.opt_state)
  step = jax.jit(train.train_step)
  for _ in range(2):
    state, _ = step(state, (images, jnp.asarray([0, 1, 2, 0, 1])))
  for p, m in zip(*map(jax.tree.leaves, (state.params, mask)), strict=True):
    assert not np.any(np.asarray(p)[~np.asarray(m)])
  assert not np.array_equal(state.params["Dense_0"]["kernel"], expected.params["Dense_0"]["kernel"])


@pytest.mark.slow
def test_train_examples_and_random_labels_in_a_run(tmp_path, tiny_mnist):
  with pytest.raises(ValueError, match="train_examples=500 exceeds the 180 training examples"):
    train.train_and_evaluate(tiny_config(tiny_mnist, train_examples=500), str(tmp_path / "no"))
  assert not (tmp_path / "no").exists()  # Refused before the workdir is made.
  summary = train.train_and_evaluate(
    tiny_config(tiny_mnist, train_examples=100, random_labels=True, num_epochs=1),
    str(tmp_path / "run"),
  )
  assert summary["train_examples"] == 100 and summary["random_labels"] is True
  assert summary["steps"] == 100 // 20


@pytest.mark.slow
def test_every_epoch_of_a_run_gets_its_own_shuffle(tmp_path, tiny_mnist, monkeypatch):
  """The loop gives each epoch its own seed: the examples come in another order every epoch,
  each epoch visits every example once, and the same run repeats the same orders."""
  orders = []
  batches = data.train_batches

  def recorded(split, *args, **kwargs):
    epoch = list(batches(split, *args, **kwargs))
    orders.append(np.concatenate([images.reshape(len(images), -1)[:, :8] for images, _ in epoch]))
    yield from epoch

  monkeypatch.setattr(data, "train_batches", recorded)
  cfg = tiny_config(tiny_mnist, num_epochs=3, checkpoint_every_steps=0)
  train.train_and_evaluate(cfg, str(tmp_path / "a"))
  first_run, orders[:] = list(orders), []
  train.train_and_evaluate(cfg, str(tmp_path / "b"))
  assert len(first_run) == 3 and all(o.shape == (180, 8) for o in first_run)
  as_rows = [{row.tobytes() for row in order} for order in first_run]
  assert as_rows[0] == as_rows[1] == as_rows[2]  # The same examples, each once...
  assert len(as_rows[0]) == 180
  for a, b in ((0, 1), (0, 2), (1, 2)):  # ... in another order every epoch.
    assert not np.array_equal(first_run[a], first_run[b])
  for a, b in zip(first_run, orders, strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_prune_biases_makes_every_lenet300_param_prunable(tmp_path, tiny_mnist):
  summary = train.train_and_evaluate(
    tiny_config(tiny_mnist, prune_biases=True, num_epochs=1), str(tmp_path / "run")
  )
  assert summary["num_prunable"] == summary["num_params"] == 266_610
  assert summary["num_kept"] == round(0.1 * 266_610)
  assert abs(summary["sparsity"] - 0.9) * 266_610 <= 1


def run_tiny_cli(workdir, data_dir, *flags, config_file=None):
  """The CLI for one epoch on the tiny dataset; returns ``(stdout, summary)``."""
  # absl wants --config before any --config.<field> override.
  result = run_cli(
    *(("--config", str(config_file)) if config_file else ()),
    "--workdir",
    str(workdir),
    "--config.dataset=mnist",
    f"--config.data_dir={data_dir}",
    "--config.num_epochs=1",
    "--config.batch_size=20",
    "--config.score_batch_size=20",
    *flags,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, json.loads((workdir / "summary.json").read_text())


@pytest.mark.slow
def test_lenet5_config_file_through_the_cli(tmp_path, tiny_mnist):
  config_file = ROOT / "experiments" / "configs" / "lenet5_fashion_mnist.py"
  _, summary = run_tiny_cli(tmp_path / "run", tiny_mnist, config_file=config_file)
  assert summary["model"] == "lenet5" and summary["target_sparsity"] == 0.99
  assert summary["num_params"] == 431_080 and summary["num_kept"] == round(0.01 * 430_500)


@pytest.mark.slow
@pytest.mark.parametrize(
  ("criterion", "distribution"),
  [
    ("snip", "erk"),
    ("random", "uniform"),
    ("magnitude", "global"),
    ("grasp", "global"),
    ("synflow", "erk"),
    ("iterative_snip", "uniform"),
  ],
)
def test_every_criterion_through_the_cli(tmp_path, tiny_mnist, criterion, distribution):
  stdout, summary = run_tiny_cli(
    tmp_path / "run",
    tiny_mnist,
    f"--config.criterion={criterion}",
    f"--config.distribution={distribution}",
  )
  assert f"{criterion} pruning" in stdout
  assert (summary["criterion"], summary["distribution"]) == (criterion, distribution)
  assert summary["prune_rounds"] == (100 if criterion in ("synflow", "iterative_snip") else 1)
  assert summary["num_kept"] == 5_324 and summary["sparsity"] == 1 - 5_324 / 266_200
  per_layer = {r["name"]: r for r in summary["per_layer"]}
  assert sum(r["kept"] for r in per_layer.values()) == 5_324
  if distribution == "uniform":  # Every layer at 98% (up to one connection of rounding).
    for r in per_layer.values():
      assert abs(r["sparsity"] - 0.98) * r["size"] <= 1
  for r in per_layer.values():
    assert r["sparsity"] == 1 - r["kept"] / r["size"]


@pytest.mark.slow
def test_n_m_layer_sparsity_and_a_sanity_check_through_the_cli(tmp_path, tiny_mnist):
  stdout, summary = run_tiny_cli(
    tmp_path / "run",
    tiny_mnist,
    "--config.distribution=1:4",
    "--config.sparsity=0.75",
    "--config.layer_sparsity=Dense_2=0.5",
    "--config.sanity_check=layer_random",
  )
  assert "sanity check 'layer_random'" in stdout
  assert summary["distribution"] == "1:4" and summary["sanity_check"] == "layer_random"
  assert summary["layer_sparsity"] == "Dense_2=0.5"
  kept = {r["name"]: r["kept"] for r in summary["per_layer"]}
  assert kept == {
    "Dense_0/kernel": 784 * 300 // 4,
    "Dense_1/kernel": 300 * 100 // 4,
    "Dense_2/kernel": 500,
  }
  with np.load(tmp_path / "run" / "mask.npz") as f:
    first = f["Dense_0/kernel"]
  # layer_random keeps the counts, not the 1:4 groups.
  assert (first.reshape(-1, 4, 300).sum(axis=1) != 1).any()


@pytest.mark.slow
def test_several_scoring_batches_a_guard_and_a_fresh_init(tmp_path, tiny_mnist, capsys):
  # Magnitude pruning at a He init empties LeNet-300-100's first layer at 98%: its weights are
  # the smallest (fan-in 784). The run warns, and the summary says no path is left.
  collapsed = train.train_and_evaluate(
    tiny_config(tiny_mnist, num_epochs=1, criterion="magnitude", sparsity=0.98),
    str(tmp_path / "collapsed"),
  )
  assert collapsed["collapsed_layers"] == ["Dense_0/kernel"]
  assert collapsed["input_output_path"] is False
  assert "WARNING: layer collapse" in capsys.readouterr().out
  guarded = train.train_and_evaluate(
    tiny_config(
      tiny_mnist, num_epochs=1, criterion="magnitude", sparsity=0.98, min_kept_per_layer=300
    ),
    str(tmp_path / "guarded"),
  )
  assert guarded["input_output_path"] is True and not guarded["collapsed_layers"]
  assert min(r["kept"] for r in guarded["per_layer"]) == 300
  assert guarded["num_kept"] == collapsed["num_kept"] == 5_324

  # Score one init (on 3 batches), train another: the same mask, different weights (so
  # different results).
  fresh_cfg = tiny_config(tiny_mnist, num_epochs=1, score_batches=3, reinit_after_pruning=True)
  same_cfg = tiny_config(tiny_mnist, num_epochs=1, score_batches=3)
  fresh = train.train_and_evaluate(fresh_cfg, str(tmp_path / "fresh"))
  same = train.train_and_evaluate(same_cfg, str(tmp_path / "same"))
  with np.load(tmp_path / "fresh" / "mask.npz") as a, np.load(tmp_path / "same" / "mask.npz") as b:
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k])
  assert fresh["reinit_after_pruning"] and not same["reinit_after_pruning"]
  assert fresh["score_examples"] == same["score_examples"] == 60
  assert fresh["test_loss"] != same["test_loss"]
  assert fresh["sparsity"] == same["sparsity"] == 1 - round(0.1 * 266_200) / 266_200


def test_outputs_cut_off_from_the_input_are_reported_and_stored(tmp_path, tiny_mnist, capsys):
  # The output layer keeps 5 of its 1,000 weights: at least 5 of the 10 classes get none. Every
  # layer keeps connections and a path survives, yet those classes no longer see the input.
  summary = train.train_and_evaluate(
    tiny_config(tiny_mnist, num_epochs=1, sparsity=0.5, layer_sparsity="Dense_2=0.995"),
    str(tmp_path / "run"),
  )
  with np.load(tmp_path / "run" / "mask.npz") as f:
    into_class = f["Dense_2/kernel"].sum(axis=0)
  assert summary["input_output_path"] is True and not summary["collapsed_layers"]
  assert summary["cut_outputs"] == [c for c in range(10) if into_class[c] == 0]
  assert summary["num_cut_outputs"] == len(summary["cut_outputs"]) >= 5
  out = capsys.readouterr().out
  assert f"WARNING: {len(summary['cut_outputs'])} of 10 outputs (" in out
  assert "are cut off from the input: no kept path reaches them" in out


@pytest.mark.slow
def test_layer_collapse_is_reported_and_stored(tmp_path, tiny_mnist, capsys):
  # κ = 2 connections for LeNet-300-100's three layers: at least one layer keeps none.
  summary = train.train_and_evaluate(
    tiny_config(tiny_mnist, sparsity=1 - 2 / 266_200, num_epochs=1), str(tmp_path / "run")
  )
  assert summary["num_kept"] == 2
  rows = {r["name"]: r["kept"] for r in summary["per_layer"]}
  assert summary["collapsed_layers"] == [name for name, kept in rows.items() if kept == 0]
  assert summary["collapsed_layers"]
  assert "WARNING: layer collapse" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_on_real_fashion_mnist(tmp_path, real_fashion_mnist):
  workdir = tmp_path / "run"
  result = run_cli(
    "--workdir", str(workdir), "--config.num_epochs=2", "--config.seed=1", cwd=tmp_path
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "test accuracy" in result.stdout and "Dense_0/kernel" in result.stdout

  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["model"] == "lenet300" and summary["dataset"] == "fashion_mnist"
  assert summary["num_params"] == 266_610 and summary["num_prunable"] == 266_200
  assert summary["num_kept"] == 5_324
  assert abs(summary["sparsity"] - 0.98) * summary["num_prunable"] <= 1
  assert summary["test_accuracy"] >= 0.80  # Two epochs; the full default run is in README.
  assert [r["name"] for r in summary["per_layer"]] == [
    "Dense_0/kernel",
    "Dense_1/kernel",
    "Dense_2/kernel",
  ]
  for key in ("target_sparsity", "test_loss", "train_seconds"):
    assert key in summary
  assert json.loads((workdir / "config.json").read_text())["seed"] == 1
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
  assert [m["epoch"] for m in lines] == [1, 2]
  assert set(lines[0]) == {"epoch", "train_loss", "train_accuracy", "val_accuracy", "seconds"}
  with np.load(workdir / "mask.npz") as f:
    assert int(sum(f[k].sum() for k in f.files if f[k].ndim >= 2)) == 5_324


def test_default_workdir_names_non_default_criteria_and_identifies_the_whole_config():
  default = train.default_workdir(config())
  assert default == "runs/lenet300_fashion_mnist_sp0.98_seed0_f54c18c2"
  assert f"`{default}/`" in (ROOT / "README.md").read_text().replace("\n", " ")
  baseline = config(criterion="synflow", distribution="erk", sparsity=0.9, seed=2)
  assert train.default_workdir(baseline).startswith(
    "runs/lenet300_fashion_mnist_synflow_erk_sp0.9_seed2_"
  )
  # Any field a resumed run cannot change gives another workdir; those it can, the same one.
  assert train.default_workdir(config(learning_rate=0.05)) != default
  assert train.default_workdir(config(score_bn_mode="train")) != default
  assert train.default_workdir(config(num_epochs=1, log_every_steps=7)) == default
