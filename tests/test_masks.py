"""Mask utilities: apply, measure, summarise, save and load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dropout_mlp, random_params

from snip_jax import (
  apply_mask,
  check_mask,
  count_prunable,
  format_layer_summary,
  kernels_and_biases,
  layer_sparsities,
  layer_summary,
  load_mask,
  ones_like,
  overlap,
  save_mask,
  sparsity,
)
from snip_jax.masks import leaf_names


def literal_tree():
  params = {
    "Dense_0": {"kernel": jnp.array([[1.0, jnp.nan], [3.0, -4.0]]), "bias": jnp.array([1.0, 2.0])},
    "Dense_1": {"kernel": jnp.array([[5.0, 6.0, 7.0]]), "bias": jnp.array([0.5])},
  }
  mask = {
    "Dense_0": {
      "kernel": jnp.array([[True, False], [False, True]]),
      "bias": jnp.array([True, True]),
    },
    "Dense_1": {"kernel": jnp.array([[False, False, True]]), "bias": jnp.array([True])},
  }
  return params, mask


def test_apply_mask_zeroes_exactly_even_nan():
  params, mask = literal_tree()
  masked = apply_mask(params, mask)
  np.testing.assert_array_equal(masked["Dense_0"]["kernel"], [[1.0, 0.0], [0.0, -4.0]])
  np.testing.assert_array_equal(masked["Dense_1"]["kernel"], [[0.0, 0.0, 7.0]])
  np.testing.assert_array_equal(masked["Dense_0"]["bias"], [1.0, 2.0])
  assert not np.signbit(masked["Dense_0"]["kernel"][1, 0])  # +0.0, not -0.0.


def test_sparsity_and_layer_summary():
  params, mask = literal_tree()
  assert count_prunable(params) == 7
  assert sparsity(mask) == pytest.approx(4 / 7)
  assert sparsity(apply_mask(params, mask)) == pytest.approx(4 / 7)
  assert layer_summary(mask) == [
    {"name": "Dense_0/kernel", "size": 4, "kept": 2, "sparsity": 0.5},
    {"name": "Dense_1/kernel", "size": 3, "kept": 1, "sparsity": pytest.approx(2 / 3)},
  ]
  assert [r["name"] for r in layer_summary(mask, kernels_and_biases)] == [
    "Dense_0/bias",
    "Dense_0/kernel",
    "Dense_1/bias",
    "Dense_1/kernel",
  ]
  table = format_layer_summary(layer_summary(mask))
  assert table.splitlines()[-1].split() == ["total", "7", "3", "57.14%"]


def test_ones_like_and_check_mask():
  params = random_params(jax.random.key(0))
  mask = ones_like(params)
  check_mask(params, mask)
  assert sparsity(mask) == 0.0
  with pytest.raises(ValueError, match="does not match"):
    check_mask(params, {"Dense_0": mask["Dense_0"]})
  with pytest.raises(ValueError, match="does not match"):
    apply_mask(params, {"Dense_0": mask["Dense_0"]})


def test_save_load_round_trip_and_mismatch(tmp_path):
  params, mask = literal_tree()
  path = tmp_path / "mask.npz"
  save_mask(path, mask)
  with np.load(path) as f:
    assert sorted(f.files) == ["Dense_0/bias", "Dense_0/kernel", "Dense_1/bias", "Dense_1/kernel"]
    assert f["Dense_0/kernel"].dtype == np.bool_
  loaded = load_mask(path, params)
  jax.tree.map(np.testing.assert_array_equal, loaded, mask)

  with pytest.raises(ValueError, match="no entry"):
    load_mask(path, random_params(jax.random.key(0)))
  with pytest.raises(ValueError, match="entries the params lack"):
    load_mask(path, {"Dense_0": params["Dense_0"]})
  wider = {**params, "Dense_1": {**params["Dense_1"], "kernel": jnp.ones((1, 4))}}
  with pytest.raises(ValueError, match=r"'Dense_1/kernel' has shape \(1, 3\) but the param"):
    load_mask(path, wider)


def test_a_damaged_mask_file_is_refused_or_read_exactly(tmp_path):
  """Every single-bit flip of a mask file (the first bit of each byte): ``load_mask`` either
  refuses it with its ValueError (a flip can make a zip member look encrypted, or compressed by
  an unknown method) or returns the saved mask exactly (a flip in a spare field); a missing file
  stays a FileNotFoundError."""
  params, mask = literal_tree()
  path = tmp_path / "mask.npz"
  save_mask(path, mask)
  data = path.read_bytes()
  damaged, refused = tmp_path / "damaged.npz", 0
  for i in range(len(data)):
    damaged.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :])
    try:
      loaded = load_mask(damaged, params)
    except ValueError as e:
      assert "damaged.npz" in str(e)
      refused += 1
      continue
    jax.tree.map(np.testing.assert_array_equal, loaded, mask)
  assert refused > len(data) // 2
  with pytest.raises(FileNotFoundError):
    load_mask(tmp_path / "absent.npz", params)


def test_a_mask_whose_leaves_share_a_name_is_refused_before_writing(tmp_path):
  # 'a/b' and a -> b both name their leaf 'a/b': the file would keep one of the two.
  mask = {"a/b": jnp.ones((2,), bool), "a": {"b": jnp.zeros((2,), bool)}}
  with pytest.raises(ValueError, match="Two leaves of the tree are both named 'a/b'"):
    save_mask(tmp_path / "mask.npz", mask)
  assert not list(tmp_path.iterdir())
  assert leaf_names({"a": {"b": 1, "c": [2, 3]}}) == ["a/b", "a/c/0", "a/c/1"]


def test_overlap_is_iou_per_layer_and_in_total():
  a = {
    "l1": {"kernel": jnp.array([[True, True], [False, False]]), "bias": jnp.ones(2, bool)},
    "l2": {"kernel": jnp.array([[True], [False]]), "bias": jnp.ones(1, bool)},
  }
  b = {
    "l1": {"kernel": jnp.array([[True, False], [True, False]]), "bias": jnp.zeros(2, bool)},
    "l2": {"kernel": jnp.array([[False], [False]]), "bias": jnp.ones(1, bool)},
  }
  result = overlap(a, b)
  # l1: {00, 01} vs {00, 10}: 1 shared of 3; l2: {0} vs {}: 0 of 1; total 1 of 4.
  assert result["per_layer"] == {"l1/kernel": 1 / 3, "l2/kernel": 0.0}
  assert result["total"] == 0.25 and (result["intersection"], result["union"]) == (1, 4)
  assert overlap(a, a)["total"] == 1.0
  empty = jax.tree.map(jnp.zeros_like, a)
  assert overlap(empty, empty)["total"] == 1.0  # Both keep nothing: identical.
  with pytest.raises(ValueError, match="Mask tree does not match"):
    overlap(a, {"l1": a["l1"]})


def test_layer_sparsities_is_a_flat_dict_for_logging():
  mask = {
    "l1": {"kernel": jnp.array([[True, False], [False, False]]), "bias": jnp.ones(2, bool)},
    "l2": {"kernel": jnp.array([[True], [True]])},
  }
  assert layer_sparsities(mask) == {
    "sparsity/l1/kernel": 0.75,
    "sparsity/l2/kernel": 0.0,
    "sparsity/total": 0.5,
  }


@pytest.mark.parametrize(
  "module, norm",
  [
    ("LayerNorm_0", True),
    ("conv1_norm", True),
    ("RMSNorm_0", True),
    ("bn", True),  # Flax's NNX examples: self.bn = nnx.BatchNorm(...).
    ("bn1", True),
    ("ln_f", True),  # GPT-2's names.
    ("ln_1", True),
    ("gn", True),
    ("Dense_0", False),
    ("linear", False),
    ("kiln", False),  # Letters "ln" inside a word are not the abbreviation.
    ("fc1", False),
  ],
)
def test_normalisation_modules_are_recognised_by_their_usual_names(module, norm):
  from snip_jax import masks

  path = (jax.tree_util.DictKey(module), jax.tree_util.DictKey("bias"))
  assert masks.in_norm_layer(path) == norm
  assert masks.kernels_and_biases(path, jnp.ones(4)) == (not norm)


def test_only_the_module_owning_a_leaf_makes_it_a_normalisation_parameter():
  """A block named for its normalisation (``PreNormBlock``) holds connections: its attention and
  MLP kernels are pruned, only its own LayerNorms' scales and offsets are not; a list of norms
  is recognised by the list's name."""
  import flax.linen as nn

  from snip_jax import masks

  class PreNormBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = x + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x))
      return x + nn.Dense(8)(nn.Dense(8)(nn.LayerNorm()(x)))

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(4)(PreNormBlock()(PreNormBlock()(x)))

  params = Model().init(jax.random.key(0), jnp.ones((1, 3, 8)))["params"]
  named = {masks.path_name(path): (path, leaf) for path, leaf in jax.tree.leaves_with_path(params)}
  prunable = {name for name, (path, leaf) in named.items() if masks.kernels(path, leaf)}
  assert {name for name in prunable if name.startswith("PreNormBlock_1/")} == {
    "PreNormBlock_1/MultiHeadDotProductAttention_0/query/kernel",
    "PreNormBlock_1/MultiHeadDotProductAttention_0/key/kernel",
    "PreNormBlock_1/MultiHeadDotProductAttention_0/value/kernel",
    "PreNormBlock_1/MultiHeadDotProductAttention_0/out/kernel",
    "PreNormBlock_1/Dense_0/kernel",
    "PreNormBlock_1/Dense_1/kernel",
  }
  with_biases = {n for n, (path, leaf) in named.items() if masks.kernels_and_biases(path, leaf)}
  assert "PreNormBlock_1/LayerNorm_0/bias" not in with_biases
  assert "PreNormBlock_1/Dense_0/bias" in with_biases
  norms = (jax.tree_util.GetAttrKey("norms"), jax.tree_util.SequenceKey(1))
  assert masks.in_norm_layer((*norms, jax.tree_util.DictKey("bias")))  # nnx.List of norms.


