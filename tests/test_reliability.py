"""Reliability: checkpoints and bit-exact resume, determinism, and every bad input a clear error.

The resume tests use the tiny MNIST of the ``tiny_mnist`` fixture: 2 epochs of 9 steps,
checkpoints every 4 steps, step metrics every 3 (so their intervals straddle checkpoints and
epochs). The reference is one uninterrupted run; everything else must end bit-identical to it
(final state, mask, per-epoch and per-step metrics, TensorBoard's scalars, test metrics),
timings aside.
"""

import gc
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers import (
  assert_same_outcome,
  checkpoint_steps,
  config,
  outcome,
  read_state,
  refuse_network,
  run_script,
  tiny_config,
  write_idx,
  write_mnist_like,
)

from snip_jax import checkpoint, files, masks, optim, selection, train

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").

ROOT = Path(__file__).resolve().parents[1]
INTERRUPT = ROOT / "tests" / "interrupt_run.py"
EVERY = 4  # Checkpoint interval of these runs: 18 steps give checkpoints 0, 4, 8, 12, 16, 18.
LOG_EVERY = 3  # Step records at 3, 6, ... 18.
#: Where the resume test kills the CLI with SIGKILL (see interrupt_run.py), in this order: after
#: pruning (before any checkpoint), at the 7th batch (mid-epoch), in the middle of writing the
#: checkpoint of step 12. Then SIGTERM at the 3rd batch of the next resume.
SIGKILL_POINTS = ("prune", "batch:7", "save:12")
SIGTERM_POINT = "sigterm:3"


def resumable_config(data_dir, **overrides):
  return tiny_config(
    data_dir, **{"checkpoint_every_steps": EVERY, "log_every_steps": LOG_EVERY, **overrides}
  )


