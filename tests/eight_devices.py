"""Data parallelism on 8 CPU devices against the same computation on 1.

XLA fakes the 8 devices only when told before JAX starts, and the rest of the suite keeps one,
so ``test_parallel.py`` runs this module in a subprocess:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest tests/eight_devices.py

(The file name keeps pytest from collecting it with the other tests.)
"""

import collections
import re
import sys

import jax
import numpy as np
import pytest
from flax import linen as nn
from helpers import config, flat_kernels, run_cli, tiny_config

from snip_jax import criteria, data, masks, models, parallel, scoring, train, xla

if jax.device_count() != 8:
  raise RuntimeError(
    f"tests/eight_devices.py needs 8 devices, got {jax.device_count()}: run it with "
    "XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_parallel.py does)."
  )

STEPS = 20
BATCH = 64
#: Batch sizes for the tiny MNIST that 8 devices split evenly (tiny_config's 20 they do not).
SPLITTABLE = dict(batch_size=24, score_batch_size=24, eval_batch_size=32, score_batches=2)


def all_reduces(compiled_text: str) -> list[str]:
  """The all-reduce instructions of an optimised HLO module."""
  return [line for line in compiled_text.splitlines() if re.search(r"\sall-reduce\(", line)]


@pytest.fixture(scope="module")
def meshes():
  return {8: parallel.make_mesh(), 1: parallel.make_mesh(1)}


@pytest.fixture(scope="module")
def lenet():
  """LeNet-300-100 at init, its scoring task and 320 random examples."""
  model = models.get_model("lenet300", num_classes=10, init="vs_h")
  rng = np.random.default_rng(0)
  split = data.Split(
    rng.normal(size=(320, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 320, np.int32)
  )
  params = jax.jit(model.init)(jax.random.key(0), split.images[:1])["params"]
  task = train.make_task(config(), model.apply, {}, split.images.shape[1:])
  return model, params, task, split


def test_the_mesh_spans_every_device(meshes):
  assert meshes[8].devices.size == 8 and meshes[8].axis_names == (parallel.BATCH_AXIS,)
  images = np.zeros((BATCH, 3), np.float32)
  (sharded,) = parallel.shard_batch((images,), meshes[8])
  assert [s.data.shape for s in sharded.addressable_shards] == [(BATCH // 8, 3)] * 8
  with pytest.raises(ValueError, match="A batch of 100 examples does not split over the 8 dev"):
    parallel.shard_batch((np.zeros((100, 3)),), meshes[8])


def test_batches_split_over_8_devices_give_the_scores_and_mask_of_1(meshes, lenet):
  _, params, task, split = lenet
  cfg = config(score_batch_size=BATCH, score_batches=3)  # Not a multiple of 8: split.
  assert not train.spreads_scoring(cfg, meshes[8])
  key = jax.random.key(7)
  scores, pruned = {}, {}
  for n, mesh in meshes.items():
    replicated = parallel.replicate(params, mesh)
    batches = train.scoring_batches(cfg, split, key, mesh)
    scores[n] = criteria.score("snip", replicated, task, batches=batches)
    pruned[n], _ = train.prune_at_init(cfg, task, replicated, split, key, mesh)
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(scores[n]))
  # Float rounding: the 8 partial gradients are added in another order. Relative to the
  # largest score the difference measured 7e-7; tiny scores differ more relative to themselves.
  s8, s1 = flat_kernels(scores[8]), flat_kernels(scores[1])
  np.testing.assert_allclose(s8, s1, rtol=1e-4, atol=1e-5 * s1.max())
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), pruned[8], pruned[1]))
  assert masks.count_prunable(params) - int(flat_kernels(pruned[8]).sum()) == round(
    0.98 * masks.count_prunable(params)
  )


def test_batches_spread_over_8_devices_give_the_scores_and_mask_of_1(meshes, lenet):
  _, params, task, split = lenet
  # 8 batches of 30 (not a multiple of 8: each device scores whole batches).
  cfg = config(score_batch_size=30, score_batches=8)
  assert train.spreads_scoring(cfg, meshes[8])
  key = jax.random.key(5)
  scores, pruned = {}, {}
  for n, mesh in meshes.items():
    replicated = parallel.replicate(params, mesh)
    batches = train.scoring_batches(cfg, split, key, mesh)
    spread = mesh if train.spreads_scoring(cfg, mesh) else None
    scores[n] = criteria.score("snip", replicated, task, batches=batches, mesh=spread)
    pruned[n], _ = train.prune_at_init(cfg, task, replicated, split, key, mesh)
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(scores[8]))
  s8, s1 = flat_kernels(scores[8]), flat_kernels(scores[1])
  np.testing.assert_allclose(s8, s1, rtol=1e-5, atol=1e-6 * s1.max())  # Sum order only.
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), pruned[8], pruned[1]))


