"""The README's library example runs as written, and its reliability figures are the tests'."""

import re
from pathlib import Path

import numpy as np

import snip_jax

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_prunes(capsys):
  text = README.read_text()
  section = text.split("## Use it in your own loop", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
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


def test_readme_multi_device_example_continues_the_loop():
  import jax

  text = README.read_text()
  loop = re.search(r"```python\n(.*?)```", text.split("## Use it in your own loop", 1)[1], re.S)
  devices = text.split("## Multiple devices and TPUs", 1)[1].split("\n## ", 1)[0]
  sharded = re.search(r"```python\n(.*?)```", devices, re.S)
  namespace = {}
  exec(compile(loop.group(1), str(README), "exec"), namespace)
  before = namespace["params"]
  exec(compile(sharded.group(1), str(README), "exec"), namespace)
  params = namespace["params"]
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))
  assert snip_jax.sparsity(params) == snip_jax.sparsity(namespace["mask"])  # Still exactly zero.
  moved = [
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params), strict=True)
  ]
  assert any(moved)  # The step trained.


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
    len(reliability.BAD_INPUTS) + len(reliability.CLI_BAD_INPUTS),
  ]
