"""Runs a SNIP experiment: prune at initialisation, train with the mask fixed, evaluate.

  python experiments/train.py                       # configs/default.py: LeNet-300-100 at 98%
  python experiments/train.py --config experiments/configs/lenet5_fashion_mnist.py \
      --workdir runs/lenet5 --config.sparsity=0.95 --config.seed=1
  python experiments/train.py --config.criterion=synflow --config.distribution=erk

Running the same command again resumes the run from its newest checkpoint in the workdir. On
SIGTERM the run saves a checkpoint and exits with status 143.

The run is data-parallel over every device it sees. A multi-process run (a TPU pod slice: one
process per host) starts the same command in every process with --config.distributed=True; see
README "Multiple devices and TPUs". Where JAX cannot find its processes by itself (it can on
Cloud TPU, SLURM, Open MPI and Kubernetes), give --coordinator_address, --num_processes and
--process_id too.

This file only parses flags; the experiment is snip_jax.train.train_and_evaluate.
"""

import logging
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from snip_jax import parallel, train

try:  # ml_collections applies the --config.<field> overrides here, as it defines the flag.
  _CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(Path(__file__).parent / "configs" / "default.py"),
    "Experiment config file; override fields with --config.<field>=<value>.",
  )
except AttributeError as e:  # A --config.<field> the config lacks: a typo.
  cause = e.args[0].args[0] if e.args and isinstance(e.args[0], KeyError) else str(e)
  sys.exit(
    f"error: unknown config field {cause}; the fields are those of "
    "experiments/configs/default.py (documented in snip_jax/train/config.py).".replace("\n", "; ")
  )
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Directory for the results files (default: runs/<model>_<dataset>_sp<s>_seed<n>).",
)
_OVERWRITE = flags.DEFINE_bool(
  "overwrite",
  False,
  "Start afresh: delete the run found in --workdir (its checkpoints and results files) instead "
  "of resuming it or, when its config differs, refusing to start.",
)

_COORDINATOR_ADDRESS = flags.DEFINE_string(
  "coordinator_address",
  None,
  "Multi-process runs where JAX cannot find its processes itself: host:port of process 0, "
  "the same in every process (needs --config.distributed=True).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "With --coordinator_address: how many processes the run has."
)
_PROCESS_ID = flags.DEFINE_integer(
  "process_id", None, "With --coordinator_address: this process's index, from 0."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value or train.default_workdir(config)
  cluster = (_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(value is not None for value in cluster):
    if not config.distributed:
      sys.exit(
        "error: --coordinator_address/--num_processes/--process_id need --config.distributed=True."
      )
    parallel.initialize_distributed(*cluster)
  try:
    train.train_and_evaluate(config, workdir, overwrite=_OVERWRITE.value)
  except train.PreemptedError as e:
    print(e, file=sys.stderr)
    sys.exit(143)  # 128 + SIGTERM: stopped, not finished.
  # Bad input, missing data, a diverging run: the message says what to fix; a traceback would
  # only bury it.
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
  app.run(main)