def test_spread_batches_meet_in_one_all_reduce(meshes, lenet):
  _, params, task, split = lenet
  mesh = meshes[8]
  score_fn = criteria.get_criterion("snip").make_score_fn(task, masks.kernels)
  per_device = scoring.per_device_score_fn(score_fn, mesh, jax.random.key_impl(jax.random.key(0)))
  stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(parallel.BATCH_AXIS))
  # Device k gets examples [30k, 30k + 30).
  examples = (split.images, split.labels)
  batch = tuple(jax.device_put(x[:240].reshape(8, 30, *x.shape[1:]), stacked) for x in examples)
  key_data = jax.device_put(np.zeros((8, 2), np.uint32), stacked)
  replicated = parallel.replicate(params, mesh)
  ones = parallel.replicate(masks.ones_like(params), mesh)
  compiled = per_device.lower(replicated, ones, batch, key_data).compile().as_text()
  assert not all_reduces(compiled)  # Each device scores its own batch, alone.
  per_batch = per_device(replicated, ones, batch, key_data)
  alone = score_fn(
    params, masks.ones_like(params), (split.images[60:90], split.labels[60:90]), None
  )
  np.testing.assert_allclose(
    per_batch["Dense_0"]["kernel"][2], alone["Dense_0"]["kernel"], rtol=1e-6, atol=0
  )
  (all_reduce,) = all_reduces(scoring.sum_over_devices.lower(per_batch).compile().as_text())
  for shape in ("f32[784,300]", "f32[300,100]", "f32[100,10]"):  # Every kernel's sum.
    assert shape in all_reduce


def test_a_split_batch_costs_one_all_reduce_of_every_layer(meshes, lenet):
  _, params, task, split = lenet
  mesh = meshes[8]
  score_fn = criteria.get_criterion("snip").make_score_fn(task, masks.kernels)
  batch = parallel.shard_batch((split.images[:BATCH], split.labels[:BATCH]), mesh)
  replicated = parallel.replicate(params, mesh)
  ones = parallel.replicate(masks.ones_like(params), mesh)
  compiled = score_fn.lower(replicated, ones, batch, jax.random.key(0)).compile().as_text()
  (all_reduce,) = all_reduces(compiled)
  for shape in ("f32[300,784]", "f32[100,300]", "f32[10,100]"):  # Every kernel's gradient.
    assert shape in all_reduce


