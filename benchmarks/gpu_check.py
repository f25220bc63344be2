"""The Python side of ``benchmarks/gpu_check.sh``: what it installs, and the core tests' summary.

  python -m benchmarks.gpu_check missing             # required distributions that fail to import
  python -m benchmarks.gpu_check missing_optional    # optional ones (PyTorch)
  python -m benchmarks.gpu_check fetch [DEST [DIST...]]  # the pip commands that fetch the wheels
  python -m benchmarks.gpu_check core_tests [--dry-run]  # the core test files
  python -m benchmarks.gpu_check sections [LIST]     # the benchmark sections with GPU sizes
  python -m benchmarks.gpu_check machine_id          # this machine's results folder name
  python -m benchmarks.gpu_check summarise JUNIT_XML JSON COMMAND TIME_LIMIT_S RETURN_CODE

The GPU image we borrow has Python 3.12, JAX (CUDA), Flax, Optax, Orbax, chex and PyTorch
(CUDA), and no package registry: what else ``snip_jax`` (with its ``[data]`` and
``[experiments]`` extras), the benchmarks and the core tests import is installed offline from
wheels fetched beforehand (:func:`fetch_commands`). This module imports only the standard
library at the top, so that it runs before anything is installed.
"""

from __future__ import annotations

import importlib
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.sections import GPU_SECTIONS

#: The GPU image's Python, which the wheels are fetched for.
PYTHON_VERSION = "3.12"
#: Distribution -> the module whose import shows it works: what the image may lack. pip
#: resolves their own dependencies (tensorflow-datasets' etils, dm-tree, promise, ...) from the
#: same wheels.
FETCHED = {
  "ml_collections": "ml_collections",
  "absl-py": "absl.flags",
  "tensorflow-datasets": "tensorflow_datasets",
  "array_record": "array_record.python.array_record_module",
  "pillow": "PIL.Image",
  "importlib_resources": "importlib_resources",
  "tqdm": "tqdm",
  "tensorboardX": "tensorboardX",
  "pytest": "pytest",
  "hypothesis": "hypothesis",
}
#: What the image brings: checked like the others, but not fetched (their CUDA builds must
#: match the machine's drivers).
IMAGE = {
  "jax": "jax",
  "flax": "flax.linen",
  "optax": "optax",
  "orbax-checkpoint": "orbax.checkpoint",
  "chex": "chex",
  "numpy": "numpy",
  "torch": "torch",
}
#: Not needed to run the check: without PyTorch the comparison rows say "not run".
OPTIONAL = ("torch",)
#: Dependencies PyPI has no wheel of: built into one (pure Python) before the download.
BUILT = ("promise",)
#: Linux x86-64 wheel tags the image's pip accepts.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
#: The core tests: the fast unit tests of the library's pure parts, file by file, cheapest
#: first (``-m "not slow"``); a dry run takes the first only.
CORE_TESTS = (
  "tests/test_masks.py",
  "tests/test_selection.py",
  "tests/test_sensitivity.py",
  "tests/test_optim.py",
  "tests/test_criteria.py",
  "tests/test_models.py",
)


def fetch_commands(dest: str = "wheels", extra: tuple[str, ...] = ()) -> list[str]:
  """The commands that fetch, on a machine with internet, the wheels of :data:`FETCHED` (and
  ``extra``) with their dependencies for the GPU image into ``dest``."""
  platforms = " ".join(f"--platform {p}" for p in PLATFORMS)
  abi = "cp" + PYTHON_VERSION.replace(".", "")
  return [
    f"pip wheel --no-deps --wheel-dir {dest} {' '.join(BUILT)}",
    f"pip download --only-binary=:all: --python-version {PYTHON_VERSION} --implementation cp "
    f"--abi {abi} {platforms} --find-links {dest} --dest {dest} " + " ".join([*FETCHED, *extra]),
  ]


def missing(distributions: dict[str, str]) -> list[str]:
  """The distributions whose module fails to import (missing, or installed but broken)."""
  failed = []
  for distribution, module in distributions.items():
    try:
      importlib.import_module(module)
    except Exception:  # An ImportError, or whatever a broken install raises.
      failed.append(distribution)
  return failed


