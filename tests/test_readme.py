"""The README's library example runs as written, and its reliability figures are the tests'."""

import re
from pathlib import Path

import numpy as np
import pytest

import snip_jax

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").

README = Path(__file__).resolve().parents[1] / "README.md"


def code_block(section: str) -> str:
  """The first ``python`` block of README's section ``section``."""
  text = README.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
  return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture(scope="module")
def after_loop() -> dict:
  """The names the "own loop" example leaves, for the examples that continue it."""
  namespace = {}
  exec(compile(code_block("Use it in your own loop"), str(README), "exec"), namespace)
  return namespace


def test_readme_example_runs_and_prunes(capsys):
  code = code_block("Use it in your own loop")
  assert len([line for line in code.splitlines() if line.strip()]) <= 15
  namespace = {}
  exec(compile(code, str(README), "exec"), namespace)

  params, mask, synflow = namespace["params"], namespace["mask"], namespace["synflow"]
  assert snip_jax.sparsity(mask) == snip_jax.sparsity(synflow) == np.float64(1 - 5_324 / 266_200)
  assert snip_jax.sparsity(params) == snip_jax.sparsity(mask)  # Still exactly zero after a step.
  iou = snip_jax.overlap(mask, synflow)["total"]
  assert 0 < iou < 1
  out = capsys.readouterr().out
  assert out.startswith(str(iou)) and "'sparsity/total': 0.98" in out


def test_readme_multi_device_example_continues_the_loop(after_loop):
  import jax

  namespace = dict(after_loop)
  before = namespace["params"]
  exec(compile(code_block("Multiple devices and TPUs"), str(README), "exec"), namespace)
  params = namespace["params"]
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))
  assert snip_jax.sparsity(params) == snip_jax.sparsity(namespace["mask"])  # Still exactly zero.
  moved = [
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params), strict=True)
  ]
  assert any(moved)  # The step trained.


def test_readme_export_example_continues_the_loop(after_loop, tmp_path, monkeypatch):
  import jax

  from snip_jax import export

  monkeypatch.chdir(tmp_path)
  namespace = dict(after_loop)
  exec(compile(code_block("Sparse export and inference"), str(README), "exec"), namespace)
  params, mask, model, x = (namespace[k] for k in ("params", "mask", "model", "x"))
  assert export.bit_equal(namespace["restored"], snip_jax.apply_mask(params, mask))
  kernel = namespace["exported"].params["Dense_0"]["kernel"]
  assert isinstance(kernel, jax.experimental.sparse.BCOO)
  dense = model.apply({"params": params}, x)
  np.testing.assert_allclose(namespace["logits"], dense, rtol=1e-5, atol=1e-5)
  assert (tmp_path / "lenet300.npz").stat().st_size < 0.05 * 266_610 * 4
  assert isinstance(export.model_from_config(export.load_dense("lenet300.npz").config), type(model))


def test_reliability_figures_are_those_of_the_test_suite():
  import test_properties as properties
  import test_reliability as reliability

  section = README.read_text().split("## Reliability", 1)[1].split("\n## ", 1)[0]
  figures = [int(f.replace(",", "")) for f in re.findall(r"\*\*([\d,]+)\*\*", section)]
  optimizer_cases = (
    len(properties.COMBINATIONS) * len(properties.OPTIMIZER_TREES) * properties.OPTIMIZER_EXAMPLES
  )
  assert figures == [
    len(reliability.SIGKILL_POINTS),
    optimizer_cases,
    properties.SELECTION_EXAMPLES,
    properties.NOTHING_KEPT_EXAMPLES,
    properties.N_M_EXAMPLES,
    len(reliability.BAD_INPUTS) + len(reliability.CLI_BAD_INPUTS),
    collected("attack")[0],
  ]


def test_the_fast_tier_figures_are_those_of_the_test_suite():
  found = re.search(r"the unit and property tests \((\d+) of (\d+);", README.read_text())
  assert found, "the Development table's fast tier line"
  assert (int(found.group(1)), int(found.group(2))) == collected("not slow")


def collected(marker_expression: str) -> tuple[int, int]:
  """``(selected, all)``: how many tests ``pytest -m marker_expression`` runs, of all the
  tests (parametrized cases counted one by one)."""
  import subprocess
  import sys

  command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist"]
  result = subprocess.run(
    [*command, "-m", marker_expression],
    cwd=README.parent,
    capture_output=True,
    text=True,
    timeout=600,
  )
  found = re.search(r"^(\d+)/(\d+) tests collected", result.stdout, re.M)
  assert found, result.stdout[-2000:] + result.stderr[-2000:]
  return int(found.group(1)), int(found.group(2))


def test_readme_nnx_example_prunes_and_trains(capsys):
  namespace = {}
  exec(compile(code_block("With Flax NNX"), str(README), "exec"), namespace)
  from flax import nnx

  params = nnx.state(namespace["model"], nnx.Param)
  assert snip_jax.count_prunable(params) == 784 * 300 + 300 * 10
  assert snip_jax.sparsity(params) == snip_jax.sparsity(namespace["mask"])  # Exact, after 3 steps.
  assert capsys.readouterr().out.startswith("0.98 {'sparsity/hidden/kernel'")


