"""The benchmark suite: speed and memory ratios measured side by side -> BENCHMARKS.md.

  bash scripts/bench.sh                    # set-up (PyTorch for the comparison), all sections
  python -m benchmarks.run                 # the same, in a prepared environment (~15 min)
  python -m benchmarks.run --quick         # plumbing only (CI): tiny settings, scratch output
  python -m benchmarks.run --sections=selection,memory
  python -m benchmarks.run --render_only   # BENCHMARKS.md from the committed JSON
  python -m benchmarks.run --profile=gpu   # the GPU sizes (benchmarks/gpu_check.sh runs it)

Run it from the repository root, as a module of the ``benchmarks`` package (its sections import
``benchmarks.common``).

Results belong to the kind of machine that measured them: each section writes
``benchmarks/results/<machine id>/<section>.json`` (the id is :func:`common.machine_id`, e.g.
``cpu-amd-epyc-2-cores``), and BENCHMARKS.md is then rendered from every machine's folder under
``benchmarks/results`` (never edited by hand), each machine's numbers apart. ``--quick`` writes
to a temporary directory unless ``--out`` is given, so it never touches the committed results.

Profiles (:data:`common.PROFILES`): ``full``, the CPU suite (the default on a CPU); ``quick``,
every section at tiny settings; ``gpu``, the sections of :data:`GPU_SECTIONS` at sizes that fit
a ~10 minute check on one GPU (the default where JAX runs on an accelerator).
"""

from __future__ import annotations

import datetime
import importlib
import json
import tempfile
import time
import traceback
from pathlib import Path

from absl import app, flags

from benchmarks import common, report
from benchmarks.sections import GPU_SECTIONS, SECTIONS
from snip_jax import provenance

ROOT = Path(__file__).resolve().parents[1]
#: The committed results: one folder per machine id.
RESULTS = ROOT / "benchmarks" / "results"

#: The sections each profile runs when ``--sections`` is not given.
DEFAULT_SECTIONS = {
  "full": ("train_step", "pruning", "selection", "pipeline", "memory", "conv"),
  "quick": tuple(SECTIONS),
  "gpu": GPU_SECTIONS,
}

_QUICK = flags.DEFINE_bool("quick", False, "Tiny settings: checks the plumbing, not the speed.")
_PROFILE = flags.DEFINE_enum(
  "profile",
  None,
  list(common.PROFILES),
  "Sizes: full (the CPU suite), quick (= --quick) or gpu (default: gpu where JAX runs on an "
  "accelerator, else full).",
)
_OUT = flags.DEFINE_string(
  "out",
  None,
  "This machine's results folder (default: benchmarks/results/<machine id>, or a temporary "
  "<dir>/<machine id> with --quick).",
)
_RESULTS = flags.DEFINE_string(
  "results",
  None,
  "The folder of machine folders the report is rendered from (default: the folder above --out).",
)
_MARKDOWN = flags.DEFINE_string(
  "markdown",
  None,
  "Where to write the report (default: BENCHMARKS.md for benchmarks/results, else "
  "RESULTS/BENCHMARKS.md).",
)
_SECTIONS = flags.DEFINE_list(
  "sections", None, f"Sections to run, of {list(SECTIONS)} (default: the profile's)."
)
_RENDER_ONLY = flags.DEFINE_bool(
  "render_only", False, "Only render the report from the JSON under RESULTS."
)
_KEEP_GOING = flags.DEFINE_bool(
  "keep_going", False, "Run the other sections when one fails (then exit non-zero at the end)."
)