def cli_flags(workdir, data_dir) -> list[str]:
  """``train.py`` flags for exactly :func:`resumable_config`."""
  return [
    f"--workdir={workdir}",
    "--config.dataset=mnist",
    f"--config.data_dir={data_dir}",
    "--config.num_epochs=2",
    "--config.batch_size=20",
    "--config.score_batch_size=20",
    "--config.eval_batch_size=32",
    "--config.sparsity=0.9",
    f"--config.checkpoint_every_steps={EVERY}",
    f"--config.log_every_steps={LOG_EVERY}",
  ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_mnist) -> Path:
  """The workdir of one uninterrupted run."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  train.train_and_evaluate(resumable_config(tiny_mnist), str(workdir))
  return workdir


# --------------------------------------------------------------------------------------------
# Checkpoints and resume.


def test_checkpoints_hold_the_whole_state_every_n_steps_keeping_the_last_k(reference):
  assert checkpoint_steps(reference) == [12, 16, 18]  # keep=3 of 0, 4, ... 18.
  state = read_state(reference, 18)
  assert set(state) == {"step", "params", "opt_state", "batch_stats", "rng"}
  assert int(state["step"]) == 18
  mask = state["opt_state"]["mask"]
  saved = masks.load_mask(reference / "mask.npz", state["params"])
  for w, m, m_saved in zip(*map(jax.tree.leaves, (state["params"], mask, saved)), strict=True):
    np.testing.assert_array_equal(m, m_saved)
    assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)


def test_same_config_and_seed_give_identical_runs(tmp_path, tiny_mnist, reference):
  train.train_and_evaluate(resumable_config(tiny_mnist), str(tmp_path / "again"))
  assert_same_outcome(outcome(tmp_path / "again"), outcome(reference))


def test_sigkill_at_three_points_and_sigterm_then_resume_is_bit_identical(
  tmp_path, tiny_mnist, reference
):
  workdir = tmp_path / "run"
  flags = cli_flags(workdir, tiny_mnist)
  ckpt_dir = workdir / "checkpoints"

  def steps():
    return checkpoint_steps(workdir)

  # 1. Killed after pruning, before the first checkpoint: nothing to resume from yet.
  after_pruning, mid_epoch, mid_save = SIGKILL_POINTS
  killed = run_script(INTERRUPT, after_pruning, *flags)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert steps() == []
  # 2. Killed mid-epoch: the rerun prunes again, then dies asking for its 7th batch.
  killed = run_script(INTERRUPT, mid_epoch, *flags)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert steps() and max(steps()) <= 4
  # 3. Killed while the checkpoint of step 12 is being written: it stays a temporary
  # directory, and the complete ones before it are intact.
  killed = run_script(INTERRUPT, mid_save, *flags)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert "Resuming from" in killed.stdout
  assert (ckpt_dir / "12.orbax-checkpoint-tmp").is_dir() and 12 not in steps()
  resumed_from = max(steps())
  assert resumed_from <= 8
  # 4. SIGTERM at the 3rd batch of the next resume: a checkpoint of that step, a clean exit.
  stopped = run_script(INTERRUPT, SIGTERM_POINT, *flags)
  assert stopped.returncode == 143, stopped.stderr[-2000:]
  assert "SIGTERM at step" in stopped.stderr and "Traceback" not in stopped.stderr
  assert max(steps()) == resumed_from + 3
  # 5. The same command again finishes the run.
  finished = run_script(ROOT / "experiments" / "train.py", *flags)
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert max(steps()) == 18
  assert_same_outcome(outcome(workdir), outcome(reference))


def test_a_finished_run_rerun_changes_nothing(tmp_path, tiny_mnist, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  train.train_and_evaluate(resumable_config(tiny_mnist), str(workdir))
  assert_same_outcome(outcome(workdir), outcome(reference))


@pytest.fixture
def failed_restore_leftovers():
  """Collects what a failed Orbax restore leaves behind, inside the test that caused it.

  TensorStore callbacks aimed at the restore's closed event loop, and a coroutine never awaited:
  Python reports them when they are garbage-collected (unraisable, RuntimeWarning). They change
  nothing on disk; the marks below ignore them in these tests only.
  """
  yield
  gc.collect()


def ignores_failed_restore_leftovers(test):
  marks = (
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.usefixtures("failed_restore_leftovers"),
  )
  for mark in marks:
    test = mark(test)
  return test


@ignores_failed_restore_leftovers
def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, tiny_mnist, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)

  def truncate_latest():
    for f in (workdir / "checkpoints" / "18" / "state").rglob("*"):
      if f.is_file() and f.stat().st_size > 100:
        f.write_bytes(f.read_bytes()[:50])  # Truncated, as by a full disk.

  truncate_latest()
  with pytest.warns(UserWarning, match=r"checkpoints/18 cannot be read .* resumed from step 16"):
    train.train_and_evaluate(resumable_config(tiny_mnist), str(workdir))
  assert (workdir / "checkpoints" / "18.unreadable").is_dir()
  assert_same_outcome(outcome(workdir), outcome(reference))
  # Step 18, saved again, damaged again: set aside beside the first, and resumed again.
  truncate_latest()
  with pytest.warns(UserWarning, match=r"moved it to \S*18\.unreadable-1 and resumed from step 16"):
    train.train_and_evaluate(resumable_config(tiny_mnist), str(workdir))
  assert (workdir / "checkpoints" / "18.unreadable").is_dir()
  assert_same_outcome(outcome(workdir), outcome(reference))


@ignores_failed_restore_leftovers
def test_no_readable_checkpoint_is_a_clear_error_not_a_fresh_start(tmp_path, tiny_mnist, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  for f in (workdir / "checkpoints").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(b"")
  before = {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()}
  with (
    warnings.catch_warnings(),
    pytest.raises(checkpoint.CheckpointError, match=r"None of the checkpoints .* --overwrite"),
  ):
    warnings.simplefilter("ignore")
    train.train_and_evaluate(resumable_config(tiny_mnist), str(workdir))
  assert {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()} == before


def test_another_config_in_the_workdir_is_refused_unless_overwrite(tmp_path, tiny_mnist, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  before = {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()}
  other = resumable_config(tiny_mnist, sparsity=0.5, learning_rate=0.05)
  with pytest.raises(ValueError, match=r"learning_rate: 0\.1 -> 0\.05; sparsity: 0\.9 -> 0\.5"):
    train.train_and_evaluate(other, str(workdir))
  assert {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()} == before
  summary = train.train_and_evaluate(other, str(workdir), overwrite=True)
  assert summary["target_sparsity"] == 0.5
  assert json.loads((workdir / "config.json").read_text())["sparsity"] == 0.5


def _stopped(pid: int) -> bool:
  with open(f"/proc/{pid}/stat") as f:
    return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.attack
def test_a_second_run_in_a_workdir_in_use_is_refused_and_changes_nothing(
  tmp_path, tiny_mnist, reference
):
  """Two runs at once in one workdir (another seed, or the same command twice): the second gets
  one line naming the first, which then finishes as if alone."""
  workdir = tmp_path / "run"
  first = subprocess.Popen(
    [sys.executable, str(INTERRUPT), "stop:3", *cli_flags(workdir, tiny_mnist)],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.monotonic() + 300
    while not _stopped(first.pid):  # Paused at its 3rd batch, holding the workdir.
      assert first.poll() is None and time.monotonic() < deadline, first.communicate()
      time.sleep(0.2)
    before = {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()}
    for extra in (["--config.seed=1"], []):
      result = run_script(
        ROOT / "experiments" / "train.py", *cli_flags(workdir, tiny_mnist), *extra
      )
      assert result.returncode == 1 and "Traceback" not in result.stderr
      (line,) = result.stderr.strip().splitlines()
      assert line.startswith(f"error: Workdir {str(workdir)!r} is in use by pid {first.pid} on ")
      assert line.endswith(" UTC. Wait for it to finish, or use another --workdir.")
    assert {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()} == before
  finally:
    first.send_signal(signal.SIGCONT)
  _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-3000:]
  assert json.loads((workdir / "config.json").read_text())["seed"] == 0
  assert_same_outcome(outcome(workdir), outcome(reference))


@pytest.mark.attack
def test_a_damaged_config_json_leaves_the_decision_to_the_checkpoint(
  tmp_path, tiny_mnist, reference
):
  """A config.json cut off (by a full disk, say) neither locks the run out nor lets another
  config resume it: the checkpoint records which config wrote it."""
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  (workdir / "config.json").write_text('{"model": "lenet3')
  before = {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()}
  other = resumable_config(tiny_mnist, learning_rate=0.05)
  with (
    pytest.warns(UserWarning, match=r"config\.json cannot be read"),
    pytest.raises(
      ValueError,
      match=r"checkpoint of step 18 .* was written by another config \(id [0-9a-f]{8}; this "
      r"config's is [0-9a-f]{8}\)\. Run the config that made it",
    ),
  ):
    train.train_and_evaluate(other, str(workdir))
  assert {f: f.read_bytes() for f in workdir.rglob("*") if f.is_file()} == before
  with pytest.warns(UserWarning, match=r"config\.json cannot be read"):
    summary = train.train_and_evaluate(resumable_config(tiny_mnist), str(workdir))
  assert json.loads((workdir / "config.json").read_text())["learning_rate"] == 0.1
  expected = json.loads((reference / "summary.json").read_text())
  assert (summary["test_accuracy"], summary["steps"]) == (expected["test_accuracy"], 18)


@pytest.mark.attack
def test_a_checkpoint_that_cannot_be_written_stops_the_run_at_once_in_one_line(
  tmp_path, tiny_mnist
):
  """``checkpoints`` a regular file (Orbax's background threads used to wait 300 s for a step
  directory that could not be made, then print ~280 lines of tracebacks)."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / files.LOCK_FILE).write_text("")  # A workdir of ours...
  (workdir / "checkpoints").write_text("not a directory\n")  # ...whose checkpoints are a file.
  t0 = time.perf_counter()
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"Cannot save the checkpoint of step 0 in .*checkpoints \(\[Errno 20\] Not a directory",
  ):
    train.train_and_evaluate(resumable_config(tiny_mnist), str(workdir))
  assert time.perf_counter() - t0 < 60  # An upper bound: the hang it replaces took 300 s.
  result = run_script(ROOT / "experiments" / "train.py", *cli_flags(workdir, tiny_mnist))
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert [line for line in result.stderr.splitlines() if line.strip()] == [
    line for line in result.stderr.splitlines() if line.startswith("error: Cannot save")
  ]


