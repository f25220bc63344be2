"""Renders BENCHMARKS.md from the sections' JSON results (``python -m benchmarks.run`` calls it).

The results of each kind of machine (``benchmarks/results/<machine id>/``) are shown apart: a
table of the machines, one of the goals with a column per machine, then each machine's sections
in full under its own heading. Nothing measured on one machine is ever shown as another's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import common, gpu_check

DASH = "\u2013"  # An en dash, for ranges.
#: The file stem of a machine's core test summary (``benchmarks/gpu_check.sh`` writes it).
CORE_TESTS = "core_tests"


def _seconds(value: float) -> str:
  if value >= 1.0:
    return f"{value:.2f} s"
  if value >= 1e-3:
    return f"{value * 1e3:.3g} ms"
  return f"{value * 1e6:.3g} µs"


def _spread(stat: Mapping[str, float], fmt) -> str:
  return f"{fmt(stat['median'])} ({fmt(stat['min'])}{DASH}{fmt(stat['max'])})"


def _ratio(value: float) -> str:
  return f"{value:.3g}"


def _bytes(value: float) -> str:
  return f"{value / 2**20:,.0f} MiB"


def _size(value: float) -> str:
  """Bytes in KiB below 10 MiB, else in MiB."""
  return f"{value / 2**10:,.0f} KiB" if value < 10 * 2**20 else _bytes(value)


def _details(row: Mapping[str, Any]) -> str:
  parts = []
  for name, stat in row.get("seconds", {}).items():
    parts.append(f"{name}: {_spread(stat, _seconds)}")
  for name, stat in row.get("peak_rss_bytes", {}).items():
    parts.append(f"{name}: {_spread(stat, _bytes)}")
  for name, value in row.get("compile_seconds", {}).items():
    parts.append(f"compile {name}: {_seconds(value)}")
  if "same_mask_as_lax_top_k" in row:
    parts.append("same mask as lax.top_k" if row["same_mask_as_lax_top_k"] else "**mask differs**")
  if "pytorch_device" in row:
    parts.append(f"PyTorch on {row['pytorch_device']}")
  if "param_bytes" in row:
    parts.append("params: " + ", ".join(f"{k} {_size(v)}" for k, v in row["param_bytes"].items()))
  if "max_abs_logit_diff" in row:
    parts.append(f"logits differ by at most {row['max_abs_logit_diff']:.2g}")
  return "<br>".join(parts)


def _met(row: Mapping[str, Any]) -> str:
  if "skipped" in row:
    return f"not run: {row['skipped']}"
  if row["met"] is None:
    return "(no goal)"
  return "met" if row["met"] else "**not met**"


def _goal(row: Mapping[str, Any]) -> str:
  if row.get("goal") is None:
    return ""
  return f"{row['goal_op'].replace('<=', '≤').replace('>=', '≥')} {row['goal']:g}"


def _measured(row: Mapping[str, Any]) -> str:
  """The ratio column: the ratio's median (min-max), or a measurement's value."""
  if "skipped" in row:
    return ""
  if "value" in row:
    return row["value"]
  return _spread(row["ratio"], _ratio)


def _description(text: str) -> str:
  """A section module's docstring as Markdown: ``code`` and :func:`name` become `code`."""
  text = re.sub(r":\w+:`([^`]+)`", r"``\1``", text)
  return text.replace("``", "`").strip()


def section_markdown(
  result: Mapping[str, Any],
  number: int | None = None,
  *,
  level: int = 2,
  machine: str | None = None,
) -> str:
  """One section: its description, then a table of its rows.

  Args:
    result: the section's JSON.
    number: its number in the report (none on the console).
    level: the heading's level (``##`` by default).
    machine: a machine id to name in the heading.
  """
  title = result["title"] if number is None else f"{number}. {result['title']}"
  if machine:
    title += f" ({machine})"
  lines = [
    f"{'#' * level} {title}",
    "",
    _description(result["description"]),
    "",
    f"| measurement | ratio: median (min{DASH}max) | goal | | times: median (min{DASH}max) |",
    "|---|---|---|---|---|",
  ]
  for row in result["rows"]:
    lines.append(
      f"| {row['name']} | {_measured(row)} | {_goal(row)} | {_met(row)} | {_details(row)} |"
    )
  lines += ["", f"`{result['command']}` ({result['seconds']:.0f} s)."]
  return "\n".join(lines)


def machine_of(result: Mapping[str, Any]) -> str:
  """The id of the machine that measured ``result`` (a section's JSON or a core test summary);
  results written before the id was recorded get it from their machine record."""
  return result["machine"].get("id") or common.machine_id(result["machine"])


