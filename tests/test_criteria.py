"""Pruning criteria: literal scores on tiny trees, GraSP against finite differences, SynFlow's
conservation, multi-batch means, iterated pruning, exact κ everywhere, and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat_kernels, mlp_apply, random_params

from snip_jax import criteria, masks, num_kept, selection

SIZES = ((12, 10), (10, 8), (8, 4))  # 120 + 80 + 32 = 232 prunable weights.


def mlp_task():
  def loss_fn(params, x, y):
    logits = mlp_apply(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  return criteria.Task(loss_fn=loss_fn, forward=mlp_apply, input_shape=(SIZES[0][0],))


def mlp_batch(seed, n=16):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (n, SIZES[0][0])), jax.random.randint(ky, (n,), 0, SIZES[-1][1])


def kept(mask) -> int:
  return sum(int(jnp.sum(m)) for m in jax.tree.leaves(mask) if m.ndim >= 2)


# --------------------------------------------------------------------------------------------
# Literal scores.


def test_magnitude_is_abs_weight_and_zero_off_the_filter():
  params = {"kernel": jnp.array([[1.0, -2.0], [0.5, -0.25]]), "bias": jnp.array([3.0, -4.0])}
  scores = criteria.score("magnitude", params, criteria.Task())
  np.testing.assert_array_equal(scores["kernel"], [[1.0, 2.0], [0.5, 0.25]])
  np.testing.assert_array_equal(scores["bias"], [0.0, 0.0])
  with_bias = criteria.score(
    "magnitude", params, criteria.Task(), filter_fn=masks.kernels_and_biases
  )
  np.testing.assert_array_equal(with_bias["bias"], [3.0, 4.0])


def test_random_is_uniform_deterministic_and_keyed():
  params = random_params(jax.random.key(0), SIZES)
  a = criteria.score("random", params, criteria.Task(), key=jax.random.key(1))
  b = criteria.score("random", params, criteria.Task(), key=jax.random.key(1))
  c = criteria.score("random", params, criteria.Task(), key=jax.random.key(2))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a["Dense_0"]["kernel"], c["Dense_0"]["kernel"])
  flat = flat_kernels(a)
  assert flat.min() >= 0.0 and flat.max() < 1.0 and 0.4 < flat.mean() < 0.6
  assert not np.any(a["Dense_0"]["bias"])


def test_snip_at_a_mask_scores_the_pruned_network():
  # Iterative SNIP rescores w ⊙ mask: ∂L/∂c at c = m is w ⊙ ∂L/∂θ at θ = w ⊙ m.
  task, (x, y) = mlp_task(), mlp_batch(0)
  params = random_params(jax.random.key(0), SIZES)
  mask = jax.tree.map(lambda p: jax.random.bernoulli(jax.random.key(5), 0.5, p.shape), params)
  mask = jax.tree.map(lambda m: m if m.ndim >= 2 else jnp.ones_like(m), mask)
  scores = criteria.score("snip", params, task, batches=[(x, y)], mask=mask)
  theta = masks.apply_mask(params, mask)
  grads = jax.grad(task.loss_fn)(theta, x, y)
  raw = jax.tree.map(lambda w, g: jnp.abs(w * g) if w.ndim >= 2 else 0 * w, params, grads)
  total = sum(jnp.sum(r) for r in jax.tree.leaves(raw))
  jax.tree.map(
    lambda s, r: np.testing.assert_allclose(s, r / total, rtol=2e-5, atol=1e-8), scores, raw
  )


def test_grasp_literal_on_a_separable_quadratic():
  # L = Σ a w² / 2 + b w: g = a w + b, H = diag(a), score = w ⊙ Hg = w a (a w + b).
  w = jnp.array([[1.0, -2.0], [0.5, 3.0]])
  a, b = jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([[0.0, 1.0], [-1.0, 0.0]])

  def loss(params, a, b):
    return jnp.sum(a * params["w"] ** 2) / 2 + jnp.sum(b * params["w"])

  scores = criteria.score("grasp", {"w": w}, criteria.Task(loss_fn=loss), batches=[(a, b)])
  # g = [[1, -3], [0.5, 12]]; Hg = [[1, -6], [1.5, 48]]; w ⊙ Hg = [[1, 12], [0.75, 144]].
  np.testing.assert_allclose(scores["w"], [[1.0, 12.0], [0.75, 144.0]])


def test_grasp_hessian_gradient_product_matches_finite_differences():
  with jax.enable_x64(True):
    task, (x, y) = mlp_task(), mlp_batch(1)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), random_params(jax.random.key(3), SIZES))
    x = x.astype(jnp.float64)
    grad = jax.jit(lambda p: jax.grad(task.loss_fn)(p, x, y))
    # The direction is the kernels' gradient: the biases' is held at 0 (their H_wb g_b cross
    # terms would change every kernel's score).
    g = jax.tree.map(lambda d: d if d.ndim >= 2 else 0 * d, grad(params))
    eps = 1e-5
    plus = grad(jax.tree.map(lambda p, d: p + eps * d, params, g))
    minus = grad(jax.tree.map(lambda p, d: p - eps * d, params, g))
    hg = jax.tree.map(lambda a, b: (a - b) / (2 * eps), plus, minus)
    expected = jax.tree.map(lambda w, h: w * h if w.ndim >= 2 else 0 * w, params, hg)
    scores = criteria.score("grasp", params, task, batches=[(x, y)])
  jax.tree.map(
    lambda s, e: np.testing.assert_allclose(s, e, rtol=1e-4, atol=1e-7), scores, expected
  )


def linear_chain(params, x):
  for name in sorted(params):
    x = x @ params[name]
  return x


def test_synflow_literal_and_conservation_on_a_linear_chain():
  # R = 1ᵀ|W1||W2|1; ∂R/∂W1_ij = Σ_k |W2_jk|, ∂R/∂W2_jk = Σ_i |W1_ij|.
  params = {"a": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "b": jnp.array([[2.0], [-1.0]])}
  task = criteria.Task(forward=linear_chain, input_shape=(2,))
  scores = criteria.score("synflow", params, task)
  # Column sums of |W1| = [4, 2.5]; row sums of |W2| = [2, 1]; R = 4*2 + 2.5*1 = 10.5.
  raw_a = np.array([[1 * 2, 2 * 1], [3 * 2, 0.5 * 1]])
  raw_b = np.array([[2 * 4], [1 * 2.5]])
  total = raw_a.sum() + raw_b.sum()  # 2 * R: each layer's scores sum to R.
  np.testing.assert_allclose(scores["a"], raw_a / total, rtol=1e-6)
  np.testing.assert_allclose(scores["b"], raw_b / total, rtol=1e-6)


@pytest.mark.parametrize("depth", [3, 6])
def test_synflow_conserves_flow_layer_by_layer(depth):
  keys = jax.random.split(jax.random.key(7), depth)
  params = {f"w{i}": jax.random.normal(k, (6, 6)) for i, k in enumerate(keys)}
  scores = criteria.score("synflow", params, criteria.Task(forward=linear_chain, input_shape=(6,)))
  sums = [float(jnp.sum(scores[f"w{i}"])) for i in range(depth)]
  np.testing.assert_allclose(sums, [1 / depth] * depth, rtol=1e-5)


def test_synflow_does_not_overflow_a_deep_chain():
  # R = 8 * 400**20 ≈ 1e53: beyond float32, fine in the float64 it is computed in.
  params = {f"w{i:02d}": jnp.full((8, 8), 50.0) for i in range(20)}
  scores = criteria.score("synflow", params, criteria.Task(forward=linear_chain, input_shape=(8,)))
  for s in jax.tree.leaves(scores):
    assert s.dtype == jnp.float32
    np.testing.assert_allclose(s, 1 / (20 * 64), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Batches and rounds.


def test_multi_batch_score_is_the_mean_of_single_batch_scores():
  task = mlp_task()
  params = random_params(jax.random.key(0), SIZES)
  batches = [mlp_batch(seed) for seed in range(4)]
  for name in ("snip", "grasp"):
    together = criteria.score(name, params, task, batches=batches)
    single = [criteria.score(name, params, task, batches=[b]) for b in batches]
    mean = jax.tree.map(lambda *s: sum(s) / len(s), *single)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), together, mean
    )


def test_score_runs_inside_a_users_jit():
  """score compiles its criterion with snip_jax.xla's options only when called directly: under
  the caller's jit (which alone may carry compiler options) it runs as part of that program."""
  task, params, batch = mlp_task(), random_params(jax.random.key(0), SIZES), mlp_batch(0)
  direct = criteria.score("snip", params, task, batches=[batch])
  jitted = jax.jit(lambda p: criteria.score("snip", p, task, batches=[batch]))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12), direct, jitted)