def test_readme_transformer_example_prunes_attention(capsys):
  namespace = {}
  exec(compile(code_block("A Transformer"), str(README), "exec"), namespace)
  params, mask = namespace["params"], namespace["mask"]
  assert snip_jax.count_prunable(params) == 69_312
  assert snip_jax.sparsity(params) == 1 - 6_931 / 69_312  # Exactly κ kept, after 3 steps.
  out = capsys.readouterr().out
  assert "MultiHeadDotProductAttention_0/query/kernel" in out
  assert "MultiHeadDotProductAttention_0/query/bias" in out.split("total")[1]  # Not pruned.
  assert bool(mask["pos_emb"].all())
  assert 0 <= snip_jax.overlap(mask, namespace["synflow"])["total"] < 1
  # As the README says: SNIP keeps more of the value and out kernels than of query and key.
  for block in ("MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention_1"):
    kept = {name: int(mask[block][name]["kernel"].sum()) for name in mask[block]}
    assert min(kept["value"], kept["out"]) > max(kept["query"], kept["key"]), kept


def test_readme_scoring_mode_example_scores_two_modes(capsys):
  namespace = {}
  exec(
    compile(code_block("BatchNorm and Dropout: the scoring mode"), str(README), "exec"), namespace
  )
  params, mask, train_mode = namespace["params"], namespace["mask"], namespace["train_mode"]
  prunable = snip_jax.count_prunable(params)
  assert prunable == 3 * 3 * 16 + 28 * 28 * 16 * 10
  for m in (mask, train_mode):
    assert snip_jax.sparsity(m) == 1 - round(0.1 * prunable) / prunable
  iou = snip_jax.overlap(mask, train_mode)["total"]
  assert 0.05 < iou < 0.9  # Well below 1, as the README says; above two random masks (0.053).
  assert capsys.readouterr().out.strip() == str(iou)


def test_readme_sanity_example_keeps_counts_groups_and_layer_sparsities(capsys):
  namespace = {}
  exec(compile(code_block("Sanity checks and structured masks"), str(README), "exec"), namespace)
  params, mask = namespace["params"], namespace["mask"]
  kept = snip_jax.layer_summary(mask)
  for name in ("shuffled", "layer_random"):
    assert snip_jax.layer_summary(namespace[name]) == kept
    assert snip_jax.overlap(namespace[name], mask)["total"] < 0.5
  assert capsys.readouterr().out.strip() == "True"
  inverted = namespace["inverted"]
  assert snip_jax.sparsity(inverted) == snip_jax.sparsity(mask) == 1 - 5_324 / 266_200
  assert snip_jax.overlap(inverted, mask)["total"] == 0  # The lowest 2% never meet the highest.
  two_four = namespace["two_four"]
  for layer in params:
    kernel = np.asarray(two_four[layer]["kernel"])
    np.testing.assert_array_equal(kernel.reshape(-1, 4, kernel.shape[-1]).sum(axis=1), 2)
  first_half = snip_jax.layer_sparsities(namespace["first_half"])
  assert first_half["sparsity/Dense_0/kernel"] == 0.5
  rest = [s for k, s in first_half.items() if k.startswith("sparsity/Dense_") and "_0/" not in k]
  assert rest and all(s > 0.5 for s in rest)


def test_readme_dynamic_example_continues_the_loop(after_loop):
  import jax

  namespace = dict(after_loop)
  before = namespace["opt_state"].mask
  exec(
    compile(code_block("Masks that change during training: GMP, SET, RigL"), str(README), "exec"),
    namespace,
  )
  params, rigl, gmp = namespace["params"], namespace["rigl"], namespace["gmp"]
  layers = [r["kept"] for r in snip_jax.layer_summary(before)]
  assert [r["kept"] for r in snip_jax.layer_summary(rigl)] == layers  # Each layer's count.
  assert snip_jax.overlap(rigl, before)["total"] < 1  # Some connections moved.
  for w, m, m_before in zip(*map(jax.tree.leaves, (params, rigl, before)), strict=True):
    w, m, m_before = np.asarray(w), np.asarray(m), np.asarray(m_before)
    assert np.all(w[~m] == 0)  # Dropped weights are exactly 0 ...
    assert np.all(w[m & ~m_before] == 0)  # ... and grown ones start there.
  assert namespace["opt_state"].mask is not before
  assert snip_jax.num_kept(266_200, namespace["target"]) == sum(
    r["kept"] for r in snip_jax.layer_summary(gmp)
  )
  assert not np.any(np.asarray(gmp["Dense_0"]["kernel"]) & ~np.asarray(rigl["Dense_0"]["kernel"]))


def test_readme_trained_example_prunes_after_training_and_rewinds():
  import jax

  namespace = {}
  exec(
    compile(
      code_block("Pruning a trained network: after training, lottery tickets"), str(README), "exec"
    ),
    namespace,
  )
  mask, ticket, again = namespace["mask"], namespace["ticket"], namespace["again"]
  trained, init = namespace["trained"], namespace["init"]
  kernel = np.asarray(trained["Dense_0"]["kernel"])
  kept = np.asarray(mask["Dense_0"]["kernel"])
  assert kept.sum() == round(0.1 * kernel.size)
  assert np.abs(kernel[kept]).min() >= np.abs(kernel[~kept]).max()
  np.testing.assert_array_equal(
    ticket["Dense_0"]["kernel"], np.where(kept, init["Dense_0"]["kernel"], 0)
  )
  inner = np.asarray(again["Dense_0"]["kernel"])
  assert inner.sum() == round(0.01 * kernel.size) and not np.any(inner & ~kept)
  assert bool(jax.tree.leaves(again)[0].all())  # The bias is not prunable.