def _machine(machine: Mapping[str, Any]) -> str:
  versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
  device = ""
  if machine["backend"] != "cpu":
    device = f" ({len(machine['devices'])} x {machine.get('device_kind') or machine['devices'][0]})"
  return (
    f"{machine['cpu']}, {machine['cores']} cores, {machine['system']}, Python "
    f"{machine['python']}; JAX backend `{machine['backend']}`{device}; {versions}."
  )


def _versions(machine: Mapping[str, Any]) -> str:
  versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
  return f"Python {machine['python']}, {versions}"


def _goal_rows(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  return [row for result in results for row in result["rows"] if row.get("goal") is not None]


def _goals_met(results: Sequence[Mapping[str, Any]]) -> str:
  rows = _goal_rows(results)
  return f"{sum(1 for row in rows if row['met'])} of {len(rows)}"


def _dates(results: Sequence[Mapping[str, Any]]) -> str:
  dates = sorted({result["date"] for result in results if result.get("date")})
  if not dates:
    return ""
  return dates[0] if len(dates) == 1 else f"{dates[0]} {DASH} {dates[-1]}"


def _code(results: Sequence[Mapping[str, Any]]) -> str:
  """The snip-jax commits measured (results written before they were recorded: none)."""
  codes = sorted({result.get("code") or "not recorded" for result in results})
  return ", ".join(f"`{code}`" if code != "not recorded" else code for code in codes)


def _tests(summary: Mapping[str, Any] | None) -> str:
  if summary is None:
    return ""
  text = f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped"
  if summary.get("errors"):
    text += f", {summary['errors']} errors"
  if summary.get("stopped_at_time_limit"):
    text += f" (stopped at its {summary['time_limit_s']:g} s limit)"
  return text


def _device(machine: Mapping[str, Any]) -> str:
  if machine["backend"] == "cpu":
    return machine["cpu"]
  return f"{machine.get('device_kind') or machine['devices'][0]} (host: {machine['cpu']})"


def _machines_table(groups, core_tests) -> list[str]:
  lines = [
    "## Machines",
    "",
    "| machine | CPU or device | cores | backend | versions | snip-jax | date | goals met "
    "| core tests |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for machine, results in groups.items():
    record = (results or [core_tests[machine]])[0]["machine"]
    versions = " / ".join(sorted({_versions(r["machine"]) for r in results})) or _versions(record)
    goals = _goals_met(results) if results else ""
    if any(result["quick"] for result in results):
      goals += " (quick: plumbing only)"
    lines.append(
      f"| {machine} | {_device(record)} | {record['cores']} | {record['backend']} | {versions} "
      f"| {_code(results or [core_tests[machine]])} | {_dates(results)} | {goals} "
      f"| {_tests(core_tests.get(machine))} |"
    )
  return lines


def _goals_table(groups) -> list[str]:
  """One row per goal (its row name), one column per machine: the median and the verdict."""
  names: dict[str, Mapping[str, Any]] = {}
  cells: dict[tuple[str, str], str] = {}
  for machine, results in groups.items():
    for row in _goal_rows(results):
      names.setdefault(row["name"], row)
      verdict = _met(row) if "skipped" in row else f"{_ratio(row['ratio']['median'])} {_met(row)}"
      cells.setdefault((row["name"], machine), verdict)
  lines = [
    "## Goals on each machine",
    "",
    "Each cell is the median ratio on that machine and its verdict; a blank cell: that machine "
    "did not measure it. A verdict holds only for the machine in its column.",
    "",
    "| measurement | goal | " + " | ".join(groups) + " |",
    "|---|---|" + "---|" * len(groups),
  ]
  for name, row in names.items():
    machines = " | ".join(cells.get((name, machine), "") for machine in groups)
    lines.append(f"| {name} | {_goal(row)} | {machines} |")
  return lines


def _gpu_part(groups) -> list[str]:
  """How the GPU results are made, and whether any exist."""
  accelerators = [m for m, results in groups.items() if not m.startswith("cpu-")]
  lines = ["## GPU", ""]
  if accelerators:
    lines.append(
      f"Results of {', '.join(accelerators)}: made by `bash benchmarks/gpu_check.sh` (the core "
      "tests, the sections with GPU sizes, a short VGG-D training on mock CIFAR-10); they hold "
      "for that device only."
    )
  else:
    lines.append(
      "**No GPU result exists yet**: every number in this file was measured on a CPU, and none "
      "of them says anything about a GPU."
    )
  fetch = "\n".join(f"   {command}" for command in gpu_check.fetch_commands())
  lines += [
    "",
    "To measure on a GPU machine without a package registry (~10 minutes on one H200, compiles "
    "included):",
    "",
    "1. On a machine with internet, fetch the wheels the GPU image may lack (for its Python "
    f"{gpu_check.PYTHON_VERSION}, Linux x86-64; `promise`, which tensorflow-datasets needs, is a "
    "source archive on PyPI, so the first command builds its wheel):",
    "",
    "   ```",
    fetch,
    "   ```",
    "",
    "2. Copy the repository and `wheels/` to the GPU machine and run, from the repository root, "
    "`bash benchmarks/gpu_check.sh --wheels wheels --out gpu_results` (`--dry-run` rehearses it "
    "on a CPU at tiny sizes). It installs offline only what fails to import, runs the core "
    "tests and the GPU sections, and writes JSON under `gpu_results/<machine id>/`, with a "
    "preview in `gpu_results/BENCHMARKS.md`.",
    "3. Copy `gpu_results/<machine id>/` into `benchmarks/results/` and run "
    "`python -m benchmarks.run --render_only`.",
  ]
  return lines


def _machine_part(machine: str, results, summary) -> list[str]:
  """A machine's heading, what it is, its verdicts, then its sections in full."""
  records = sorted({_machine(r["machine"]) for r in results} or {_machine(summary["machine"])})
  lines = ["", f"## {machine}", "", "Measured on: " + " / ".join(records)]
  if any(result["quick"] for result in results):
    lines += ["", "**Quick mode: plumbing only; these numbers mean nothing.**"]
  if summary is not None:
    failures = ", ".join(summary["failures"])
    lines += [
      "",
      f"Core tests on {machine} (`{summary['command']}`): {_tests(summary)}"
      + (f"; failed: {failures}" if failures else "")
      + ".",
    ]
  if not results:
    return lines
  lines += [
    "",
    f"**{_goals_met(results)} goals met on {machine}.**",
    "",
    "| section | goals met |",
    "|---|---|",
  ]
  for number, result in enumerate(results, start=1):
    goals = [row for row in result["rows"] if row.get("goal") is not None]
    ok = sum(1 for row in goals if row["met"])
    verdict = f"{ok} of {len(goals)}" if goals else "(measurements, no goals)"
    lines.append(f"| {number}. {result['title']} | {verdict} |")
  for number, result in enumerate(results, start=1):
    lines += ["", section_markdown(result, number, level=3, machine=machine)]
  return lines


def render(
  results: Sequence[Mapping[str, Any]], core_tests: Sequence[Mapping[str, Any]] = ()
) -> str:
  """The whole of BENCHMARKS.md.

  Args:
    results: the sections' JSON of every machine, each machine's in section order.
    core_tests: the core test summaries of the machines that have one (``core_tests.json``).

  Returns:
    The Markdown: the header, the machines, the goals on each machine, the GPU part, then
    each machine's sections (machines in the order of their ids).
  """
  ids = sorted({machine_of(r) for r in results} | {machine_of(s) for s in core_tests})
  groups = {machine: [r for r in results if machine_of(r) == machine] for machine in ids}
  summaries = {machine_of(s): s for s in core_tests}
  lines = [
    "# Benchmarks",
    "",
    "<!-- Generated by python -m benchmarks.run from benchmarks/results/<machine id>/*.json: "
    "do not edit. -->",
    "",
    "Generated by `bash scripts/bench.sh` (`python -m benchmarks.run`) from the raw results in "
    "`benchmarks/results/<machine id>/<section>.json`, one folder per kind of machine.",
    "",
    "**A number or a verdict here holds only for the machine that measured it**, named in every "
    "heading and column: XLA emits different code for each CPU type and device, so results of "
    "different machines are shown side by side, never mixed, and one machine's are never read "
    "as another's.",
  ]
  if any(result["quick"] for result in results):
    lines += ["", "**Quick mode: plumbing only; these numbers mean nothing.**"]
  lines += [
    "",
    "Every goal is a ratio of two things timed side by side in one process: the two sides "
    "alternate round after round (a shared machine is noisy), each round gives one ratio, and "
    f"the tables show the median ratio with its min{DASH}max over the rounds; the verdict "
    f"compares the median with the goal. Times are per call: median (min{DASH}max).",
    "",
    *_machines_table(groups, summaries),
    "",
    *_goals_table(groups),
    "",
    *_gpu_part(groups),
  ]
  for machine, machine_results in groups.items():
    lines += _machine_part(machine, machine_results, summaries.get(machine))
  return "\n".join(lines) + "\n"
