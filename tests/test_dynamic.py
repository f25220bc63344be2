"""Masks that change during training: schedules, exact drop-and-grow, and zero leaks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
  ROOT,
  assert_same_outcome,
  checkpoint_steps,
  config,
  outcome,
  random_params,
  read_state,
  run_script,
  tiny_config,
)
from test_reliability import INTERRUPT, cli_flags

from snip_jax import dynamic, masked, masks, optim, top_k_mask, train
from snip_jax.train import config as config_lib


def kept(mask) -> list[int]:
  return [int(m.sum()) for m in jax.tree.leaves(mask) if m.ndim >= 2]


def test_rigl_grows_exactly_the_largest_gradient_connections_not_kept():
  # One 3x4 layer keeping 6: drop fraction 0.5 drops 3 (the smallest kept |w|: -0.1, -0.2, 0.3)
  # and grows the 3 of largest |g| among the 9 not kept after the drop: two of them are weights
  # just dropped (RigL's Algorithm 1 lets them grow again), the third was pruned before.
  w = jnp.array([[0.9, -0.1, 0.0, 0.0], [0.5, 0.0, -0.2, 0.0], [0.0, 0.3, 0.0, -0.8]])
  mask = {"Dense_0": {"kernel": w != 0, "bias": jnp.ones(4, bool)}}
  params = {"Dense_0": {"kernel": w, "bias": jnp.ones(4)}}
  g = jnp.array([[9.0, 9.0, -0.4, 0.1], [9.0, 0.7, 0.05, -0.6], [0.05, 9.0, 0.2, 9.0]])
  grads = {"Dense_0": {"kernel": g, "bias": jnp.ones(4)}}
  new = dynamic.rigl_mask(mask, params, grads, 0.5)["Dense_0"]["kernel"]
  # Stay: 0.9, 0.5, -0.8; grown: |g| 9 at -0.1 and 0.3 (dropped, grown again), 0.7 (new).
  expected = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 1]]
  np.testing.assert_array_equal(new, np.array(expected, bool))
  # Where the dropped weights have the largest gradients, the update changes nothing.
  g_dropped = jnp.zeros((3, 4)).at[0, 1].set(9.0).at[1, 2].set(9.0).at[2, 1].set(9.0)
  same = dynamic.rigl_mask(mask, params, {"Dense_0": {"kernel": g_dropped, "bias": g[0]}}, 0.5)
  np.testing.assert_array_equal(same["Dense_0"]["kernel"], mask["Dense_0"]["kernel"])


def test_a_weight_dropped_and_grown_again_keeps_its_value_and_optimizer_state():
  w = jnp.array([[0.9, -0.1, 0.0, 0.0]])
  params = {"kernel": w}
  mask = {"kernel": w != 0}
  tx = masked(optax.sgd(0.1, momentum=0.9), mask)
  state = tx.init(params)
  updates, state = tx.update({"kernel": jnp.array([[1.0, 2.0, 3.0, 4.0]])}, state, params)
  params = optax.apply_updates(params, updates)
  trace = np.asarray(state.inner_state[0].trace["kernel"])
  # Drops -0.1's weight (fraction 0.5 of 2), whose gradient is the largest: it grows again.
  new = dynamic.rigl_mask(mask, params, {"kernel": jnp.array([[0.0, 5.0, 1.0, 1.0]])}, 0.5)
  np.testing.assert_array_equal(new["kernel"], mask["kernel"])
  new_params, new_state = optim.replace_mask(params, state, new)
  np.testing.assert_array_equal(new_params["kernel"], params["kernel"])
  np.testing.assert_array_equal(new_state.inner_state[0].trace["kernel"], trace)
  assert trace[0, 1] != 0 and float(params["kernel"][0, 1]) != 0  # Nothing was reset.


def test_drop_and_grow_breaks_ties_to_the_lower_index():
  w = jnp.array([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
  params, mask = {"kernel": w}, {"kernel": w != 0}
  scores = {"kernel": jnp.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])}  # Ties among the pruned.
  new = dynamic.drop_and_grow(mask, params, scores, 0.34)["kernel"]  # Drops and grows 1.
  # The two kept are the lower indices among the tied |w| (so index 2 drops); the grown one is
  # the lowest index among the tied best scores.
  np.testing.assert_array_equal(new, [[True, True, False, True, False, False]])


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_set_drops_the_smallest_and_keeps_every_layer_count(fraction):
  params = random_params(jax.random.key(0), sizes=((30, 20), (20, 10)))
  mask = top_k_mask(jax.tree.map(jnp.abs, params), 0.9)
  params = masks.apply_mask(params, mask)
  new = dynamic.set_mask(mask, params, jax.random.key(1), fraction)
  assert kept(new) == kept(mask)
  for layer in params:
    old, now = np.asarray(mask[layer]["kernel"]), np.asarray(new[layer]["kernel"])
    d = math.floor(fraction * old.sum())
    # The d kept weights of smallest |w| (no ties among random normals) make way.
    w = np.abs(np.asarray(params[layer]["kernel"]))
    order = np.argsort(np.where(old, w, np.inf), axis=None, kind="stable")
    stay = old.copy()
    stay.flat[order[:d]] = False
    assert (now & stay).sum() == stay.sum()  # Every other kept weight stays.
    assert (now & ~stay).sum() == d  # And d grow, from every weight not staying.
    assert bool(new[layer]["bias"].all())
  again = dynamic.set_mask(mask, params, jax.random.key(1), fraction)
  jax.tree.map(np.testing.assert_array_equal, new, again)


def test_a_full_drop_fraction_grows_the_whole_count_anywhere_in_the_layer():
  w = jnp.array([[1.0, 2.0, 3.0, 0.0]])
  scores = {"kernel": jnp.array([[0.1, 0.5, 0.2, 0.9]])}
  new = dynamic.drop_and_grow({"kernel": w != 0}, {"kernel": w}, scores, 1.0)["kernel"]
  np.testing.assert_array_equal(new, [[False, True, True, True]])  # All 3 dropped, 3 grown.


def test_gmp_keeps_the_largest_kept_weights_and_never_revives():
  w = jnp.array([[5.0, 4.0, 3.0, 2.0, 1.0, 9.0]])
  mask = {"kernel": jnp.array([[True, True, True, True, True, False]])}
  new = dynamic.gmp_mask(mask, {"kernel": w}, 0.5)["kernel"]
  np.testing.assert_array_equal(new, [[True, True, True, False, False, False]])


def test_gmp_keeps_the_layer_floor_it_is_given():
  # Global magnitude pruning alone would empty the layer of small weights.
  params = {"a": {"kernel": jnp.full((10, 10), 5.0)}, "b": {"kernel": jnp.full((10, 10), 1e-3)}}
  mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
  assert kept(dynamic.gmp_mask(mask, params, 0.5)) == [100, 0]
  assert kept(dynamic.gmp_mask(mask, params, 0.5, min_kept_per_layer=5)) == [95, 5]


def test_gmp_schedule_is_zhu_and_gupta_cubic():
  kwargs = dict(final=0.9, initial=0.0, begin_step=100, end_step=1100)
  assert dynamic.gmp_sparsity(0, **kwargs) == 0.0
  assert dynamic.gmp_sparsity(100, **kwargs) == 0.0
  assert dynamic.gmp_sparsity(600, **kwargs) == pytest.approx(0.9 * (1 - 0.5**3))
  assert dynamic.gmp_sparsity(1100, **kwargs) == pytest.approx(0.9)
  assert dynamic.gmp_sparsity(5000, **kwargs) == pytest.approx(0.9)
  with pytest.raises(ValueError, match="begin_step < end_step"):
    dynamic.gmp_sparsity(0, final=0.9, begin_step=5, end_step=5)


def test_cosine_drop_fraction_and_update_steps():
  assert dynamic.cosine_drop_fraction(0, initial=0.3, end_step=1000) == pytest.approx(0.3)
  assert dynamic.cosine_drop_fraction(500, initial=0.3, end_step=1000) == pytest.approx(0.15)
  assert dynamic.cosine_drop_fraction(1000, initial=0.3, end_step=1000) == 0.0
  steps = [
    s for s in range(0, 1001) if dynamic.is_update_step(s, every=100, begin_step=0, end_step=750)
  ]
  assert steps == [100, 200, 300, 400, 500, 600, 700, 750]  # The end step too.
  assert not dynamic.is_update_step(50, every=50, begin_step=50, end_step=100)


@pytest.mark.parametrize(
  "inner",
  [
    optax.sgd(0.1, momentum=0.9),
    optax.adam(1e-2),
    optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    optax.adamw(1e-2, weight_decay=0.1),
  ],
  ids=["momentum", "adam", "nesterov+wd", "adamw"],
)
def test_changing_masks_leave_exact_zeros_in_params_and_state(inner):
  params = random_params(jax.random.key(2), sizes=((12, 8), (8, 4)))
  mask = top_k_mask(jax.tree.map(jnp.abs, params), 0.7)
  tx = masked(inner, mask)
  params = masks.apply_mask(params, mask)
  state = tx.init(params)

  @jax.jit
  def step(params, state, key):
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, grads

  def pruned_are_zero(params, state):
    pruned = jax.tree.map(jnp.logical_not, state.mask)
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(pruned), strict=True):
      assert np.all(np.asarray(p)[np.asarray(m)] == 0) and not np.any(
        np.signbit(np.asarray(p)[np.asarray(m)])
      )
    for node in jax.tree.leaves(
      state.inner_state, is_leaf=lambda x: jax.tree.structure(x) == jax.tree.structure(params)
    ):
      if jax.tree.structure(node) == jax.tree.structure(params):
        for p, m in zip(jax.tree.leaves(node), jax.tree.leaves(pruned), strict=True):
          assert np.all(np.asarray(p)[np.asarray(m)] == 0)

  counts = kept(state.mask)
  for t in range(1, 13):
    params, state, grads = step(params, state, jax.random.key(t))
    pruned_are_zero(params, state)
    if t % 3 == 0:  # Scheduled mask changes: RigL, then SET.
      update = dynamic.rigl_mask if t % 6 else None
      new = (
        update(state.mask, params, grads, 0.3)
        if update
        else dynamic.set_mask(state.mask, params, jax.random.key(100 + t), 0.3)
      )
      assert not all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state.mask), strict=True)
      )
      params, state = optim.replace_mask(params, state, new)
      pruned_are_zero(params, state)
      assert kept(state.mask) == counts


def test_a_grown_connection_starts_from_zero_state():
  """A transform that mixes coordinates (``optax.centralize``) leaves momentum at pruned
  coordinates (their updates are still 0): a connection grown there starts from zero momentum,
  so a zero gradient does not move it."""
  params = random_params(jax.random.key(2), sizes=((12, 8), (8, 4)))
  mask = top_k_mask(jax.tree.map(jnp.abs, params), 0.7)
  tx = masked(optax.chain(optax.centralize(), optax.sgd(0.1, momentum=0.9)), mask)
  params = masks.apply_mask(params, mask)
  state = tx.init(params)
  for t in range(3):
    grads = jax.tree.map(lambda p, t=t: jax.random.normal(jax.random.key(t), p.shape), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)

  def kernels(tree):
    return [tree[layer]["kernel"] for layer in sorted(tree)]

  trace = state.inner_state[1][0].trace
  assert any(  # The case: momentum at pruned coordinates before the change.
    np.abs(np.asarray(v)[~np.asarray(m)]).max() > 0
    for v, m in zip(kernels(trace), kernels(mask), strict=True)
  )
  new = dynamic.set_mask(state.mask, params, jax.random.key(9), 0.3)
  params, state = optim.replace_mask(params, state, new)
  trace = state.inner_state[1][0].trace
  for v, m, n in zip(kernels(trace), kernels(mask), kernels(new), strict=True):
    grown, dropped = np.asarray(n & ~m), np.asarray(~n)
    assert grown.any()
    np.testing.assert_array_equal(np.asarray(v)[grown | dropped], 0.0)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  for u, m, n in zip(kernels(updates), kernels(mask), kernels(new), strict=True):
    np.testing.assert_array_equal(np.asarray(u)[np.asarray(n & ~m)], 0.0)


def test_replace_mask_on_an_nnx_optimizer():
  """``nnx.Optimizer`` keeps its moments as ``OptVariable`` (the mask's leaves are ``Param``):
  the new mask still zeroes them, and the state keeps its tree structure (no retrace)."""
  from flax import nnx

  model = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  mask = top_k_mask(jax.tree.map(jnp.abs, params), 0.5)
  nnx.update(model, masks.apply_mask(params, mask))
  opt = nnx.Optimizer(model, masked(optax.sgd(0.1, momentum=0.9), mask), wrt=nnx.Param)
  for _ in range(2):
    opt.update(model, nnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 6))) ** 2))(model))
  before = jax.tree.structure(opt.opt_state)
  new = dynamic.set_mask(
    nnx.to_pure_dict(mask), nnx.to_pure_dict(nnx.state(model, nnx.Param)), jax.random.key(1), 0.5
  )
  params, state = optim.replace_mask(nnx.state(model, nnx.Param), opt.opt_state, new)
  assert jax.tree.structure(state) == before
  trace = state.inner_state[0].trace
  for name in ("kernel", "bias"):
    keep = np.asarray(new[name])
    assert (~keep).any() or name == "bias"
    np.testing.assert_array_equal(np.asarray(trace[name][...])[~keep], 0.0)
    np.testing.assert_array_equal(np.asarray(params[name][...])[~keep], 0.0)
    np.testing.assert_array_equal(np.asarray(state.mask[name][...]), keep)


def test_replace_mask_refuses_an_unmasked_state():
  params = random_params(jax.random.key(3))
  with pytest.raises(ValueError, match=r"needs the state of snip_jax\.masked"):
    optim.replace_mask(params, optax.sgd(0.1).init(params), masks.ones_like(params))


def test_unknown_method_is_an_error():
  with pytest.raises(ValueError, match=r"choose one of \('gmp', 'set', 'rigl'\)"):
    dynamic.validate_method("rigL")


# ------------------------------------------------------------------------------------------
# In a run: the scheduled steps only, exact counts, and a bit-exact resume after SIGKILL.

#: Tiny runs of 2 epochs x 9 steps, the mask changing every 3 steps until the end of epoch 2.
DYNAMIC = dict(mask_update_every=3, mask_update_end_epoch=2, num_epochs=2)


def dynamic_flags(method: str) -> list[str]:
  flags = [f"--config.dynamic={method}", "--config.mask_update_every=3"]
  return [*flags, "--config.mask_update_end_epoch=2", "--config.drop_fraction=0.5"]


@pytest.mark.slow
@pytest.mark.parametrize("method", dynamic.METHODS)
def test_the_mask_changes_only_at_the_scheduled_steps(tmp_path, tiny_mnist, method):
  cfg = tiny_config(
    tiny_mnist, dynamic=method, checkpoint_every_steps=1, checkpoint_keep=100, **DYNAMIC
  )
  summary = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert summary["dynamic"] == method
  history = {s: read_state(tmp_path / "run", s) for s in checkpoint_steps(tmp_path / "run")}
  assert sorted(history) == list(range(19))
  changed = []
  for s in range(1, 19):
    before, after = history[s - 1]["opt_state"]["mask"], history[s]["opt_state"]["mask"]
    if not all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    ):
      changed.append(s)
    params, mask = history[s]["params"], history[s]["opt_state"]["mask"]
    for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True):
      assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)
    counts = kept(mask)
    if method == "gmp":
      target = dynamic.gmp_sparsity(s - s % 3, final=0.9, begin_step=0, end_step=18)
      assert sum(counts) == round((1 - target) * 266_200)
    else:
      assert counts == kept(history[0]["opt_state"]["mask"])
  # Every 3 steps; the cosine drop fraction is 0 at the end step, so SET and RigL stop at 15.
  assert changed == ([3, 6, 9, 12, 15, 18] if method == "gmp" else [3, 6, 9, 12, 15])
  assert summary["num_kept"] == round(0.1 * 266_200)
  with np.load(tmp_path / "run" / "mask.npz") as f:  # The mask the run ended with.
    final = history[18]["opt_state"]["mask"]
    np.testing.assert_array_equal(f["Dense_0/kernel"], final["Dense_0"]["kernel"])


@pytest.mark.slow
@pytest.mark.parametrize("method", dynamic.METHODS)
def test_a_dynamic_run_resumes_bit_exactly_after_sigkill(tmp_path, tiny_mnist, method):
  reference = tmp_path / "reference"
  flags = [*cli_flags(reference, tiny_mnist), *dynamic_flags(method)]
  assert run_script(ROOT / "experiments" / "train.py", *flags).returncode == 0
  workdir = tmp_path / "run"
  flags = [*cli_flags(workdir, tiny_mnist), *dynamic_flags(method)]
  # Killed asking for its 14th batch: resumed from the checkpoint of step 8 or 12 (that of 12
  # may still be in writing), after two or four mask updates; the updates after it (at 9, 12,
  # 15 and 18) are made again.
  killed = run_script(INTERRUPT, "batch:14", *flags)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert max(checkpoint_steps(workdir)) in (8, 12)
  finished = run_script(ROOT / "experiments" / "train.py", *flags)
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert "Resuming from" in finished.stdout
  assert_same_outcome(outcome(workdir), outcome(reference))


@pytest.mark.parametrize(
  ("overrides", "match"),
  [
    (dict(dynamic="rigl"), r"needs config\.mask_update_end_epoch, .* e\.g\. 75 of 100 epochs"),
    (dict(dynamic="set", mask_update_end_epoch=101), r"<= config\.num_epochs, got 0, 101 and 100"),
    (
      dict(dynamic="set", mask_update_begin_epoch=5, mask_update_end_epoch=5),
      r"mask_update_begin_epoch < config\.mask_update_end_epoch",
    ),
    (dict(dynamic="gmp", mask_update_end_epoch=50, sparsity=0.0), "needs a sparsity above 0"),
    (
      dict(dynamic="gmp", mask_update_end_epoch=50, gmp_initial_sparsity=0.99),
      "the first must be the lower",
    ),
    (
      dict(dynamic="rigl", mask_update_end_epoch=50, distribution="2:4", sparsity=0.5),
      "use a 'global', 'uniform' or 'erk' distribution",
    ),
    (
      dict(dynamic="gmp", mask_update_end_epoch=50, sanity_check="shuffle"),
      r"starts dense \(config\.gmp_initial_sparsity is 0\), so there is none to check",
    ),
    (dict(dynamic="RigL"), r"choose one of \('gmp', 'set', 'rigl'\)"),
    (dict(dynamic="set", mask_update_end_epoch=50, drop_fraction=0.0), r"drop_fraction must be in"),
  ],
)
def test_bad_dynamic_configs_are_clear_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_lib.validate_config(config(**overrides))