def test_kernels_and_biases_never_prunes_an_nnx_models_norm_offsets():
  from flax import nnx

  from snip_jax import layer_summary, masks

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(4, 8, rngs=rngs)
      self.bn = nnx.BatchNorm(8, rngs=rngs)
      self.ln_f = nnx.LayerNorm(8, rngs=rngs)

  params = nnx.state(Block(nnx.Rngs(0)), nnx.Param)
  names = [r["name"] for r in layer_summary(params, masks.kernels_and_biases)]
  assert names == ["linear/bias", "linear/kernel"]


def attention_block_params():
  """A small attention block's params: token and positional embeddings, q/k/v/out with rank-2
  biases, a LayerNorm, an int lookup table."""
  from flax import linen as nn

  class Block(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      pos_emb = self.param("pos_emb", nn.initializers.normal(0.02), (5, 8))
      h = nn.Embed(11, 8)(tokens) + pos_emb
      h = nn.LayerNorm()(h + nn.MultiHeadDotProductAttention(4)(h, h))
      return nn.Dense(3)(h)

  params = Block().init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))["params"]
  return {**params, "table": jnp.arange(6, dtype=jnp.int32).reshape(2, 3)}


def test_the_default_rule_prunes_weight_matrices_and_kernels_only():
  from snip_jax import connection_sensitivity, masks, top_k_mask

  params = attention_block_params()
  reasons = {
    masks.path_name(path): masks.exclusion(path, leaf)
    for path, leaf in jax.tree.leaves_with_path(params)
  }
  assert reasons == {
    "Dense_0/bias": "a bias",
    "Dense_0/kernel": None,
    "Embed_0/embedding": "an embedding (kernels_and_embeddings prunes it)",
    "LayerNorm_0/bias": "a bias",
    "LayerNorm_0/scale": "in a normalisation layer",
    "MultiHeadDotProductAttention_0/key/bias": "a bias",  # Rank 2: (heads, head_dim).
    "MultiHeadDotProductAttention_0/key/kernel": None,  # Rank 3: DenseGeneral.
    "MultiHeadDotProductAttention_0/out/bias": "a bias",
    "MultiHeadDotProductAttention_0/out/kernel": None,
    "MultiHeadDotProductAttention_0/query/bias": "a bias",
    "MultiHeadDotProductAttention_0/query/kernel": None,
    "MultiHeadDotProductAttention_0/value/bias": "a bias",
    "MultiHeadDotProductAttention_0/value/kernel": None,
    "pos_emb": "an embedding (kernels_and_embeddings prunes it)",
    "table": "not floating point (int32)",
  }
  kernel_sizes = 8 * 3 + 4 * (8 * 4 * 2)
  assert count_prunable(params) == kernel_sizes
  assert count_prunable(params, masks.kernels_and_embeddings) == kernel_sizes + 11 * 8 + 5 * 8

  # κ over exactly those candidates (SNIP's scores carry them); the int table untouched.
  def loss_fn(params, tokens):
    h = params["Embed_0"]["embedding"][tokens] + params["pos_emb"]
    kernel = params["MultiHeadDotProductAttention_0"]["query"]["kernel"]
    return jnp.sum(jnp.einsum("bld,dhk->blhk", h, kernel) ** 2) + jnp.sum(
      h @ params["Dense_0"]["kernel"]
    )

  scores = connection_sensitivity(loss_fn, params, jnp.arange(5)[None] % 11)
  assert scores["table"].dtype == jnp.int8 and not scores["table"].any()
  mask = top_k_mask(scores, sparsity=0.9)
  pruned = apply_mask(params, mask)
  assert sum(int(m.sum()) for m in jax.tree.leaves(mask)) == round(0.1 * kernel_sizes) + (
    sum(p.size for p in jax.tree.leaves(params)) - kernel_sizes
  )
  np.testing.assert_array_equal(pruned["table"], params["table"])
  np.testing.assert_array_equal(pruned["pos_emb"], params["pos_emb"])
  # Measured with its params, or on the pruned params, the mask has the sparsity asked for (a
  # bare mask cannot tell the int table's all-True mask from a kernel's).
  exact = 1 - round(0.1 * kernel_sizes) / kernel_sizes
  assert masks.sparsity(mask, params=params) == masks.sparsity(pruned) == pytest.approx(exact)
  assert masks.sparsity(mask) < exact