# Orbax's background event loop, stopped by the failed save, reports itself closed on the way out;
# and where a metrics write meets the full disk first, the TensorBoard file's last flush fails after
# it, which the run warns about (RunMetrics.__exit__) rather than hide the error that stopped it.
@pytest.mark.attack
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:The TensorBoard file could not be closed:UserWarning")
def test_a_full_disk_stops_the_run_at_once_in_one_line(tmp_path, tiny_mnist):
  small = tmp_path / "small"
  small.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(small)])
  if mounted.returncode != 0:
    pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
  try:
    t0 = time.perf_counter()
    # Whichever write meets the full disk first (a checkpoint, a metrics file) stops the run,
    # and its error is the one raised.
    with pytest.raises(
      (checkpoint.CheckpointError, OSError), match=r"No space left on device|RESOURCE_EXH"
    ):
      train.train_and_evaluate(resumable_config(tiny_mnist), str(small / "run"))
    assert time.perf_counter() - t0 < 60
    assert json.loads((small / "run" / "config.json").read_text())["seed"] == 0  # Intact.
  finally:
    # Lazily: a writer thread of Orbax's may still hold a file there for a moment.
    subprocess.run(["umount", "--lazy", str(small)], check=True)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_good_checkpoints(tmp_path, tiny_mnist):
  workdir = tmp_path / "run"
  cfg = resumable_config(tiny_mnist, learning_rate=1e30, log_every_steps=1)
  with pytest.raises(FloatingPointError, match=r"Training loss became (nan|inf) at step (\d+)"):
    train.train_and_evaluate(cfg, str(workdir))
  for step in checkpoint_steps(workdir):
    state = read_state(workdir, step)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