def test_batches_from_a_generator_are_consumed_one_at_a_time():
  task, params = mlp_task(), random_params(jax.random.key(0), SIZES)
  produced = []

  def batches(round_index):
    for seed in range(3):
      produced.append((round_index, seed))
      yield mlp_batch(seed)

  from_generator = criteria.score("snip", params, task, batches=batches)
  from_list = criteria.score("snip", params, task, batches=[mlp_batch(s) for s in range(3)])
  assert produced == [(0, 0), (0, 1), (0, 2)]
  jax.tree.map(np.testing.assert_array_equal, from_generator, from_list)


def test_schedule_is_exponential_and_ends_at_the_target():
  np.testing.assert_allclose(criteria.schedule(0.99, 2), [0.9, 0.99])
  s = criteria.schedule(0.98, 100)
  assert len(s) == 100 and s[-1] == 0.98 and np.all(np.diff(s) > 0)
  np.testing.assert_allclose(1 - s[49], 0.02**0.5)


def test_iterative_snip_is_snip_rescored_on_the_pruned_network():
  task, params = mlp_task(), random_params(jax.random.key(0), SIZES)
  batches = [mlp_batch(0)]
  got = criteria.prune("iterative_snip", params, 0.96, task, batches=batches, rounds=2)
  # By hand: SNIP at 80%, then SNIP of that network at c = mask, restricted to its survivors.
  first = selection.top_k_mask(criteria.score("snip", params, task, batches=batches), 0.8)
  again = criteria.score("snip", params, task, batches=batches, mask=first)
  expected = selection.top_k_mask(again, 0.96, within=first)
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  assert kept(got) == num_kept(232, 0.96)
  one_round = criteria.prune("iterative_snip", params, 0.96, task, batches=batches, rounds=1)
  snip = criteria.prune("snip", params, 0.96, task, batches=batches)
  jax.tree.map(np.testing.assert_array_equal, one_round, snip)