def test_nnx_state_paths_read_as_linen_ones(tmp_path):
  from flax import nnx

  from snip_jax import masks

  model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
  _, state = nnx.split(model, nnx.Param)
  names = [masks.path_name(path) for path, _ in jax.tree.leaves_with_path(state)]
  assert names == ["layers/0/bias", "layers/0/kernel", "layers/1/bias", "layers/1/kernel"]
  assert count_prunable(state) == 3 * 4 + 4 * 2
  # The same names in tables and mask files; a file saved from a Linen-style dict loads.
  mask = jax.tree.map(lambda p: jnp.abs(p) > 0.3, state)
  assert [r["name"] for r in layer_summary(mask)] == ["layers/0/kernel", "layers/1/kernel"]
  path = tmp_path / "mask.npz"
  save_mask(path, nnx.to_pure_dict(mask))
  with np.load(path) as stored:
    assert sorted(stored.files) == sorted(names)
  loaded = load_mask(path, state)
  assert jax.tree.structure(loaded) == jax.tree.structure(state)
  assert overlap(loaded, mask)["total"] == 1.0


def test_nnx_full_state_and_plain_dict_masks():
  """SNIP on an NNX model's whole state (its RNG key and counter included: never candidates,
  passed through untouched), and a plain-dict mask (nnx.to_pure_dict) for State params."""
  import optax
  from flax import nnx

  from snip_jax import connection_sensitivity, masked, top_k_mask

  model = dropout_mlp(6, 5, 3)
  graphdef, state = nnx.split(model)
  x, y = jnp.ones((4, 6)), jnp.arange(4) % 3

  def loss_fn(state, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, state)(x), y).mean()

  mask = top_k_mask(connection_sensitivity(loss_fn, state, x, y), sparsity=0.5)
  assert sorted(layer_sparsities(mask)) == [
    "sparsity/hidden/kernel",
    "sparsity/out/kernel",
    "sparsity/total",
  ]
  assert count_prunable(state) == 6 * 5 + 5 * 3 and sparsity(mask) == pytest.approx(0.5, abs=0.02)
  pruned = apply_mask(state, mask)
  # The RNG key and counter come back as they were.
  rng_before, rng_after = nnx.state(model, nnx.RngState), nnx.filter_state(pruned, nnx.RngState)
  for before, after in zip(jax.tree.leaves(rng_before), jax.tree.leaves(rng_after), strict=True):
    if jnp.issubdtype(before.dtype, jax.dtypes.prng_key):
      before, after = jax.random.key_data(before), jax.random.key_data(after)
    np.testing.assert_array_equal(after, before)
  _, params, _ = nnx.split(model, nnx.Param, ...)
  plain = nnx.to_pure_dict(params)
  plain_mask = jax.tree.map(lambda p: np.abs(np.asarray(p)) > 0.1, plain)
  masked_params = apply_mask(params, plain_mask)
  assert jax.tree.structure(masked_params) == jax.tree.structure(params)
  assert sparsity(masked_params) == pytest.approx(sparsity(plain_mask))
  tx = masked(optax.adam(1e-2), plain_mask)
  tx.init(masked_params)  # The plain mask fits the State params.
  with pytest.raises(ValueError, match=r"the mask has no leaf 'out/bias'"):
    apply_mask(params, {"hidden": plain_mask["hidden"]})


