"""The command line: ``snip-jax-train`` (also ``python experiments/train.py`` in a checkout).

It only parses flags and calls :func:`snip_jax.train.train_and_evaluate`. The flags live in a
:class:`absl.flags.FlagValues` of their own, made when the command runs, so importing this
module defines no global flag and the function can run more than once in a process.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from snip_jax import files, parallel

_PROGRAM = "snip-jax-train"
_USAGE = f"""\
usage: {_PROGRAM} [--config=NAME_OR_PATH] [--config.<field>=<value> ...] [--workdir=DIR]
                      [--overwrite]

SNIP: prune at initialisation (one jax.grad of the loss with respect to a mask of ones, an
exact global top-k), then train with the mask fixed and evaluate on the test set.

  {_PROGRAM}                                  # LeNet-300-100, Fashion-MNIST, 98%
  {_PROGRAM} --config=lenet5_fashion_mnist --config.sparsity=0.95 --workdir=runs/lenet5
  {_PROGRAM} --config=path/to/my_config.py    # a file whose get_config() returns a config

Running the same command again resumes the run from its newest checkpoint in the workdir; a
finished run given a larger --config.num_epochs trains on (the learning rate is a function of the
step, so the result equals a run with the larger budget from the start). On SIGTERM the run saves
a checkpoint and exits with status 143. A multi-process run (a TPU pod slice) starts the same
command in every process with --config.distributed=True.
"""
_HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


def _train():
  """:mod:`snip_jax.train`, or the exit naming the extras it needs (a package installed without
  them has the command but not what it runs)."""
  try:
    from snip_jax import train
  except ImportError as e:
    raise SystemExit(f"error: {e}") from None
  return train


def _define_flags(values: flags.FlagValues, config, argv: Sequence[str]):
  """Defines the command's flags in ``values``, ``--config.<field>`` those of ``config`` (the
  one ``--config`` chose, already loaded); returns their holders."""
  train = _train()
  define = dict(flag_values=values)
  try:  # ml_collections applies the --config.<field> overrides as it defines the flag.
    config = config_flags.DEFINE_config_dict(
      "config",
      config,
      "A packaged config by name (" + ", ".join(train.config_names()) + ") or the path of a "
      "config file; override its fields with --config.<field>=<value>.",
      sys_argv=list(argv),
      **define,
    )
  except AttributeError as e:  # A --config.<field> the config lacks: a typo.
    cause = e.args[0].args[0] if e.args and isinstance(e.args[0], KeyError) else str(e)
    message = f"error: unknown config field {cause}; {_PROGRAM} --help lists the fields."
    raise SystemExit(message.replace("\n", "; ")) from None
  workdir = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for the results files (default: runs/<model>_<dataset>_sp<s>_seed<n>_<id>, "
    "the id a hash of every field a resumed run cannot change).",
    **define,
  )
  overwrite = flags.DEFINE_bool(
    "overwrite",
    False,
    "Start afresh: delete the run found in --workdir (its checkpoints and results files) "
    "instead of resuming it or, when its config differs, refusing to start.",
    **define,
  )
  cluster = (
    flags.DEFINE_string(
      "coordinator_address",
      None,
      "Multi-process runs where JAX cannot find its processes itself (it can on Cloud TPU, "
      "SLURM, Open MPI and Kubernetes): host:port of process 0, the same in every process "
      "(needs --config.distributed=True).",
      **define,
    ),
    flags.DEFINE_integer(
      "num_processes", None, "With --coordinator_address: how many processes the run has.", **define
    ),
    flags.DEFINE_integer(
      "process_id", None, "With --coordinator_address: this process's index, from 0.", **define
    ),
  )
  return config, workdir, overwrite, cluster


def _chosen_config(argv: Sequence[str]) -> tuple[str, list[str]]:
  """The value of ``--config`` in ``argv`` (``default`` without one), and ``argv`` without it."""
  name, rest = "default", []
  args = iter(argv)
  for arg in args:
    if arg.startswith("--config="):
      name = arg.partition("=")[2]
    elif arg == "--config":
      name = next(args, "")
    else:
      rest.append(arg)
  return name, rest


def _load(name: str):
  """The config ``--config`` names, or the exit that lists the packaged ones."""
  try:
    return _train().load_config(name)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None


def help_text(argv: Sequence[str] = ()) -> str:
  """The ``--help`` text: usage, the flags, and every config field with its value and meaning.

  The values are those of the config that ``argv``'s ``--config`` names (the default config
  without one), so ``--config=lenet5_mnist --help`` shows what that config sets.
  """
  train = _train()
  width = min(100, shutil.get_terminal_size().columns)
  name, _ = _chosen_config(argv)
  config = _load(name)
  values = flags.FlagValues()
  _define_flags(values, config, [_PROGRAM])
  lines = [_USAGE, "Flags:"]
  for flag in sorted(values.get_flags_for_module(__name__), key=lambda f: f.name):
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    default = " (default: default)" if flag.name == "config" else default
    lines.append(f"  --{flag.name}{default}")
    lines += textwrap.wrap(flag.help, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
  heading = (
    f"Config fields, --config.<field>=<value> (the values of --config={name}; the checks "
    "values must pass are in snip_jax/train/config.py):"
  )
  lines += ["", *textwrap.wrap(heading, width)]
  for field in train.FIELDS:
    lines.append(f"  {field.name} = {config[field.name]!r}")
    lines += textwrap.wrap(field.help, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
  return "\n".join(lines) + "\n"


def _not_from_orbax(record: logging.LogRecord) -> bool:
  """Drops the log records of Orbax's background threads (a failed save logs its traceback
  from each of them); the run reports that failure in one line (a ``CheckpointError``)."""
  return f"{os.sep}orbax{os.sep}" not in record.pathname


def train_main(argv: Sequence[str] | None = None) -> int:
  """Runs ``snip-jax-train`` on ``argv`` (default ``sys.argv``); returns the exit status.

  A bad config, missing data or a diverging run ends with one ``error: ...`` line (status 1)
  that says what to fix; SIGTERM ends with status 143 after a checkpoint.
  """
  argv = list(sys.argv if argv is None else argv)
  train = _train()
  if any(arg in _HELP_FLAGS for arg in argv[1:]):
    sys.stdout.write(help_text(argv[1:]))
    return 0
  name, argv = _chosen_config(argv)
  values = flags.FlagValues()
  config_flag, workdir_flag, overwrite_flag, cluster_flags = _define_flags(
    values, _load(name), argv
  )
  try:
    unparsed = values(argv)
  except flags.Error as e:
    raise SystemExit(f"error: {e}\nSee {_PROGRAM} --help.") from None
  if len(unparsed) > 1:
    raise SystemExit(f"error: unexpected arguments {unparsed[1:]}; see {_PROGRAM} --help.")
  logging.getLogger().setLevel(logging.WARNING)
  logging.getLogger("absl").addFilter(_not_from_orbax)
  config = config_flag.value
  cluster = tuple(flag.value for flag in cluster_flags)
  if any(value is not None for value in cluster):
    if not config.distributed:
      raise SystemExit(
        "error: --coordinator_address/--num_processes/--process_id need --config.distributed=True."
      )
    parallel.initialize_distributed(*cluster)
  workdir = workdir_flag.value or train.default_workdir(config)
  try:
    train.train_and_evaluate(config, workdir, overwrite=overwrite_flag.value)
  except train.PreemptedError as e:
    print(e, file=sys.stderr)
    return 143  # 128 + SIGTERM: stopped, not finished.
  # Bad input, missing data, a diverging run, a workdir in use: the message says what to fix; a
  # traceback would only bury it.
  except (ValueError, OSError, FloatingPointError, files.LockedError) as e:
    raise SystemExit(f"error: {e}") from e
  return 0


def main() -> None:
  """The ``snip-jax-train`` console script."""
  sys.exit(train_main())