# --------------------------------------------------------------------------------------------
# Bad input: each a clear error (or, for all-zero scores, a warning) that names the fix, in well
# under a second, with nothing left in the workdir that could poison a later run.


def _from_dict(**fields):
  """A run of a config built from a dict (as from a JSON file): no field types to enforce."""
  return lambda workdir, data_dir: train.train_and_evaluate(
    ml_collections.ConfigDict({**tiny_config(data_dir).to_dict(), **fields}), str(workdir)
  )


def _without_seed(data_dir):
  cfg = tiny_config(data_dir)
  cfg.unlock()
  del cfg["seed"]
  return cfg


def _run(**overrides):
  return lambda workdir, data_dir: train.train_and_evaluate(
    tiny_config(data_dir, **overrides), str(workdir)
  )


def _run_config(make):
  return lambda workdir, data_dir: train.train_and_evaluate(make(data_dir), str(workdir))


def _idx_run(corrupt):
  """A run whose dataset must be prepared from IDX files that ``corrupt`` damages."""

  def run(workdir, data_dir):
    source = workdir.parent / "idx"
    source.mkdir(parents=True)
    write_mnist_like(source)
    corrupt(source)
    cfg = tiny_config(str(workdir.parent / "tfds"), source_dir=str(source))
    train.train_and_evaluate(cfg, str(workdir))

  return run


def _truncate(source: Path) -> None:
  path = source / "train-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:-200])


def _bad_magic(source: Path) -> None:
  write_idx(source / "train-labels-idx1-ubyte.gz", np.zeros(20, np.uint8), magic_type=0x0D)


def _unwritable(workdir, data_dir):
  workdir.parent.mkdir(parents=True, exist_ok=True)
  (workdir.parent / "file").write_text("not a directory")
  train.train_and_evaluate(tiny_config(data_dir), str(workdir.parent / "file" / "run"))


def _mask_mismatch(shape_only: bool):
  def run(workdir, data_dir):
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones(2)}
    mask = {"a": jnp.ones((2, 3), bool), "b": jnp.ones(2, bool)}
    if not shape_only:
      mask = {"a": jnp.ones((3, 2), bool)}
    optim.masked(optax.sgd(0.1), mask).init(params)

  return run


def _scores(value):
  def run(workdir, data_dir):
    scores = {"k": jnp.asarray([[0.5, value], [0.2, 0.1]])}
    selection.top_k_mask(scores, 0.5)

  return run


