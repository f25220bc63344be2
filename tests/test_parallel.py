"""Data parallelism: the pieces on one device, 8 devices in a subprocess, and two processes."""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from helpers import ROOT, assert_same_outcome, outcome, run_cli, tiny_config, xla_flags

from snip_jax import data, parallel, train

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").


def test_process_ranges_cover_every_example_once():
  for n, count in [(10, 1), (10, 3), (54_000, 8), (7, 7)]:
    ranges = [parallel.process_range(n, i, count) for i in range(count)]
    assert [i for r in ranges for i in r] == list(range(n))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
  with pytest.raises(ValueError, match=r"Process index 2 is not in \[0, 2\)"):
    parallel.process_range(10, 2, 2)


def test_eval_batches_pad_to_the_number_of_batches_asked_for():
  split = data.Split(np.arange(5, dtype=np.float32)[:, None], np.arange(5, dtype=np.int32))
  batches = list(data.eval_batches(split, 2, num_batches=4))
  weights = np.concatenate([w for _, _, w in batches])
  assert len(batches) == 4 and weights.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
  assert np.concatenate([y for _, y, _ in batches])[:5].tolist() == list(range(5))
  with pytest.raises(ValueError, match="2 batches of 2 cannot hold 5 examples"):
    list(data.eval_batches(split, 2, num_batches=2))


def test_one_device_mesh_and_its_checks():
  mesh = parallel.make_mesh()
  assert mesh.devices.size == jax.device_count() == 1
  parallel.check_divisible(7, mesh)
  with pytest.raises(ValueError, match=r"this run has 1 device\(s\); ask for 1 to 1"):
    parallel.make_mesh(2)
  with pytest.raises(ValueError, match="num_devices must be a positive integer"):
    train.validate_config(tiny_config("unused", num_devices=0))
  with pytest.raises(ValueError, match="distributed must be True or False"):
    train.validate_config(
      ml_collections.ConfigDict({**tiny_config("unused").to_dict(), "distributed": "yes"})
    )
  replicated = parallel.replicate({"w": np.ones(3, np.float32), "step": 0}, mesh)
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(replicated))


def test_distributed_without_a_cluster_says_how_to_name_one(tmp_path):
  result = run_cli("--config.distributed=True", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 1
  assert "error: jax.distributed.initialize() failed" in result.stderr
  assert "give --coordinator_address, --num_processes and --process_id" in result.stderr
  assert not (tmp_path / "run").exists()
  result = run_cli("--coordinator_address=localhost:1", f"--workdir={tmp_path / 'run'}")
  assert "need --config.distributed=True" in result.stderr and result.returncode == 1


def test_the_8_device_suite():
  """tests/eight_devices.py on 8 fake CPU devices: same masks and steps as on 1 device."""
  result = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/eight_devices.py"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=600,
    env={**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=8")},
  )
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
  # Every test passed: none skipped (the summary would say so).
  assert re.match(r"\d+ passed in ", result.stdout.splitlines()[-1]), result.stdout[-500:]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_two_processes(
  workdir, data_dir, *flags: str, sigterm_at: int | None = None
) -> list[subprocess.CompletedProcess]:
  """The CLI in two processes of two CPU devices each, as on two hosts of a pod slice.

  ``sigterm_at``: process 1 gets SIGTERM when it asks for its training batch of that number
  (``tests/interrupt_run.py``), as one host of a preempted slice would.
  """
  port = _free_port()
  env = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=2"),
    "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",  # Cross-process collectives on CPUs.
  }
  cfg = tiny_config(data_dir)
  overrides = [
    f"--config.{field}={cfg[field]}"
    for field in ("dataset", "data_dir", "num_epochs", "batch_size", "score_batch_size")
  ]
  overrides += [f"--config.eval_batch_size={cfg.eval_batch_size}", "--config.sparsity=0.9"]
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        *(
          [str(ROOT / "tests" / "interrupt_run.py"), f"sigterm:{sigterm_at}"]
          if i == 1 and sigterm_at is not None
          else [str(ROOT / "experiments" / "train.py")]
        ),
        *overrides,
        "--config.distributed=True",
        f"--coordinator_address=localhost:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        f"--workdir={workdir}",
        *flags,
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
    )
    for i in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=300) for p in processes]
  finally:
    for p in processes:
      p.kill()
  return [
    subprocess.CompletedProcess(p.args, p.returncode, out, err)
    for p, (out, err) in zip(processes, outputs, strict=True)
  ]


def test_two_processes_train_stop_together_on_sigterm_and_resume_bit_for_bit(tiny_mnist, tmp_path):
  # 4 scoring batches on 4 devices: spread, each process scoring 2 whole batches of its own
  # examples (a training step splits its batch over the processes, as split scoring would).
  spread = "--config.score_batches=4"
  whole = _run_two_processes(tmp_path / "whole", tiny_mnist, spread)
  for result in whole:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  # Process 0 reports and writes the results; process 1 only computes.
  assert "Data-parallel over 4 device(s)." in whole[0].stdout
  assert "epoch   2" in whole[0].stdout and "epoch" not in whole[1].stdout
  summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
  assert (summary["processes"], summary["devices"]) == (2, 4)
  # 180 training examples, 90 per process, batches of 20 (10 per process): 9 steps an epoch.
  assert summary["steps"] == 18 and summary["num_kept"] == round(0.1 * summary["num_prunable"])
  assert summary["score_examples"] == 80
  assert len((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()) == 2

  # SIGTERM to process 1 only, at its 5th batch: JAX's preemption service tells process 0, both
  # stop at the same step after saving its checkpoint, and exit with 143.
  stopped = _run_two_processes(tmp_path / "run", tiny_mnist, spread, sigterm_at=5)
  assert [r.returncode for r in stopped] == [143, 143], stopped[1].stderr[-3000:]
  steps = {int(re.search(r"SIGTERM at step (\d+)", r.stderr).group(1)) for r in stopped}
  (step,) = steps
  assert 5 <= step < 18
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["0", str(step)]

  # The same command again resumes there and ends as the uninterrupted run, bit for bit (so the
  # two runs also pruned alike: deterministic).
  resumed = _run_two_processes(tmp_path / "run", tiny_mnist, spread)
  assert all(r.returncode == 0 for r in resumed), resumed[0].stderr[-3000:]
  assert f"Resuming from {tmp_path / 'run' / 'checkpoints'}/{step}." in resumed[0].stdout
  # Final state, mask.npz, epoch records and summary, timings aside.
  assert_same_outcome(outcome(tmp_path / "run"), outcome(tmp_path / "whole"))