def test_rounds_get_fresh_batches_and_keys():
  task, params = mlp_task(), random_params(jax.random.key(0), SIZES)
  seen = []

  def batches(round_index):
    seen.append(round_index)
    yield mlp_batch(round_index)

  criteria.prune("iterative_snip", params, 0.9, task, batches=batches, rounds=4)
  assert seen == [0, 1, 2, 3]


def record_rounds(monkeypatch, name: str) -> list[int]:
  """Wraps criterion ``name``'s score function in the registry; the list it returns gets, per
  call, the number of prunable connections the scored mask keeps."""
  criterion = criteria.get_criterion(name)
  kept_at_call = []

  def make_score_fn(task, filter_fn):
    score_fn = criterion.make_score_fn(task, filter_fn)

    def recording_score_fn(params, mask, batch, key):
      # Runs jitted (prune compiles each criterion's score function): recorded at run time.
      jax.debug.callback(lambda mask: kept_at_call.append(kept(mask)), mask)
      return score_fn(params, mask, batch, key)

    return recording_score_fn

  replaced = dataclasses.replace(criterion, make_score_fn=make_score_fn)
  monkeypatch.setitem(criteria.CRITERIA, name, replaced)
  return kept_at_call


@pytest.mark.parametrize("name", ["synflow", "iterative_snip"])
def test_default_rounds_are_run(name, monkeypatch):
  # The registry's default of 100 rounds must be what prune runs, not only what it reports:
  # one score per round, each at the previous round's mask of the schedule.
  task, params = mlp_task(), random_params(jax.random.key(0), SIZES)
  kept_at_call = record_rounds(monkeypatch, name)
  batch_rounds = []

  def batches(round_index):
    batch_rounds.append(round_index)
    yield mlp_batch(0)

  mask = criteria.prune(name, params, 0.9, task, batches=batches)
  assert kept_at_call == [232] + [num_kept(232, t) for t in criteria.schedule(0.9, 100)[:-1]]
  # Iterative SNIP draws each round's batches once; data-free SynFlow never draws any.
  assert batch_rounds == (list(range(100)) if name == "iterative_snip" else [])
  assert kept(mask) == num_kept(232, 0.9)