class ConvBN(nn.Module):
  """A small conv net with batch norm: its batch statistics must span the whole batch."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    return nn.Dense(10)(x)


@pytest.mark.parametrize("net", ["lenet300", "conv_bn"])
def test_20_steps_on_8_devices_match_1(meshes, net):
  rng = np.random.default_rng(1)
  shape = (28, 28, 1) if net == "lenet300" else (8, 8, 3)
  images = rng.normal(size=(STEPS, BATCH, *shape)).astype(np.float32)
  # Labels each net can learn, so that the loss moves: the largest of 10 fixed pixels, or of
  # the channel means (the conv net pools over space).
  features = (
    images.reshape(STEPS, BATCH, -1)[..., :10] if net == "lenet300" else images.mean((2, 3))
  )
  labels = np.argmax(features, -1).astype(np.int32)
  batches = list(zip(images, labels, strict=True))
  model = (
    models.get_model("lenet300", num_classes=10, init="vs_h") if net == "lenet300" else ConvBN()
  )
  variables = jax.jit(model.init)(jax.random.key(0), batches[0][0][:1])
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  scores = jax.tree.map(lambda p: jax.random.uniform(jax.random.key(3), p.shape), params)
  mask = jax.device_get(jax.tree.map(lambda s: s > 0.5, scores))  # Any fixed mask.
  tx = train.make_optimizer(config(learning_rate=0.05, momentum=0.9, weight_decay=5e-4))
  runs, steps = {}, {}
  for n, mesh in meshes.items():
    state = train.create_train_state(model, params, mask, tx, jax.random.key(2), batch_stats)
    state = parallel.replicate(state, mesh)
    step = steps[n] = train.sharded_train_step(mesh)
    losses = []
    for batch in batches:
      state, metrics = step(state, parallel.shard_batch(batch, mesh))
      losses.append(metrics["loss"])
    runs[n] = (state, np.asarray(jax.device_get(losses)))
  (state8, losses8), (state1, losses1) = runs[8], runs[1]
  # The losses move (the test would pass on a stuck step otherwise), and agree to float
  # tolerance: only the order of the gradient's additions differs.
  assert losses1[-1] < losses1[0] - 0.05
  np.testing.assert_allclose(losses8, losses1, rtol=2e-5)
  for a, b in zip(jax.tree.leaves(state8.params), jax.tree.leaves(state1.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(
    jax.tree.leaves(state8.batch_stats), jax.tree.leaves(state1.batch_stats), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  pruned = jax.tree.map(lambda p, m: np.asarray(p)[~np.asarray(m)], state8.params, mask)
  assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(pruned))
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state8))
  compiled = steps[8].lower(state8, parallel.shard_batch(batches[0], meshes[8])).compile()
  assert all_reduces(compiled.as_text())  # The gradients are averaged by XLA's collectives.


def test_train_and_evaluate_on_8_devices_equals_1(tiny_mnist, tmp_path):
  summaries = {
    n: train.train_and_evaluate(
      tiny_config(tiny_mnist, num_devices=n, **SPLITTABLE), str(tmp_path / f"d{n}")
    )
    for n in (None, 1)
  }
  assert (summaries[None]["devices"], summaries[1]["devices"]) == (8, 1)
  masks_bytes = [(tmp_path / d / "mask.npz").read_bytes() for d in ("dNone", "d1")]
  assert masks_bytes[0] == masks_bytes[1]
  for field in ("test_loss", "test_accuracy", "val_accuracy"):
    assert summaries[None][field] == pytest.approx(summaries[1][field], rel=1e-5, abs=1e-6)


def test_the_host_stays_a_few_dispatches_ahead_of_the_devices(tiny_mnist, tmp_path, monkeypatch):
  """XLA:CPU admits 32 computations a device: a host further ahead can deadlock a step's
  all-reduce (snip_jax.xla.RunAhead). Training, evaluation and both ways of scoring wait for the
  result ``limit`` dispatches back."""
  made = []

  class Recording(xla.RunAhead):
    def __init__(self):
      super().__init__(limit=1)
      self.site, self.calls, self.most = sys._getframe(1).f_code.co_name, 0, 0
      made.append(self)

    def __call__(self, result):
      self.calls += 1
      result = super().__call__(result)
      self.most = max(self.most, len(self))
      return result

  monkeypatch.setattr(xla, "RunAhead", Recording)
  small = {**SPLITTABLE, "eval_batch_size": 8, "score_batches": 3, "num_epochs": 1}
  summary = train.train_and_evaluate(tiny_config(tiny_mnist, **small), str(tmp_path / "split"))
  spread = {**small, "score_batch_size": 10, "score_batches": 16}  # 2 groups of 8.
  train.train_and_evaluate(tiny_config(tiny_mnist, **spread), str(tmp_path / "spread"))
  calls = collections.Counter()
  for ahead in made:
    calls[ahead.site] += ahead.calls
    assert ahead.most <= 1
  # 180 training images in batches of 24 (the last 12 dropped); 20 validation and 50 test
  # images in batches of 8.
  steps = summary["train_examples"] // 24
  assert calls == {
    "epoch": 2 * steps,
    "evaluate": 2 * (3 + 7),
    "sum_over_batches": 3,
    "mean_over_devices": 2,
  }


def test_a_batch_the_devices_cannot_split_is_refused_before_anything_runs(tiny_mnist, tmp_path):
  for field in ("batch_size", "eval_batch_size", "score_batch_size"):
    with pytest.raises(ValueError, match=rf"config.{field}=20 is not divisible by the 8 devices"):
      cfg = tiny_config(tiny_mnist, **{**SPLITTABLE, field: 20})
      train.train_and_evaluate(cfg, str(tmp_path / field))
    assert not (tmp_path / field).exists()
  # Spread over the devices (8 batches), the scoring batch need not split.
  spread = tiny_config(tiny_mnist, **{**SPLITTABLE, "score_batch_size": 20, "score_batches": 8})
  assert train.train_and_evaluate(spread, str(tmp_path / "spread"))["score_examples"] == 160
  with pytest.raises(ValueError, match="this run has 8 device"):
    cfg = tiny_config(tiny_mnist, num_devices=9, **SPLITTABLE)
    train.train_and_evaluate(cfg, str(tmp_path / "nine"))
  # The default config's batch of 100 on 8 devices, from the command line.
  result = run_cli("--workdir", str(tmp_path / "cli"))
  assert result.returncode == 1
  assert "error: config.batch_size=100 is not divisible by the 8 devices" in result.stderr
  assert "multiple of 8 (e.g. 104)" in result.stderr
  assert not (tmp_path / "cli").exists()
