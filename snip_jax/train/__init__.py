"""Running an experiment: a config in, a trained sparse model and its results files out.

:func:`train_and_evaluate` is what ``experiments/train.py`` and the notebook call. It is made of
modules a user can reuse one at a time, imported one way (each only from those above it):

* :mod:`~snip_jax.train.config`: the fields of a config (one table: defaults, checks, what a
  resumed run may change, what the summary reports);
* :mod:`~snip_jax.train.recipes`: the paper's MNIST training recipes as config fields (its
  text's, its authors' code's), which the MNIST configs apply;
* :mod:`~snip_jax.train.build`: what a config builds (model, optimizer, prunable filter);
* :mod:`~snip_jax.train.steps`: the train state and the jitted train and eval steps;
* :mod:`~snip_jax.train.pruning`: pruning at initialisation inside a run (task, scoring
  batches, mask, per-layer report);
* :mod:`~snip_jax.train.workdir`: a run's files, whether a run may use a workdir, and reading a
  run back (:func:`read_run`);
* :mod:`~snip_jax.train.progress`: where a run stands (checkpointed with its train state);
* :mod:`~snip_jax.train.metrics`: the run's metrics, per step and per epoch, to JSON lines,
  TensorBoard and the console;
* :mod:`~snip_jax.train.loop`: the loop itself (set up, restore or prune, train, summarise).

It runs data-parallel over every device (:mod:`snip_jax.parallel`): the state replicated, each
batch split over the devices, the same numbers as on one device up to the order of
floating-point additions.
"""

from snip_jax import extras

extras.require("snip_jax.train", "data", "experiments")

from snip_jax.train.build import (
  abstract_variables,
  filter_fn_for,
  make_model,
  make_optimizer,
  make_schedule,
)
from snip_jax.train.config import (
  CONFIG_FIELDS,
  EXTENDABLE_FIELDS,
  FIELDS,
  OPTIMIZERS,
  RESUMABLE_FIELDS,
  SCORE_BN_MODES,
  config_file,
  config_names,
  default_config,
  load_config,
  validate_config,
)
from snip_jax.train.loop import PreemptedError, train_and_evaluate
from snip_jax.train.metrics import RunMetrics
from snip_jax.train.progress import Progress
from snip_jax.train.pruning import (
  MaskReport,
  make_score_fn,
  make_task,
  mask_report,
  prune_at_init,
  scoring_batches,
  scoring_loss,
  spreads_scoring,
  training_split,
)
from snip_jax.train.steps import (
  TrainState,
  create_train_state,
  cross_entropy,
  eval_step,
  evaluate,
  forward,
  sharded_eval_step,
  sharded_train_step,
  train_step,
)
from snip_jax.train.workdir import (
  EXPORT_FILES,
  RESULT_FILES,
  STEP_METRICS_FILE,
  TENSORBOARD_DIR,
  TrainedRun,
  check_is_run,
  default_workdir,
  lock_workdir,
  read_run,
)

__all__ = [
  "CONFIG_FIELDS",
  "EXPORT_FILES",
  "EXTENDABLE_FIELDS",
  "FIELDS",
  "OPTIMIZERS",
  "RESULT_FILES",
  "RESUMABLE_FIELDS",
  "SCORE_BN_MODES",
  "STEP_METRICS_FILE",
  "TENSORBOARD_DIR",
  "MaskReport",
  "PreemptedError",
  "Progress",
  "RunMetrics",
  "TrainState",
  "TrainedRun",
  "abstract_variables",
  "check_is_run",
  "config_file",
  "config_names",
  "create_train_state",
  "cross_entropy",
  "default_config",
  "default_workdir",
  "eval_step",
  "evaluate",
  "filter_fn_for",
  "forward",
  "load_config",
  "lock_workdir",
  "make_model",
  "make_optimizer",
  "make_schedule",
  "make_score_fn",
  "make_task",
  "mask_report",
  "prune_at_init",
  "read_run",
  "scoring_batches",
  "scoring_loss",
  "sharded_eval_step",
  "sharded_train_step",
  "spreads_scoring",
  "train_and_evaluate",
  "train_step",
  "training_split",
  "validate_config",
]