BAD_INPUTS = {
  # name: (run(workdir, data_dir), exception, message naming the problem and the fix)
  "sparsity < 0": (_run(sparsity=-0.1), ValueError, r"sparsity must lie in \[0, 1\).*e\.g\."),
  "sparsity = 1": (_run(sparsity=1.0), ValueError, r"sparsity must lie in \[0, 1\)"),
  "sparsity > 1": (_run(sparsity=1.5), ValueError, r"sparsity must lie in \[0, 1\)"),
  "sparsity NaN": (_run(sparsity=float("nan")), ValueError, r"sparsity must lie in.*got nan"),
  "sparsity a string": (
    _from_dict(sparsity="0.9"),
    ValueError,
    r"sparsity must be a number in \[0, 1\), got '0\.9'",
  ),
  "kappa = 0": (_run(sparsity=1 - 1e-9), ValueError, r"keeps 0 of 266200 .* choose a sparsity"),
  "unknown model": (_run(model="resnet"), ValueError, r"Unknown model 'resnet'; choose one of"),
  "unknown dataset": (_run(dataset="imagenet"), ValueError, r"Unknown dataset 'imagenet'; choose"),
  "unknown criterion": (_run(criterion="snap"), ValueError, r"Unknown criterion 'snap'; choose"),
  "unknown optimizer": (_run(optimizer="lbfgs"), ValueError, r"Unknown optimizer 'lbfgs'; choose"),
  "unknown init": (_run(init="ones"), ValueError, r"Unknown init 'ones'"),
  "unknown distribution": (_run(distribution="x"), ValueError, r"Unknown distribution 'x'"),
  "config field typo": (
    _from_dict(sparsty=0.5),
    ValueError,
    r"Unknown config field 'sparsty'; did you mean 'sparsity'\?",
  ),
  "config field missing": (
    _run_config(_without_seed),
    ValueError,
    r"The config lacks seed; start from a config of snip_jax/configs/",
  ),
  "non-integer batch size": (
    _from_dict(batch_size=2.5),
    ValueError,
    r"batch_size must be a positive",
  ),
  "zero scoring batches": (_run(score_batches=0), ValueError, r"score_batches must be a positive"),
  "zero prune rounds": (_run(prune_rounds=0), ValueError, r"rounds must be a positive integer"),
  "negative learning rate": (_run(learning_rate=-1.0), ValueError, r"learning_rate must be a"),
  "momentum >= 1": (_run(momentum=1.0), ValueError, r"momentum must be in \[0, 1\)"),
  "negative checkpoint interval": (
    _run(checkpoint_every_steps=-1),
    ValueError,
    r"checkpoint_every_steps must be a non-negative integer",
  ),
  "mask/params tree mismatch": (
    _mask_mismatch(False),
    ValueError,
    r"does not match the params tree",
  ),
  "mask/params shape mismatch": (
    _mask_mismatch(True),
    ValueError,
    r"has shape \(2, 3\) but the param",
  ),
  "NaN scores": (_scores(float("nan")), ValueError, r"NaN or infinite; refusing to build a mask"),
  "Inf scores": (_scores(float("inf")), ValueError, r"NaN or infinite; refusing to build a mask"),
  "dataset not available offline": (
    _run_config(lambda d: tiny_config(d + "-empty", source_dir=d + "-nothing-here")),
    FileNotFoundError,
    r"not prepared .* Provide it in one of three ways",
  ),
  "truncated IDX file": (_idx_run(_truncate), ValueError, r"truncated|Re-download"),
  "IDX file with a wrong magic number": (_idx_run(_bad_magic), ValueError, r"magic"),
  "unwritable workdir": (_unwritable, ValueError, r"Cannot write to workdir .* another --workdir"),
  "batch size larger than the dataset": (
    _run(batch_size=500),
    ValueError,
    r"batch_size=500 exceeds the 180 training examples; lower it",
  ),
  "min_kept_per_layer above what the sparsity keeps": (
    _run(min_kept_per_layer=1_000_000),
    ValueError,
    r"min_kept_per_layer=1000000 asks for 266200 connections .* keeps only κ=26620; lower",
  ),
  "more scoring examples than the dataset": (
    _run(score_batch_size=100, score_batches=2),
    ValueError,
    r"200 scoring examples exceed the 180 training examples; lower one of them",
  ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_a_clear_early_error_and_writes_nothing(
  name, tmp_path, tiny_mnist, monkeypatch
):
  refuse_network(monkeypatch)
  run, error, message = BAD_INPUTS[name]
  workdir = tmp_path / "work" / "run"
  t0 = time.perf_counter()
  with pytest.raises(error, match=message):
    run(workdir, tiny_mnist)
  # An upper bound, not a speed goal: the error comes before any data is decoded or any
  # program compiled (the offline TFDS hang it replaces took ~200 s).
  assert time.perf_counter() - t0 < 1.0
  assert not workdir.exists() or not any(workdir.iterdir())


CLI_BAD_INPUTS = {
  "config field typo on the command line": (
    "--config.sparsty=0.9",
    "error: unknown config field 'sparsty'; Did you mean \"sparsity\"",
  ),
  "sparsity a string on the command line": (
    "--config.sparsity=abc",
    "flag --config.sparsity=abc: could not convert string to float",
  ),
  # Without 64-bit mode a JAX key keeps 32 bits of the seed: 2**32 would silently be seed 0.
  "seed of 23 digits": (
    "--config.seed=12345678901234567890123",
    "error: config.seed must be an integer in [0, 2**32), got 12345678901234567890123.",
  ),
  "seed 2**32": ("--config.seed=4294967296", "error: config.seed must be an integer in [0, 2**32)"),
  "negative seed": ("--config.seed=-1", "error: config.seed must be an integer in [0, 2**32)"),
  "a config file that does not exist": (
    "--config=/nonexistent/config.py",
    "error: No config file '/nonexistent/config.py' and no packaged config of that name",
  ),
}


@pytest.mark.parametrize("name", list(CLI_BAD_INPUTS))
def test_cli_bad_input_is_a_clear_error_without_a_traceback(tmp_path, name):
  flag, message = CLI_BAD_INPUTS[name]
  workdir = tmp_path / "run"
  result = run_script(ROOT / "experiments" / "train.py", f"--workdir={workdir}", flag)
  assert result.returncode == 1
  assert message in result.stderr and "Traceback" not in result.stderr
  assert not workdir.exists()


@pytest.mark.parametrize(
  ("text", "message"),
  [
    ("this is not python (\n", r"line 1: SyntaxError: '\(' was never closed"),
    ("import no_such_module\n", r"ModuleNotFoundError: No module named 'no_such_module'"),
    ("x = 1\n", r"AttributeError: module 'config' has no attribute 'get_config'"),
    ("def get_config():\n  return {'seed': 0}\n", r"returns a 'dict', not a ConfigDict"),
  ],
)
@pytest.mark.attack
def test_a_config_file_that_is_not_one_is_one_line_naming_it(tmp_path, text, message):
  path = tmp_path / "config.py"
  path.write_text(text)
  workdir = tmp_path / "run"
  result = run_script(ROOT / "experiments" / "train.py", f"--config={path}", f"--workdir={workdir}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("error: ") and f"{str(path)!r}" in line
  assert re.search(message, line) and line.endswith("ml_collections.ConfigDict).")
  assert not workdir.exists()


def test_all_zero_scores_warn_and_explain_but_keep_exactly_kappa():
  scores = {"k": jnp.zeros((4, 5))}
  with pytest.warns(selection.ZeroScoresWarning, match=r"All 20 prunable scores are zero.*dead"):
    mask = selection.top_k_mask(scores, 0.75)
  assert int(mask["k"].sum()) == 5


def test_dead_network_scores_are_zero_not_nan():
  # ReLU of a negative bias: no unit is active, so no gradient reaches any kernel.
  from snip_jax.sensitivity import connection_sensitivity

  params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": -10 * jnp.ones(4)}}

  def loss(p, x):
    return jnp.sum(jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]))

  scores = connection_sensitivity(loss, params, jnp.ones((2, 3)))
  assert np.all(np.asarray(scores["Dense_0"]["kernel"]) == 0.0)


def test_cli_refuses_another_config_and_overwrites_when_asked(tmp_path, tiny_mnist, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  flags = [*cli_flags(workdir, tiny_mnist), "--config.seed=1"]
  refused = run_script(ROOT / "experiments" / "train.py", *flags)
  assert refused.returncode == 1
  assert "error: Workdir" in refused.stderr and "seed: 0 -> 1" in refused.stderr
  assert "Traceback" not in refused.stderr
  overwritten = run_script(ROOT / "experiments" / "train.py", *flags, "--overwrite")
  assert overwritten.returncode == 0, overwritten.stderr[-2000:]
  assert json.loads((workdir / "summary.json").read_text())["seed"] == 1


def test_default_config_fields_are_the_documented_ones():
  assert sorted(config()) == sorted(train.CONFIG_FIELDS)