def test_the_set_scored_is_the_set_selected():
  """A leaf left out of the scoring is no candidate of the selection, without the filter_fn
  being given twice: its scores are integer zeros, which top_k_mask never selects over."""
  from snip_jax import connection_sensitivity, top_k_mask

  params = random_params(jax.random.key(0), sizes=((6, 5), (5, 4)))
  not_first = lambda path, leaf: leaf.ndim >= 2 and "Dense_0" not in str(path)  # noqa: E731

  def loss_fn(p, x):
    return jnp.sum(jnp.tanh(x @ p["Dense_0"]["kernel"]) @ p["Dense_1"]["kernel"])

  x = jax.random.normal(jax.random.key(1), (4, params["Dense_0"]["kernel"].shape[0]))
  scores = connection_sensitivity(loss_fn, params, x, filter_fn=not_first)
  assert scores["Dense_0"]["kernel"].dtype == jnp.int8
  mask = top_k_mask(scores, sparsity=0.5)  # The default filter_fn: Dense_0 stays out anyway.
  assert bool(mask["Dense_0"]["kernel"].all())
  size = params["Dense_1"]["kernel"].size
  assert int(mask["Dense_1"]["kernel"].sum()) == round(0.5 * size)


def test_the_table_says_what_is_not_pruned_and_why():
  from snip_jax import excluded_leaves, kernels_and_embeddings

  params = attention_block_params()
  excluded = {e["name"]: (e["size"], e["reason"]) for e in excluded_leaves(params)}
  assert excluded["MultiHeadDotProductAttention_0/query/bias"] == (8, "a bias")
  assert excluded["table"] == (6, "not floating point (int32)")
  assert excluded["pos_emb"] == (40, "an embedding (kernels_and_embeddings prunes it)")
  assert len(excluded) == 10  # Every leaf but the 4 attention kernels and the Dense kernel.
  with_embeddings = excluded_leaves(params, kernels_and_embeddings)
  assert "pos_emb" not in {e["name"] for e in with_embeddings}
  table = format_layer_summary(layer_summary(params), excluded_leaves(params))
  notes = [line for line in table.splitlines() if line.startswith("not pruned")]
  assert notes[0].startswith("not pruned (a bias): Dense_0/bias, LayerNorm_0/bias, ")
  assert "not pruned (not floating point (int32)): table" in notes
