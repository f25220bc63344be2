"""Sanity checks of an at-init mask: exact counts, the right coordinates, and the training runs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import config, random_params, tiny_config

from snip_jax import Task, criteria, masks, prune, sanity, top_k_mask, train
from snip_jax.train import config as config_lib


def counts(mask) -> dict[str, int]:
  return {
    masks.path_name(path): int(np.sum(leaf))
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]
  }


def snip_like_mask(seed=0, sparsity=0.9):
  params = random_params(jax.random.key(seed), sizes=((40, 30), (30, 20), (20, 10)))
  scores = jax.tree.map(lambda p: jnp.abs(p) * jnp.arange(p.size).reshape(p.shape), params)
  return params, top_k_mask(scores, sparsity)


@pytest.mark.parametrize("check", [sanity.shuffle_within_layers, sanity.layerwise_random])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_redrawn_masks_keep_every_layer_count_exactly(check, sparsity):
  _, mask = snip_like_mask(sparsity=sparsity)
  for seed in range(3):
    redrawn = check(mask, jax.random.key(seed))
    assert counts(redrawn) == counts(mask)  # Biases (not prunable) stay all-True.
    assert all(leaf.dtype == jnp.bool_ for leaf in jax.tree.leaves(redrawn))
    # The positions change (the chance that 40 of 1200 land where they were is nil).
    assert not np.array_equal(redrawn["Dense_0"]["kernel"], mask["Dense_0"]["kernel"])
    again = check(mask, jax.random.key(seed))
    jax.tree.map(np.testing.assert_array_equal, redrawn, again)


def test_the_two_redraws_agree_in_distribution():
  # Both draw uniformly within a layer: over many draws every coordinate is kept about as often.
  _, mask = snip_like_mask(sparsity=0.5)
  for check in (sanity.shuffle_within_layers, sanity.layerwise_random):
    freq = np.mean(
      [np.asarray(check(mask, jax.random.key(s))["Dense_2"]["kernel"]) for s in range(400)], 0
    )
    density = np.asarray(mask["Dense_2"]["kernel"]).mean()  # This layer's: 18 of 200.
    assert abs(freq.mean() - density) < 1e-9  # Every draw keeps the layer's count.
    sd = np.sqrt(density * (1 - density) / 400)  # Binomial, per cell.
    assert np.abs(freq - density).max() < 5 * sd


def test_shuffle_leaves_non_prunable_leaves_alone():
  _, mask = snip_like_mask()
  mask["Dense_0"]["bias"] = mask["Dense_0"]["bias"].at[0].set(False)  # Not prunable here.
  shuffled = sanity.shuffle_within_layers(mask, jax.random.key(1))
  np.testing.assert_array_equal(shuffled["Dense_0"]["bias"], mask["Dense_0"]["bias"])
  every = sanity.shuffle_within_layers(mask, jax.random.key(1), filter_fn=masks.kernels_and_biases)
  assert int(every["Dense_0"]["bias"].sum()) == 29


def test_inverted_scores_keep_the_lowest():
  scores = {"kernel": jnp.array([[0.3, 0.1], [0.0, 0.7]]), "bias": jnp.array([5.0, 6.0])}
  candidates = masks.candidate_scores(scores, scores)
  mask = top_k_mask(sanity.inverted_scores(candidates), 0.5)
  np.testing.assert_array_equal(mask["kernel"], [[False, True], [True, False]])
  np.testing.assert_array_equal(sanity.inverted_scores(candidates)["bias"], [0, 0])  # int8 zeros


def test_prune_inverted_keeps_the_complement_order_of_snip():
  params = random_params(jax.random.key(3), sizes=((20, 10), (10, 5)))

  def loss_fn(p, x, y):
    h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    logits = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  batch = (jax.random.normal(jax.random.key(4), (16, 20)), jnp.arange(16) % 5)
  task = Task(loss_fn=loss_fn)
  scores = criteria.score("snip", params, task, batches=[batch])
  inverted = prune("snip", params, 0.8, task, batches=[batch], invert=True)
  expected = top_k_mask(jax.tree.map(lambda s: -s if s.dtype != jnp.int8 else s, scores), 0.8)
  jax.tree.map(np.testing.assert_array_equal, inverted, expected)
  assert sum(int(m.sum()) for m in jax.tree.leaves(inverted) if m.ndim == 2) == 50


@pytest.mark.parametrize("bad", ["Shuffle", "random", None, 1])
def test_unknown_check_is_an_error(bad):
  with pytest.raises(ValueError, match=r"choose one of \('shuffle', 'layer_random'"):
    sanity.validate_check(bad)


def test_config_refuses_checks_that_mean_nothing():
  with pytest.raises(ValueError, match=r"config\.sparsity is 0"):
    config_lib.validate_config(config(sanity_check="shuffle", sparsity=0.0))
  with pytest.raises(ValueError, match="reinit_after_pruning=True already does"):
    config_lib.validate_config(config(sanity_check="reinit", reinit_after_pruning=True))
  with pytest.raises(ValueError, match="Unknown sanity check 'flip'"):
    config_lib.validate_config(config(sanity_check="flip"))
  with pytest.raises(ValueError, match=r"set sparsity=0\.5"):
    config_lib.validate_config(config(distribution="2:4"))
  with pytest.raises(ValueError, match=r"set config\.prune_rounds=1"):
    config_lib.validate_config(config(distribution="2:4", sparsity=0.5, criterion="synflow"))
  with pytest.raises(ValueError, match="is not NAME=SPARSITY"):
    config_lib.validate_config(config(layer_sparsity="Dense_0"))
  config_lib.validate_config(config(distribution="1:4", sparsity=0.75, layer_sparsity="Dense_2=0"))


def test_new_fields_at_their_defaults_keep_ids_and_summaries():
  # Runs made before these fields keep their ids (so their default workdirs), and a config.json
  # without them reads back at their defaults.
  default = config()
  assert train.default_workdir(default) == "runs/lenet300_fashion_mnist_sp0.98_seed0_f54c18c2"
  assert "sanity_check" not in config_lib.summary_fields(default)
  checked = config(sanity_check="invert")
  assert train.default_workdir(checked).startswith("runs/lenet300_fashion_mnist_invert_sp0.98_")
  assert config_lib.summary_fields(checked)["sanity_check"] == "invert"
  assert train.default_workdir(config(layer_sparsity="Dense_0=0.5")) != train.default_workdir(
    default
  )
  assert train.default_workdir(config(distribution="2:4", sparsity=0.5)).startswith(
    "runs/lenet300_fashion_mnist_2of4_sp0.5_"
  )
  old = json.loads(json.dumps(default.to_dict()))
  del old["sanity_check"], old["layer_sparsity"]
  completed = config_lib.complete(old)
  assert completed["sanity_check"] is None and completed["layer_sparsity"] is None


@pytest.mark.slow
def test_every_check_trains_with_the_criterion_masks_counts(tmp_path, tiny_mnist):
  def run(name, **overrides):
    cfg = tiny_config(tiny_mnist, num_epochs=1, **overrides)
    summary = train.train_and_evaluate(cfg, str(tmp_path / name))
    with np.load(tmp_path / name / "mask.npz") as f:
      mask = {k: f[k] for k in f.files}
    return summary, mask, train.read_run(tmp_path / name)

  snip, snip_mask, _ = run("snip")
  per_layer = {r["name"]: r["kept"] for r in snip["per_layer"]}
  for check in ("shuffle", "layer_random"):
    summary, mask, _ = run(check, sanity_check=check)
    assert summary["sanity_check"] == check
    assert {r["name"]: r["kept"] for r in summary["per_layer"]} == per_layer
    assert not np.array_equal(mask["Dense_0/kernel"], snip_mask["Dense_0/kernel"])
  inverted, inverted_mask, _ = run("invert", sanity_check="invert")
  assert inverted["num_kept"] == snip["num_kept"]
  # The inverted mask keeps connections SNIP prunes (it can overlap only by ties at the bottom).
  overlap = int(np.sum(inverted_mask["Dense_0/kernel"] & snip_mask["Dense_0/kernel"]))
  assert overlap < 0.05 * int(snip_mask["Dense_0/kernel"].sum())
  reinit, reinit_mask, reinit_run = run("reinit", sanity_check="reinit")
  for k, v in snip_mask.items():
    np.testing.assert_array_equal(reinit_mask[k], v)
  assert reinit["test_loss"] != snip["test_loss"]
  assert reinit_run.config.sanity_check == "reinit"
