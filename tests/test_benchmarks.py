"""The benchmark suite: its --quick plumbing end to end, its arithmetic, and the committed report.

No timing is asserted: speed goals live in BENCHMARKS.md, measured side by side, never here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common, report, run

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """``python -m benchmarks.run --quick`` once: every section at tiny settings, into a scratch
  dir."""
  out = tmp_path_factory.mktemp("bench")
  committed = (ROOT / "BENCHMARKS.md").read_bytes()
  result = subprocess.run(
    [sys.executable, "-m", "benchmarks.run", "--quick", f"--out={out}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # --quick never touches the committed report.
  assert (ROOT / "BENCHMARKS.md").read_bytes() == committed
  return out


def test_quick_run_writes_every_section(quick):
  assert sorted(p.stem for p in quick.glob("*.json")) == sorted(run.SECTIONS)
  for name in run.SECTIONS:
    result = json.loads((quick / f"{name}.json").read_text())
    assert result["section"] == name and result["quick"] is True
    assert result["rows"], name
    assert result["machine"]["cores"] == os.cpu_count()
    for row in result["rows"]:
      if "skipped" in row:
        continue
      ratio = row["ratio"]
      assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"], row
      assert row["met"] in (True, False, None)
      assert (row["goal"] is None) == (row["met"] is None)


def test_quick_run_compares_with_pytorch_when_installed(quick):
  rows = json.loads((quick / "train_step.json").read_text())["rows"]
  torch_rows = [row for row in rows if "PyTorch" in row["name"]]
  assert len(torch_rows) == 1  # LeNet-300-100 in --quick.
  try:
    import torch  # noqa: F401
  except ImportError:
    assert all(row["skipped"] == "PyTorch not installed" for row in torch_rows)
  else:
    assert all("skipped" not in row for row in torch_rows)


def test_quick_selection_is_exact(quick):
  for row in json.loads((quick / "selection.json").read_text())["rows"]:
    assert row["same_mask_as_lax_top_k"] is True


def test_quick_report_renders_every_section(quick):
  text = (quick / "BENCHMARKS.md").read_text()
  assert "Quick mode: plumbing only" in text
  for name in run.SECTIONS:
    title = json.loads((quick / f"{name}.json").read_text())["title"]
    assert f"## {list(run.SECTIONS).index(name) + 1}. {title}" in text
  assert "goals met.**" in text


def test_committed_report_is_rendered_from_committed_results(tmp_path):
  """BENCHMARKS.md is exactly what the committed JSON renders to: never edited by hand."""
  results = ROOT / "benchmarks" / "results"
  rendered = tmp_path / "BENCHMARKS.md"
  subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.run",
      "--render_only",
      f"--out={results}",
      f"--markdown={rendered}",
    ],
    check=True,
    capture_output=True,
    cwd=ROOT,
  )
  assert rendered.read_text() == (ROOT / "BENCHMARKS.md").read_text()
  for name in run.SECTIONS:
    assert json.loads((results / f"{name}.json").read_text())["quick"] is False


def test_time_interleaved_alternates_the_order():
  calls = []
  fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
  times = common.time_interleaved(fns, rounds=3, warmup=1)
  assert calls == list("abc") + list("abc") + list("cba") + list("abc")
  assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_stats_and_ratios():
  assert common.stats([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
  assert common.ratio_stats([2.0, 3.0, 8.0], [1.0, 3.0, 2.0]) == {
    "median": 2.0,
    "min": 1.0,
    "max": 4.0,
    "n": 3,
  }
  with pytest.raises(ValueError, match="empty"):
    common.stats([])
  with pytest.raises(ValueError, match="denominators"):
    common.ratio_stats([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
  ("median", "goal", "higher", "met"),
  [
    (1.02, 1.03, False, True),
    (1.04, 1.03, False, False),
    (6.0, 5.0, True, True),
    (4.0, 5.0, True, False),
  ],
)
def test_row_verdict_compares_the_median_with_the_goal(median, goal, higher, met):
  row = common.row(
    "x", {"median": median, "min": 0.5, "max": 9.0, "n": 3}, goal, higher_is_better=higher
  )
  assert row["met"] is met
  assert common.row("x", {"median": median, "min": 0.5, "max": 9.0, "n": 3}, None)["met"] is None


def test_report_shows_verdicts_goals_and_skips():
  ratio = {"median": 1.1, "min": 1.0, "max": 1.3, "n": 5}
  result = {
    "title": "T",
    "description": "Uses ``code`` and :func:`snip_jax.top_k_mask`.",
    "rows": [
      common.row("slow", ratio, 1.03, seconds={"a": {"median": 0.002, "min": 0.001, "max": 0.003}}),
      common.row("fast", ratio, 1.5),
      common.row("bigger", ratio, 5.0, higher_is_better=True),
      common.row("plain", ratio, None),
      {"name": "torch", "skipped": "PyTorch not installed"},
    ],
    "command": "python -m benchmarks.run --sections=t",
    "seconds": 12.0,
    "quick": False,
    "machine": common.machine(),
  }
  text = report.render([result])
  assert "**1 of 3 goals met.**" in text
  assert "| slow | 1.1 (1\u20131.3) | ≤ 1.03 | **not met** | a: 2 ms (1 ms\u20133 ms) |" in text
  assert "| fast | 1.1 (1\u20131.3) | ≤ 1.5 | met |" in text
  assert "| bigger | 1.1 (1\u20131.3) | ≥ 5 | **not met** |" in text
  assert "| plain | 1.1 (1\u20131.3) |  | (no goal) |" in text
  assert "| torch |  |  | not run: PyTorch not installed |" in text
  assert "Uses `code` and `snip_jax.top_k_mask`." in text and "Quick mode" not in text