# --------------------------------------------------------------------------------------------
# Exact κ for every criterion and distribution.


# At 99.9%, an early round of 10 can cut the MLP in two; the later rounds then score zero
# everywhere, which top_k_mask warns about (ZeroScoresWarning) and still selects exactly κ.
@pytest.mark.filterwarnings("ignore::snip_jax.selection.ZeroScoresWarning")
@pytest.mark.parametrize("distribution", selection.DISTRIBUTIONS)
@pytest.mark.parametrize("name", sorted(criteria.CRITERIA))
def test_exact_kappa_for_every_criterion_and_distribution(name, distribution):
  # 480 + 400 + 120 = 1,000 prunable weights: κ = 1 at 0.999.
  task = mlp_task()
  params = random_params(jax.random.key(0), ((12, 40), (40, 10), (10, 12)))

  def run(target):
    return criteria.prune(
      name,
      params,
      target,
      task,
      batches=[mlp_batch(0)],
      key=jax.random.key(1),
      rounds=None if target < 0.9 else 10,
      distribution=distribution,
    )

  for target in (0.0, 0.5, 0.9, 0.999):
    assert kept(run(target)) == num_kept(1_000, target), (name, distribution, target)
  jax.tree.map(np.testing.assert_array_equal, run(0.9), run(0.9))  # Deterministic.


def test_guard_keeps_every_layer_alive():
  task, params = mlp_task(), random_params(jax.random.key(0), SIZES)
  mask = criteria.prune(
    "snip", params, 1 - 6 / 232, task, batches=[mlp_batch(0)], min_kept_per_layer=2
  )
  assert [int(jnp.sum(mask[f"Dense_{i}"]["kernel"])) for i in range(3)] == [2, 2, 2]


def test_has_path_sees_collapse_and_disconnection():
  params = random_params(jax.random.key(0), ((3, 2), (2, 2)))
  task = criteria.Task(forward=mlp_apply, input_shape=(3,))
  full = masks.ones_like(params)
  assert criteria.has_path(task, params, full)
  collapsed = {**full, "Dense_1": {**full["Dense_1"], "kernel": jnp.zeros((2, 2), bool)}}
  assert not criteria.has_path(task, params, collapsed)
  # No layer is empty, but the first layer feeds only unit 0 and the second reads only unit 1.
  cut = {
    "Dense_0": {"kernel": jnp.array([[True, False]] * 3), "bias": jnp.ones(2, bool)},
    "Dense_1": {"kernel": jnp.array([[False, False], [True, True]]), "bias": jnp.ones(2, bool)},
  }
  assert not criteria.has_path(task, params, cut)
  cut["Dense_1"]["kernel"] = jnp.array([[True, False], [False, False]])
  assert criteria.has_path(task, params, cut)


