"""Property tests (hypothesis) on pytrees shaped like users' models, not like our zoo.

Random nested dicts (and the same leaves as an NNX ``State``) mixing float32 and bfloat16
kernels of rank 2 to 4, biases of rank 1 and 2, embeddings, LayerNorm scales, and int32 and
bool tables: SNIP's scores, ``top_k_mask`` and ``apply_mask`` keep exactly κ of exactly the
documented candidates (floating-point leaves of rank >= 2 that are no bias, embedding or
normalisation leaf), leave every other leaf bit for bit as it was, and the masked optimizer
(the reliability tests' optimizers, and those that take the loss as an extra argument) keeps
every pruned weight exactly 0 after every update. Measured with its params (``params=``), a
mask has exactly the sparsity asked for.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_properties as properties
from helpers import dropout_mlp
from hypothesis import given, settings
from hypothesis import strategies as st

from snip_jax import (
  CRITERIA,
  Task,
  UnmaskedParamsWarning,
  apply_mask,
  connection_sensitivity,
  dynamic,
  has_path,
  masked,
  masks,
  prune,
  top_k_mask,
)

SETTINGS = dict(deadline=None, derandomize=True, database=None, max_examples=25)

#: Leaf kinds: (name, dtype, shape, candidate?).
KINDS = (
  ("kernel", jnp.float32, (3, 4), True),
  ("kernel", jnp.bfloat16, (2, 3, 4), True),
  ("kernel", jnp.float32, (2, 2, 3, 4), True),
  ("w", jnp.float32, (4, 2), True),  # A hand-written model's weight.
  ("bias", jnp.float32, (4,), False),
  ("bias", jnp.float32, (2, 3), False),  # Attention's (heads, head_dim).
  ("embedding", jnp.float32, (5, 4), False),
  ("pos_emb", jnp.float32, (3, 4), False),
  ("table", jnp.int32, (2, 3), False),
  ("flags", jnp.bool_, (2, 2), False),
)


@st.composite
def user_trees(draw):
  """``(params, candidate names)``: 2 to 4 modules of 1 to 3 leaves, one of them a LayerNorm."""
  params, candidates = {}, set()
  key = jax.random.key(draw(st.integers(0, 2**16)))
  for m in range(draw(st.integers(2, 4))):
    module = f"LayerNorm_{m}" if m == 0 else f"block_{m}"
    leaves = {}
    for name, dtype, shape, candidate in draw(
      st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique_by=lambda k: k[0])
    ):
      key, sub = jax.random.split(key)
      if jnp.issubdtype(dtype, jnp.floating):
        value = jax.random.normal(sub, shape, jnp.float32).astype(dtype)
      else:
        value = jax.random.randint(sub, shape, 0, 3).astype(dtype)
      leaves[name] = value
      if candidate and m != 0:  # Nothing in a normalisation layer is a candidate.
        candidates.add(f"{module}/{name}")
    params[module] = leaves
  params["block_x"] = {"kernel": jax.random.normal(key, (4, 3))}  # At least one candidate.
  candidates.add("block_x/kernel")
  return params, candidates


def loss_fn(params):
  """A loss that reads every floating-point leaf (so every candidate gets a gradient)."""
  return sum(
    jnp.sum(jnp.sin(p.astype(jnp.float32)))
    for p in jax.tree.leaves(params)
    if jnp.issubdtype(p.dtype, jnp.floating)
  )


def named(tree) -> dict:
  return {masks.path_name(path): leaf for path, leaf in jax.tree.leaves_with_path(tree)}


@settings(**SETTINGS)
@given(case=user_trees(), sparsity=st.sampled_from([0.3, 0.5, 0.9]))
def test_snip_keeps_exactly_kappa_of_exactly_the_candidates(case, sparsity):
  params, candidates = case
  scores = connection_sensitivity(loss_fn, params)
  assert {n for n, s in named(scores).items() if masks.is_candidate(s)} == candidates
  mask = top_k_mask(scores, sparsity)
  size = sum(np.size(leaf) for name, leaf in named(params).items() if name in candidates)
  kept = sum(int(np.sum(m)) for name, m in named(mask).items() if name in candidates)
  assert kept == round((1 - sparsity) * size)
  # Measured with its params (or on the masked params), the mask has the sparsity asked for;
  # what is left out is named with a reason.
  exact = 1 - round((1 - sparsity) * size) / size
  assert masks.sparsity(mask, params=params) == pytest.approx(exact, abs=1e-12)
  assert masks.sparsity(apply_mask(params, mask)) == pytest.approx(exact, abs=1e-12)
  assert {r["name"] for r in masks.layer_summary(mask, params=params)} == candidates
  assert {r["name"] for r in masks.excluded_leaves(params)} == set(named(params)) - candidates
  assert masks.overlap(mask, mask, params=params)["union"] == kept
  pruned = named(apply_mask(params, mask))
  for name, leaf in named(params).items():
    if name not in candidates:
      assert bool(np.all(named(mask)[name]))
      assert pruned[name].dtype == leaf.dtype
      np.testing.assert_array_equal(np.asarray(pruned[name]), np.asarray(leaf))


#: The reliability tests' optimizers (with and without weight decay and clipping), and those
#: that take the loss as an extra argument.
EXTRA_ARGS = {
  "momo": lambda: optax.contrib.momo(0.05),
  "polyak_sgd": lambda: optax.polyak_sgd(max_learning_rate=0.05),
  "adam-reduce_on_plateau": lambda: optax.chain(
    optax.adam(0.05), optax.contrib.reduce_on_plateau()
  ),
}


@settings(**SETTINGS)
@given(
  case=user_trees(),
  inner=st.sampled_from(sorted(properties.COMBINATIONS) + sorted(EXTRA_ARGS)),
)
def test_pruned_weights_stay_zero_on_user_trees(case, inner):
  params, _ = case
  # The optimizer trains the floating-point leaves (the others are constants of the model).
  floats = jax.tree.map(lambda p: p if jnp.issubdtype(p.dtype, jnp.floating) else None, params)
  floats = {m: {k: v for k, v in leaves.items() if v is not None} for m, leaves in floats.items()}
  floats = {m: leaves for m, leaves in floats.items() if leaves}
  mask = top_k_mask(connection_sensitivity(loss_fn, floats), 0.7)
  if inner in EXTRA_ARGS:
    tx = masked(EXTRA_ARGS[inner](), mask)
  else:
    tx = masked(properties.make_optimizer(*properties.COMBINATIONS[inner]), mask)
  with pytest.warns(UnmaskedParamsWarning):
    state = tx.init(floats)  # Not apply_mask-ed: the first update prunes.

  @jax.jit
  def step(p, s):
    value, grads = jax.value_and_grad(loss_fn)(p)
    return tx.update(grads, s, p, value=value)

  for _ in range(3):
    updates, state = step(floats, state)
    floats = optax.apply_updates(floats, updates)
    for name, m in named(mask).items():
      assert not np.any(np.asarray(named(floats)[name], np.float32)[~np.asarray(m)])


def test_the_same_leaves_as_an_nnx_state():
  from flax import nnx

  params = {
    "attn": {"kernel": jnp.ones((4, 2, 3)), "bias": jnp.ones((2, 3))},
    "embed": {"embedding": jnp.ones((5, 4))},
    "out": {"kernel": jnp.arange(12.0).reshape(4, 3)},
  }
  state = nnx.State({m: {k: nnx.Param(v) for k, v in d.items()} for m, d in params.items()})
  scores = named(connection_sensitivity(loss_fn, state))
  assert scores.keys() == named(params).keys()  # The same names, no "/value".
  assert {n for n, s in scores.items() if masks.is_candidate(s)} == {"attn/kernel", "out/kernel"}
  mask = top_k_mask(connection_sensitivity(loss_fn, state), 0.5)
  assert (
    sum(int(np.sum(m)) for m in jax.tree.leaves(mask)) == round(0.5 * (24 + 12)) + 2 * 3 + 5 * 4
  )  # κ, the bias, the embedding.
  with pytest.raises(ValueError, match="no leaf"):
    apply_mask(state, {"attn": named(mask)})


def forward(params, x):
  """One output that reads every leaf as its kind is used: floating-point ones as weights, an
  int32 table as indices into ``x``, a bool table as a gate (a float table there would fail)."""
  x = jnp.ravel(x)  # One example: (1, 3) from the data-free criteria.
  total = jnp.sum(x)
  for name, leaf in named(params).items():
    if name.endswith("/table"):  # Indices: a float table fails here.
      total += jnp.sum(x[leaf])
    elif name.endswith("/flags"):  # A predicate: lax.select takes bool only.
      total += jnp.sum(jax.lax.select(leaf, jnp.full(leaf.shape, x[0]), jnp.zeros(leaf.shape)))
    else:
      total += jnp.sum(leaf.astype(x.dtype))
  return total[None]


TASK = Task(
  loss_fn=lambda params, x: loss_fn(params) * jnp.mean(x),
  forward=forward,
  input_shape=(3,),
)


def candidate_counts(mask, candidates) -> dict[str, int]:
  return {name: int(np.sum(m)) for name, m in named(mask).items() if name in candidates}


def assert_only_candidates_pruned(mask, params, candidates):
  for name, m in named(mask).items():
    assert np.shape(m) == np.shape(named(params)[name])
    if name not in candidates:
      assert bool(np.all(m)), name


@pytest.mark.parametrize("name", sorted(CRITERIA))
@settings(**{**SETTINGS, "max_examples": 10})
@given(case=user_trees())
def test_every_criterion_prunes_exactly_the_candidates(name, case):
  """Integer and bool tables reach the model as they are (not as floats), whatever the
  criterion: magnitude, GraSP and SynFlow rescale or differentiate only floating-point leaves."""
  params, candidates = case
  batches = [(jnp.arange(1.0, 4.0),)]
  mask = prune(name, params, 0.5, TASK, batches=batches, key=jax.random.key(0), rounds=2)
  size = sum(np.size(leaf) for n, leaf in named(params).items() if n in candidates)
  assert sum(candidate_counts(mask, candidates).values()) == round(0.5 * size)
  assert_only_candidates_pruned(mask, params, candidates)
  assert has_path(TASK, params, mask)


@settings(**SETTINGS)
@given(case=user_trees())
def test_masks_change_on_user_trees_with_every_count_kept(case):
  params, candidates = case
  mask = prune("magnitude", params, 0.5, TASK)
  counts = candidate_counts(mask, candidates)
  grads = jax.tree.map(lambda p: jnp.ones(jnp.shape(p)), params)
  for new in (
    dynamic.set_mask(mask, params, jax.random.key(1), 0.5),
    dynamic.rigl_mask(mask, params, grads, 0.5),
  ):
    assert candidate_counts(new, candidates) == counts
    assert_only_candidates_pruned(new, params, candidates)
  gmp = dynamic.gmp_mask(mask, params, 0.75)
  size = sum(np.size(leaf) for n, leaf in named(params).items() if n in candidates)
  assert sum(candidate_counts(gmp, candidates).values()) == round(0.25 * size)
  assert_only_candidates_pruned(gmp, params, candidates)


def test_every_criterion_on_a_whole_nnx_state():
  """A model's whole ``nnx.state``: Dropout's RNG key and counter are no candidates of any
  criterion or mask update, and reach the model as they are."""
  from flax import nnx

  graphdef, state = nnx.split(dropout_mlp(8, 16, 4))
  candidates = {"hidden/kernel", "out/kernel"}
  assert candidates < set(named(state)) and {"drop/rngs/key", "drop/rngs/count"} < set(named(state))

  def run(s, x):
    return nnx.merge(graphdef, s)(x)

  x, y = jnp.ones((4, 8)), jnp.arange(4)
  task = Task(
    loss_fn=lambda s, x, y: optax.softmax_cross_entropy_with_integer_labels(run(s, x), y).mean(),
    forward=run,
    input_shape=(8,),
  )
  for name in sorted(CRITERIA):
    mask = prune(name, state, 0.5, task, batches=[(x, y)], key=jax.random.key(0), rounds=2)
    assert sum(candidate_counts(mask, candidates).values()) == (8 * 16 + 16 * 4) // 2, name
    assert_only_candidates_pruned(mask, state, candidates)
  assert has_path(task, state, mask)
  counts = candidate_counts(mask, candidates)
  grads = jax.tree.map(lambda p: jnp.ones(jnp.shape(p)), state)
  assert (
    candidate_counts(dynamic.set_mask(mask, state, jax.random.key(1), 0.3), candidates) == counts
  )
  assert candidate_counts(dynamic.rigl_mask(mask, state, grads, 0.3), candidates) == counts
  assert sum(candidate_counts(dynamic.gmp_mask(mask, state, 0.75), candidates).values()) == 48