def summarise(junit_xml: Path, command: str, time_limit_s: float, returncode: int) -> dict:
  """The core tests' JUnit XML (``pytest --junitxml``) as the summary BENCHMARKS.md shows.

  Args:
    junit_xml: pytest's report; missing when pytest died before writing it.
    command: the pytest command, for the record.
    time_limit_s: the limit it ran under.
    returncode: its exit status (124: stopped at the limit, by ``timeout``).

  Returns:
    ``{'passed', 'failed', 'errors', 'skipped', 'failures', 'seconds', ...}``: counts, the
    names of the failed and erroring tests, and the versions and device they ran with.
  """
  import jax

  from benchmarks import common
  from snip_jax import provenance

  counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
  failures, seconds = [], 0.0
  if junit_xml.exists():
    root = ET.parse(junit_xml).getroot()
    for case in root.iter("testcase"):
      if not case.get("name"):  # The test under way when the time limit interrupted pytest.
        continue
      name = f"{case.get('classname', '')}::{case.get('name')}"
      seconds += float(case.get("time") or 0.0)
      outcome = {child.tag for child in case} & {"failure", "error", "skipped"}
      if "failure" in outcome:
        counts["failed"] += 1
        failures.append(name)
      elif "error" in outcome:
        counts["errors"] += 1
        failures.append(name)
      elif "skipped" in outcome:
        counts["skipped"] += 1
      else:
        counts["passed"] += 1
  machine = common.machine()
  return {
    "title": "Core tests",
    **counts,
    "failures": failures,
    "seconds": round(seconds, 1),
    "returncode": returncode,
    "report_written": junit_xml.exists(),
    "stopped_at_time_limit": returncode == 124,
    "time_limit_s": time_limit_s,
    "command": command,
    "jax": jax.__version__,
    "flax": machine["versions"]["flax"],
    "device": f"{machine['device_kind']} ({machine['backend']})",
    "machine": machine,
    "code": provenance.code_version(),
  }


def gpu_sections(chosen: str = "") -> tuple[str, ...]:
  """The GPU sections (``benchmarks.sections.GPU_SECTIONS``), or the comma-separated ``chosen``
  of them in their order; an unknown or empty choice is refused naming the sections."""
  if not chosen:
    return GPU_SECTIONS
  names = [name.strip() for name in chosen.split(",") if name.strip()]
  unknown = [name for name in names if name not in GPU_SECTIONS]
  if unknown or not names:
    raise SystemExit(
      f"gpu_check: unknown section(s) {', '.join(unknown) or repr(chosen)}: choose among "
      f"{','.join(GPU_SECTIONS)}."
    )
  return tuple(name for name in GPU_SECTIONS if name in names)


def main(argv: list[str]) -> None:
  """The commands of the module docstring; each prints its answer as its last line."""
  command, *args = argv
  if command == "missing":  # Required: the check stops without them.
    print(" ".join(missing({d: m for d, m in {**IMAGE, **FETCHED}.items() if d not in OPTIONAL})))
  elif command == "missing_optional":
    print(" ".join(missing({d: m for d, m in {**IMAGE, **FETCHED}.items() if d in OPTIONAL})))
  elif command == "fetch":  # fetch [DEST [DISTRIBUTION...]]: one line, for an error message.
    extra = tuple(d for d in args[1:] if d not in FETCHED)
    print(" && ".join(fetch_commands(*args[:1], extra=extra)))
  elif command == "core_tests":  # core_tests [--dry-run]
    print(" ".join(CORE_TESTS[:1] if args == ["--dry-run"] else CORE_TESTS))
  elif command == "sections":  # sections [LIST]: the GPU sections, or LIST's once checked.
    print(",".join(gpu_sections(*args)))
  elif command == "machine_id":
    from benchmarks import common

    print(common.machine()["id"])
  elif command == "summarise":
    junit_xml, out, pytest_command, limit, returncode = args
    summary = summarise(Path(junit_xml), pytest_command, float(limit), int(returncode))
    Path(out).write_text(json.dumps(summary, indent=1) + "\n")
    print(
      f"core tests: {summary['passed']} passed, {summary['failed']} failed, "
      f"{summary['errors']} errors, {summary['skipped']} skipped -> {out}"
    )
  else:
    raise SystemExit(
      f"unknown command {command!r}: missing, missing_optional, fetch, core_tests, sections, "
      "machine_id or summarise."
    )


if __name__ == "__main__":
  main(sys.argv[1:])