def test_reach_names_the_outputs_pruning_cut_off():
  params = random_params(jax.random.key(0), ((3, 4), (4, 3)))
  task = criteria.Task(forward=mlp_apply, input_shape=(3,))
  full = masks.ones_like(params)
  reach = criteria.reach(task, params, full)
  assert reach.cut == [] and reach.connected and reach.dense.tolist() == [True] * 3
  # Every layer keeps weights, but none reach output 1, and output 2 reads only hidden unit 3,
  # which no kept input weight feeds: two of the three classes are cut off.
  mask = {
    "Dense_0": {"kernel": jnp.array([[True, True, False, False]] * 3), "bias": jnp.ones(4, bool)},
    "Dense_1": {
      "kernel": jnp.array([[True, False, False]] * 3 + [[False, False, True]]),
      "bias": jnp.ones(3, bool),
    },
  }
  reach = criteria.reach(task, params, mask)
  assert reach.pruned.tolist() == [True, False, False] and reach.cut == [1, 2]
  assert reach.connected and criteria.has_path(task, params, mask)
  # An output the probe cannot see even unpruned (here: always multiplied by 0) is not "cut".
  blind = criteria.Task(
    forward=lambda p, x: mlp_apply(p, x) * jnp.array([1.0, 1.0, 0.0]), input_shape=(3,)
  )
  assert criteria.reach(blind, params, mask).cut == [1]
  assert criteria.reach(blind, params, full).cut == []


# --------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_is_a_clear_error():
  params = random_params(jax.random.key(0), SIZES)
  with pytest.raises(ValueError, match="Unknown criterion 'snap'"):
    criteria.score("snap", params, mlp_task(), batches=[mlp_batch(0)])
  with pytest.raises(ValueError, match=r"'snip' needs Task\(loss_fn=...\)"):
    criteria.score("snip", params, criteria.Task(), batches=[mlp_batch(0)])
  with pytest.raises(ValueError, match=r"'synflow' needs Task\(forward=..., input_shape=...\)"):
    criteria.prune("synflow", params, 0.9, criteria.Task())
  with pytest.raises(ValueError, match="pass batches="):
    criteria.score("grasp", params, mlp_task())
  with pytest.raises(ValueError, match="no scoring batch"):
    criteria.score("snip", params, mlp_task(), batches=[])
  with pytest.raises(ValueError, match=r"'random' needs key="):
    criteria.prune("random", params, 0.9, criteria.Task())
  with pytest.raises(ValueError, match="rounds must be a positive integer"):
    criteria.prune("snip", params, 0.9, mlp_task(), batches=[mlp_batch(0)], rounds=0)
  with pytest.raises(ValueError, match="rounds must be a positive integer"):
    criteria.schedule(0.9, 2.0)
  assert criteria.schedule(0.75, np.int64(2)) == criteria.schedule(0.75, 2)  # NumPy's ints too.
  with pytest.raises(ValueError, match="sparsity must lie in"):
    criteria.prune("magnitude", params, 1.0, criteria.Task())


def test_data_free_criteria_on_a_token_model_take_the_input_dtype():
  """SynFlow feeds an all-ones input: token 1 everywhere for a model of token ids, given
  Task(input_dtype=...); without it, one line names the fix instead of JAX's raw error."""
  from flax import linen as nn

  class Tokens(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      h = nn.relu(nn.Dense(16)(nn.Embed(20, 8)(tokens)))
      return nn.Dense(4)(h.mean(1))

  model = Tokens()
  params = model.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))["params"]
  forward = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
  with pytest.raises(ValueError, match=r"give Task\(\.\.\., input_dtype=jnp\.int32\)"):
    criteria.prune("synflow", params, 0.9, criteria.Task(forward=forward, input_shape=(6,)))
  task = criteria.Task(forward=forward, input_shape=(6,), input_dtype=jnp.int32)
  mask = criteria.prune("synflow", params, 0.9, task, rounds=2)
  kept = int(mask["Dense_0"]["kernel"].sum()) + int(mask["Dense_1"]["kernel"].sum())
  assert kept == round(0.1 * (8 * 16 + 16 * 4))  # The embedding is no candidate.
  assert bool(mask["Embed_0"]["embedding"].all()) and criteria.has_path(task, params, mask)