def run_section(name: str, profile: str, out: Path) -> dict:
  """Runs section ``name`` at the sizes of ``profile`` and writes ``out/<name>.json``."""
  module = importlib.import_module(f"benchmarks.{SECTIONS[name]}")
  start = time.perf_counter()
  # The CPU-only sections take run(quick); those of GPU_SECTIONS run(quick, gpu).
  result = module.run(False, gpu=True) if profile == "gpu" else module.run(profile == "quick")
  flag = {"full": "", "quick": " --quick", "gpu": " --profile=gpu"}[profile]
  result.update(
    section=name,
    quick=profile == "quick",
    profile=profile,
    seconds=round(time.perf_counter() - start, 1),
    date=datetime.datetime.now(datetime.UTC).date().isoformat(),
    machine=common.machine(),
    code=provenance.code_version(),
    command=f"python -m benchmarks.run{flag} --sections={name}",
  )
  (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
  return result


def machine_folders(results: Path) -> list[Path]:
  """The folders under ``results`` that hold a section's JSON or a core tests' summary."""
  names = [*SECTIONS, report.CORE_TESTS]
  return sorted(
    p for p in results.iterdir() if p.is_dir() and any((p / f"{n}.json").exists() for n in names)
  )


def load_results(results: Path) -> tuple[list[dict], list[dict]]:
  """``(section results, core test summaries)`` of every machine folder under ``results``.

  Raises:
    ValueError: a folder holds the results of two kinds of machine, or two folders hold those
      of one (numbers of one machine must never be read as another's).
  """
  sections, core_tests, seen = [], [], {}
  for folder in machine_folders(results):
    paths = [folder / f"{n}.json" for n in SECTIONS]
    found = [json.loads(path.read_text()) for path in paths if path.exists()]
    tests = folder / f"{report.CORE_TESTS}.json"
    summary = [json.loads(tests.read_text())] if tests.exists() else []
    ids = {report.machine_of(r) for r in found + summary}
    if len(ids) > 1:
      raise ValueError(
        f"{folder} holds results of {sorted(ids)}: move each file into the folder named after "
        "its machine id (benchmarks/results/<machine id>/), one kind of machine per folder."
      )
    (machine,) = ids
    if machine in seen:
      raise ValueError(
        f"{seen[machine]} and {folder} both hold results of {machine}: keep one folder per "
        "machine id."
      )
    seen[machine] = folder
    sections += found
    core_tests += summary
  return sections, core_tests


def _profile() -> str:
  if _QUICK.value:
    if _PROFILE.value not in (None, "quick"):
      raise app.UsageError(f"--quick contradicts --profile={_PROFILE.value}.")
    return "quick"
  if _PROFILE.value:
    return _PROFILE.value
  import jax

  return "full" if jax.default_backend() == "cpu" else "gpu"


def main(argv: list[str]) -> None:
  del argv
  profile = _profile()
  sections = _SECTIONS.value or list(DEFAULT_SECTIONS[profile])
  unknown = sorted(set(sections) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"Unknown sections {unknown}; choose from {list(SECTIONS)}.")
  if profile == "gpu" and set(sections) - set(GPU_SECTIONS):
    raise app.UsageError(
      f"Sections {sorted(set(sections) - set(GPU_SECTIONS))} have no GPU sizes; with "
      f"--profile=gpu choose from {list(GPU_SECTIONS)}."
    )
  failed = []
  if _RENDER_ONLY.value:
    results = Path(_RESULTS.value or (Path(_OUT.value).parent if _OUT.value else RESULTS))
  else:
    if _OUT.value:
      out = Path(_OUT.value)
    elif profile == "quick":
      out = Path(tempfile.mkdtemp(prefix="snip_jax_bench_")) / common.machine()["id"]
    else:
      out = RESULTS / common.machine()["id"]
    results = Path(_RESULTS.value) if _RESULTS.value else out.parent
    provenance.code_version()  # The code measured: decided before any result is written.
    out.mkdir(parents=True, exist_ok=True)
    for name in sections:
      print(f"benchmark {name} ({profile}) ...", flush=True)
      try:
        result = run_section(name, profile, out)
      except Exception:
        if not _KEEP_GOING.value:
          raise
        traceback.print_exc()
        failed.append(name)
        continue
      print(report.section_markdown(result), flush=True)
  if _MARKDOWN.value:
    markdown = Path(_MARKDOWN.value)
  elif results.resolve() == RESULTS.resolve():
    markdown = ROOT / "BENCHMARKS.md"
  else:
    markdown = results / "BENCHMARKS.md"
  found, core_tests = load_results(results)
  markdown.write_text(report.render(found, core_tests))
  print(f"wrote {markdown} from {len(found)} sections in {results}/*/")
  if failed:
    raise SystemExit(f"benchmark sections failed: {', '.join(failed)} (tracebacks above).")


if __name__ == "__main__":
  app.run(main)
