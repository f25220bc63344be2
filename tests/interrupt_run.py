"""Runs ``experiments/train.py`` and kills it at a chosen point, as a crash or a preemption would.

  python tests/interrupt_run.py POINT [train.py flags ...]

POINT:
  prune       SIGKILL as soon as pruning is done, before the first checkpoint is saved;
  batch:N     SIGKILL when this process asks for its N-th training batch (mid-epoch);
  save:S      SIGKILL right after the checkpoint of step S starts saving (mid-save);
  sigterm:N   SIGTERM when this process asks for its N-th training batch; the batches after it
              come 0.5 s apart, as slow steps would (in a multi-process run the processes take
              a moment to agree on the step to stop at, and tiny steps would end the run first);
  stop:N      SIGSTOP when this process asks for its N-th training batch: the run pauses mid-
              epoch, holding its workdir, until SIGCONT.

The run is the real CLI in this process; only the function at the kill point is wrapped.
"""

import os
import runpy
import signal
import sys
import time
from pathlib import Path

from snip_jax import checkpoint, data
from snip_jax.train import pruning

TRAIN_PY = Path(__file__).resolve().parents[1] / "experiments" / "train.py"


def _kill(sig: signal.Signals = signal.SIGKILL) -> None:
  os.kill(os.getpid(), sig)


def _install(point: str) -> None:
  kind, _, arg = point.partition(":")
  if kind == "prune":
    prune = pruning.prune_at_init

    def pruned_then_killed(*args, **kwargs):
      prune(*args, **kwargs)
      _kill()

    pruning.prune_at_init = pruned_then_killed
  elif kind in ("batch", "sigterm", "stop"):
    batches, count = data.train_batches, [0]
    sig = {"batch": signal.SIGKILL, "sigterm": signal.SIGTERM, "stop": signal.SIGSTOP}[kind]

    def counted(*args, **kwargs):
      for batch in batches(*args, **kwargs):
        count[0] += 1
        if count[0] == int(arg):
          _kill(sig)
        elif kind == "sigterm" and count[0] > int(arg):
          time.sleep(0.5)
        yield batch

    data.train_batches = counted
  elif kind == "save":
    save = checkpoint.Checkpointer.save

    def saving_then_killed(self, state, progress):
      save(self, state, progress)
      if int(state.step) == int(arg):
        _kill()

    checkpoint.Checkpointer.save = saving_then_killed
  else:
    raise SystemExit(f"unknown kill point {point!r}; see {__file__}")


if __name__ == "__main__":
  _install(sys.argv[1])
  sys.argv = [str(TRAIN_PY), *sys.argv[2:]]
  runpy.run_path(str(TRAIN_PY), run_name="__main__")
