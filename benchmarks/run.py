"""The benchmark suite: speed and memory ratios measured side by side -> BENCHMARKS.md.

  bash scripts/bench.sh                    # set-up (PyTorch for the comparison), all sections
  python -m benchmarks.run                 # the same, in a prepared environment (~15 min)
  python -m benchmarks.run --quick         # plumbing only (CI): tiny settings, scratch output
  python -m benchmarks.run --sections=selection,memory
  python -m benchmarks.run --render_only   # BENCHMARKS.md from the committed JSON

Run it from the repository root, as a module of the ``benchmarks`` package (its sections import
``benchmarks.common``).

Each section writes ``benchmarks/results/<section>.json``; BENCHMARKS.md is then rendered
from every section's JSON (never edited by hand). ``--quick`` writes to a temporary directory
unless ``--out`` is given, so it never touches the committed results.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import time
from pathlib import Path

from absl import app, flags

from benchmarks import common, report

ROOT = Path(__file__).resolve().parents[1]

#: Section name -> module, in BENCHMARKS.md's order.
SECTIONS = {
  "train_step": "bench_step",
  "pruning": "bench_pruning",
  "selection": "bench_selection",
  "pipeline": "bench_pipeline",
  "memory": "bench_memory",
  "conv": "bench_conv",
}

_QUICK = flags.DEFINE_bool("quick", False, "Tiny settings: checks the plumbing, not the speed.")
_OUT = flags.DEFINE_string(
  "out", None, "Results directory (default: benchmarks/results, or a temporary one with --quick)."
)
_MARKDOWN = flags.DEFINE_string(
  "markdown", None, "Where to write the report (default: BENCHMARKS.md, or OUT/BENCHMARKS.md)."
)
_SECTIONS = flags.DEFINE_list("sections", list(SECTIONS), f"Sections to run, of {list(SECTIONS)}.")
_RENDER_ONLY = flags.DEFINE_bool("render_only", False, "Only render the report from OUT's JSON.")


def run_section(name: str, quick: bool, out: Path) -> dict:
  """Runs section ``name`` and writes ``out/<name>.json``."""
  module = importlib.import_module(f"benchmarks.{SECTIONS[name]}")
  start = time.perf_counter()
  result = module.run(quick)
  result.update(
    section=name,
    quick=quick,
    seconds=round(time.perf_counter() - start, 1),
    machine=common.machine(),
    command="python -m benchmarks.run" + (" --quick" if quick else "") + f" --sections={name}",
  )
  (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
  return result


def main(argv: list[str]) -> None:
  del argv
  unknown = sorted(set(_SECTIONS.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"Unknown sections {unknown}; choose from {list(SECTIONS)}.")
  if _OUT.value:
    out = Path(_OUT.value)
  elif _QUICK.value:
    out = Path(tempfile.mkdtemp(prefix="snip_jax_bench_"))
  else:
    out = ROOT / "benchmarks" / "results"
  out.mkdir(parents=True, exist_ok=True)
  if not _RENDER_ONLY.value:
    for name in _SECTIONS.value:
      print(f"benchmark {name} ...", flush=True)
      result = run_section(name, _QUICK.value, out)
      print(report.section_markdown(result), flush=True)
  markdown = (
    Path(_MARKDOWN.value)
    if _MARKDOWN.value
    else (out / "BENCHMARKS.md" if _QUICK.value or _OUT.value else ROOT / "BENCHMARKS.md")
  )
  results = [
    json.loads((out / f"{name}.json").read_text())
    for name in SECTIONS
    if (out / f"{name}.json").exists()
  ]
  markdown.write_text(report.render(results))
  print(f"wrote {markdown} from {len(results)} sections in {out}")


if __name__ == "__main__":
  app.run(main)
