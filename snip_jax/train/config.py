"""The experiment config: one table of fields, its defaults, checks and the objects it builds.

:data:`FIELDS` is the single description of a config: each field's default (the paper's
LeNet-300-100 run on Fashion-MNIST at 98% sparsity), its meaning, the check a value must pass,
whether a resumed run may change it, and the key under which ``summary.json`` reports it.
:func:`default_config`, :func:`validate_config`, :data:`RESUMABLE_FIELDS`,
:data:`EXTENDABLE_FIELDS` and :func:`summary_fields` are all read off that table, so adding a
field means adding one row.

What a valid config builds (model, optimizer, ...) is in :mod:`snip_jax.train.build`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import importlib.util
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import ml_collections
from ml_collections import config_dict

from snip_jax import configs, criteria, data, dynamic, models, sanity, selection
from snip_jax.init import get_initializer

OPTIMIZERS = ("sgd", "adam")
#: How batch norm normalises while SNIP scores: with the (freshly initialised) running
#: statistics, as the authors' code does, or with the statistics of the scoring batch.
SCORE_BN_MODES = ("inference", "train")


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _rule(ok: Callable[[Any], bool], what: str) -> Callable[[str, Any], None]:
  """A check that refuses a value ``ok`` rejects with ``config.<field> must be <what>``."""

  def check(name: str, value: Any) -> None:
    if not ok(value):
      raise ValueError(f"config.{name} must be {what}, got {value!r}.")

  return check


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], None]:
  def check(name: str, value: Any) -> None:
    if value not in choices:
      raise ValueError(f"Unknown {name} {value!r}; choose one of {choices}.")

  return check


def _model(name: str, value: Any) -> None:
  if value not in models.MODELS:
    raise ValueError(f"Unknown model {value!r}; choose one of {sorted(models.MODELS)}.")


def _library(check: Callable[[Any], Any], *, optional: bool = False) -> Callable[[str, Any], None]:
  """A check done by the library function that owns the concept (its error names the fix);
  ``optional``: ``None`` (unset) passes."""
  return lambda name, value: None if optional and value is None else check(value)


_POSITIVE_INT = _rule(lambda v: _is_int(v) and v >= 1, "a positive integer")
_POSITIVE_REAL = _rule(lambda v: _is_real(v) and v > 0, "a positive number")
_BOOL = _rule(lambda v: isinstance(v, bool), "True or False")
_OPTIONAL_STR = _rule(lambda v: v is None or isinstance(v, str), "a path (or None)")


@dataclasses.dataclass(frozen=True)
class Field:
  """One field of an experiment config.

  Attributes:
    name: the field, ``config.<name>``.
    default: its value in :func:`default_config`; a type (``int``, ``str``) is a field that is
      unset (``None``) by default and takes values of that type.
    help: what it means (shown by ``experiments/train.py --helpfull``).
    check: ``check(name, value)`` raises ``ValueError`` naming the fix for a bad value.
    resumable: a resumed run may change it: it affects how a run logs, checkpoints and finds
      its data, not its results.
    summary: the key under which ``summary.json`` reports the value (``None``: not reported).
    extendable: a resumed run may change it as long as the checkpoint's progress allows it,
      which the training loop checks (``num_epochs``: not below the epochs already trained); a
      run extended this way ends exactly as one given the new value from the start.
    added_later: the field came after runs were made without it: at its default it is left out
      of the config's id (:func:`snip_jax.train.workdir.config_id`) and of ``summary.json``, so
      those runs keep their ids and workdirs, and their ``config.json`` reads back with it at
      its default (:func:`complete`).
  """

  name: str
  default: Any
  help: str
  check: Callable[[str, Any], None]
  resumable: bool = False
  summary: str | None = None
  extendable: bool = False
  added_later: bool = False

  @property
  def unset_value(self) -> Any:
    """Its value in :func:`default_config` (``None`` for a typed, unset field)."""
    return None if isinstance(self.default, type) else self.default


#: Every field of an experiment config, in the order :func:`validate_config` checks them.
FIELDS: tuple[Field, ...] = (
  # What is pruned and trained.
  Field(
    "model",
    "lenet300",
    "A name in snip_jax.models.MODELS (e.g. 'lenet300', 'vgg_d', 'wrn_16_8', 'lstm_s').",
    _model,
    summary="model",
  ),
  Field(
    "dataset",
    "fashion_mnist",
    "A name in snip_jax.data.DATASETS ('fashion_mnist', 'mnist', 'cifar10').",
    _library(data.get_spec),
    summary="dataset",
  ),
  Field(
    "init",
    "vs_h",
    "Kernel initialiser: 'vs_h' (He, the paper's default), 'vs_x' (Glorot), 'vs_lecun' "
    "(LeCun), 'vs_lecun_tf18' (the authors' code's on TF <= 1.8: LeCun's truncated normal, not "
    "rescaled), 'normal', 'truncated_normal'.",
    _library(get_initializer),
  ),
  Field(
    "sparsity",
    0.98,
    "Fraction of prunable weights removed, in [0, 1); 0 trains the dense network.",
    _library(selection.validate_sparsity),
    summary="target_sparsity",
  ),
  Field(
    "criterion",
    "snip",
    "Pruning criterion, a name in snip_jax.criteria.CRITERIA: 'snip' (the paper), or the "
    "baselines 'random', 'magnitude', 'grasp', 'synflow', 'iterative_snip'.",
    _library(criteria.get_criterion),
    summary="criterion",
  ),
  Field(
    "distribution",
    "global",
    "How the kept connections are spread over layers: 'global' (one top-k over all layers, the "
    "paper's choice), 'uniform' (every layer at `sparsity`), 'erk' (Erdos-Renyi-Kernel) or "
    "'N:M' (N of every M consecutive inputs of a unit, e.g. '2:4' with sparsity 0.5).",
    _library(selection.validate_distribution),
    summary="distribution",
  ),
  Field(
    "layer_sparsity",
    str,
    "Per-layer sparsities that override `sparsity` for the layers they name, as "
    "'NAME=SPARSITY,...': NAME is a leaf path ('Dense_0/kernel') or a module ('Dense_0'); each "
    "named leaf keeps exactly round((1 - s) * n) of its own best, the others share `sparsity`. "
    "Unset: none.",
    _library(selection.validate_layer_sparsity, optional=True),
    summary="layer_sparsity",
    added_later=True,
  ),
  Field(
    "sanity_check",
    str,
    "Train a sanity check of the criterion's mask instead of the mask (snip_jax.sanity): "
    "'shuffle' (each layer's mask permuted at random), 'layer_random' (random, each layer "
    "keeping its count), 'invert' (the lowest scores kept) or 'reinit' (the mask on a fresh "
    "initialisation). Unset: none.",
    _library(sanity.validate_check, optional=True),
    summary="sanity_check",
    added_later=True,
  ),
  Field(
    "dynamic",
    str,
    "Change the mask during training (snip_jax.dynamic): 'gmp' (gradual magnitude pruning from "
    "`gmp_initial_sparsity` to `sparsity`), 'set' or 'rigl' (drop the smallest weights, grow "
    "random / largest-gradient ones, from the criterion's mask), every `mask_update_every` "
    "steps from epoch `mask_update_begin_epoch` to `mask_update_end_epoch`. Unset: the mask is "
    "fixed (SNIP).",
    _library(dynamic.validate_method, optional=True),
    summary="dynamic",
    added_later=True,
  ),
  Field(
    "mask_update_every",
    100,
    "Steps between mask updates of a `dynamic` method (RigL's and SET's ΔT: 100).",
    _POSITIVE_INT,
    added_later=True,
  ),
  Field(
    "mask_update_begin_epoch",
    0,
    "A `dynamic` method changes the mask from the end of this epoch (0: from the start).",
    _rule(lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    added_later=True,
  ),
  Field(
    "mask_update_end_epoch",
    int,
    "A `dynamic` method changes the mask until the end of this epoch (needed with `dynamic`; "
    "RigL's authors stop at 3/4 of training, e.g. 75 of 100 epochs).",
    _rule(lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer (or None)"),
    added_later=True,
  ),
  Field(
    "drop_fraction",
    0.3,
    "SET and RigL: the fraction of each layer's kept weights replaced at the first update, "
    "decayed to 0 along a cosine by `mask_update_end_epoch` (RigL's authors: 0.3).",
    _rule(lambda v: _is_real(v) and 0 < v <= 1, "in (0, 1]"),
    added_later=True,
  ),
  Field(
    "gmp_initial_sparsity",
    0.0,
    "GMP: the sparsity of the criterion's mask at initialisation, raised to `sparsity` by "
    "`mask_update_end_epoch` along Zhu & Gupta's cubic (0: start dense).",
    _library(selection.validate_sparsity),
    added_later=True,
  ),
  Field(
    "prune_trained",
    str,
    "Prune a trained network instead of the initialisation: the workdir of a finished run of "
    "the same model and dataset. The criterion scores its final params ('magnitude': pruning "
    "after training, Han et al. 2015) and keeps only connections its mask kept, so a chain of "
    "such runs is iterative magnitude pruning. What trains under the new mask: "
    "`rewind_to_step`. Unset: prune at initialisation.",
    _OPTIONAL_STR,
    summary="prune_trained",
    added_later=True,
  ),
  Field(
    "rewind_to_step",
    int,
    "With `prune_trained`: train that run's weights of this step under the new mask (0: its "
    "initialisation, a lottery ticket; k > 0: rewinding, Frankle et al. 2020), which it must "
    "have kept (`keep_checkpoint_step`). Unset: retrain its trained weights (Han et al.).",
    _rule(lambda v: v is None or (_is_int(v) and v >= 0), "a non-negative integer (or None)"),
    summary="rewind_to_step",
    added_later=True,
  ),
  Field(
    "keep_checkpoint_step",
    int,
    "Checkpoint this step and never delete it (0: the checkpoint after pruning), so that a "
    "later run can rewind to it (`rewind_to_step`). Unset: only the newest are kept.",
    _rule(lambda v: v is None or (_is_int(v) and v >= 0), "a non-negative integer (or None)"),
    resumable=True,
    added_later=True,
  ),
  Field(
    "min_kept_per_layer",
    0,
    "Keep at least this many connections in every prunable layer (0: no guard against collapse).",
    _library(selection.validate_min_kept),
  ),
  Field(
    "prune_rounds",
    int,
    "Pruning rounds with an exponential schedule; unset = the criterion's default (1 for "
    "one-shot criteria, 100 for 'synflow' and 'iterative_snip').",
    lambda name, value: None,  # Checked with the sparsity, in validate_config.
  ),
  Field(
    "score_bn_mode",
    "inference",
    "Batch norm while scoring: 'inference' normalises with the freshly initialised running "
    "statistics (mean 0, variance 1), as the authors' code does; 'train' uses the statistics "
    "of the scoring batch. No effect on models without batch norm.",
    _one_of(SCORE_BN_MODES),
  ),
  Field(
    "optimizer",
    "sgd",
    "Optimizer: 'sgd' (with config.momentum) or 'adam'. Paper: SGD, momentum 0.9.",
    _one_of(OPTIMIZERS),
  ),
  # Sizes and counts.
  Field("batch_size", 100, "Training batch size (paper: 100 for MNIST).", _POSITIVE_INT),
  Field(
    "eval_batch_size",
    1000,
    "Batch size for evaluation on the validation and test splits.",
    _POSITIVE_INT,
  ),
  Field(
    "score_batch_size",
    100,
    "Examples per scoring batch (the paper's |D|).",
    _POSITIVE_INT,
  ),
  Field(
    "score_batches",
    1,
    "How many scoring batches the scores are averaged over (one batch at a time in memory); "
    "iterated criteria draw fresh batches each round.",
    _POSITIVE_INT,
  ),
  Field(
    "num_epochs",
    100,
    "Epochs over the training examples (540 steps each for the 54,000 of Fashion-MNIST at "
    "batch 100): 100 epochs = 54k steps, decayed at 25k and 50k. May be raised when resuming, "
    "to extend a run, finished or not: the learning-rate schedule is recomputed from the step "
    "and each epoch's shuffle from the epoch, so an extended run equals one given the larger "
    "num_epochs from the start; a value below the epochs already trained is refused.",
    _POSITIVE_INT,
    summary="epochs",
    extendable=True,
  ),
  Field(
    "lr_decay_every_steps",
    25_000,
    "Multiply the learning rate by lr_decay_factor every this many steps (paper, MNIST: every "
    "25k iterations).",
    _POSITIVE_INT,
  ),
  Field(
    "log_every_steps",
    50,
    "How often (in steps) the host synchronises with the device: it then records the step "
    "metrics (mean train loss and accuracy and gradient norm since the last record, learning "
    "rate, throughput) in <workdir>/step_metrics.jsonl and TensorBoard, and advances the "
    "progress bar.",
    _POSITIVE_INT,
    resumable=True,
  ),
  Field(
    "progress_every_steps",
    1000,
    "When stdout is not a terminal (a log file, CI), print a one-line progress (step, epoch, "
    "loss, learning rate, examples/s, ETA) at the first step record on or after every this "
    "many steps (0: none); on a terminal the progress bar shows it instead.",
    _rule(lambda v: _is_int(v) and v >= 0, "a non-negative integer (0: no progress lines)"),
    resumable=True,
  ),
  Field(
    "checkpoint_keep",
    3,
    "How many of the newest checkpoints are kept.",
    _POSITIVE_INT,
    resumable=True,
  ),
  Field(
    "train_examples",
    int,
    "Train (and score) on the first `train_examples` training examples only; unset = all.",
    _rule(lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer (or None for all)"),
  ),
  Field(
    "checkpoint_every_steps",
    1000,
    "Checkpoints (in <workdir>/checkpoints) every this many steps, besides those after "
    "pruning, at the end and on SIGTERM (0: only those); running the same command again "
    "resumes from the newest.",
    _rule(
      lambda v: _is_int(v) and v >= 0,
      "a non-negative integer (0: checkpoints only after pruning, at the end and on SIGTERM)",
    ),
    resumable=True,
  ),
  Field(
    "seed",
    0,
    "Seed of the run: init, scoring batch, data order; in [0, 2**32), the seeds a JAX key "
    "tells apart (without 64-bit mode seeds 2**32 apart give the same key).",
    _rule(lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    summary="seed",
  ),
  Field(
    "num_devices",
    int,
    "Data-parallel over a mesh of the first `num_devices` devices (unset: all of them), each "
    "taking an equal slice of every batch, so every batch size must be divisible by it.",
    _rule(
      lambda v: v is None or (_is_int(v) and v >= 1),
      "a positive integer (or None for all devices)",
    ),
  ),
  # Optimisation.
  Field("learning_rate", 0.1, "Initial learning rate (paper: 0.1).", _POSITIVE_REAL),
  Field(
    "lr_decay_factor",
    0.1,
    "The step decay's factor (paper, MNIST: x0.1 every 25k iterations).",
    _POSITIVE_REAL,
  ),
  Field(
    "grasp_temperature",
    200.0,
    "GraSP divides the logits by this temperature while scoring (the GraSP authors' value).",
    _POSITIVE_REAL,
  ),
  Field(
    "weight_decay",
    5e-4,
    "L2 weight decay on all params (paper: 5e-4); pruned weights stay exactly zero.",
    _rule(lambda v: _is_real(v) and v >= 0, ">= 0"),
  ),
  Field(
    "momentum",
    0.9,
    "Momentum for 'sgd' (paper: 0.9); 0 gives plain SGD.",
    _rule(lambda v: _is_real(v) and 0 <= v < 1, "in [0, 1)"),
  ),
  # Switches.
  Field(
    "augment",
    False,
    "Random horizontal flips and translations by up to 4 pixels (the paper's CIFAR-10 recipe).",
    _BOOL,
  ),
  Field(
    "distributed",
    False,
    "Call jax.distributed.initialize() first, in every process of a multi-host run (a TPU pod "
    "slice); see README 'Multiple devices and TPUs'.",
    _BOOL,
  ),
  Field(
    "random_labels",
    False,
    "Shuffle the training labels by one fixed permutation (the paper's memorisation "
    "experiment); validation and test keep their true labels.",
    _BOOL,
    summary="random_labels",
  ),
  Field(
    "prune_biases",
    False,
    "Also prune biases (the authors' TF code does); by default only kernels are prunable.",
    _BOOL,
  ),
  Field(
    "reinit_after_pruning",
    False,
    "Score one initialisation, then train an independent re-initialisation under its mask (as "
    "the authors' code does); False trains the scored weights.",
    _BOOL,
    summary="reinit_after_pruning",
  ),
  # Where the data is.
  Field(
    "data_dir",
    str,
    "TFDS data directory; unset = $TFDS_DATA_DIR or ~/tensorflow_datasets.",
    _OPTIONAL_STR,
    resumable=True,
  ),
  Field(
    "source_dir",
    str,
    "Directory of the original files (IDX for MNIST-likes, the CIFAR-10 archive) to prepare "
    "the dataset from when it is not prepared yet; unset = the dataset's default locations "
    "(Debian's dataset-fashion-mnist for fashion_mnist).",
    _OPTIONAL_STR,
    resumable=True,
  ),
)

_BY_NAME = {field.name: field for field in FIELDS}
#: The names of every field; :func:`validate_config` refuses any other.
CONFIG_FIELDS = tuple(sorted(_BY_NAME))
#: Fields a resumed run may change: they affect how it logs, checkpoints and finds its data,
#: not its results.
RESUMABLE_FIELDS = tuple(sorted(f.name for f in FIELDS if f.resumable))
#: Fields a resumed run may change within what its checkpoint allows (see ``Field.extendable``).
EXTENDABLE_FIELDS = tuple(sorted(f.name for f in FIELDS if f.extendable))


def default_config() -> ml_collections.ConfigDict:
  """Every field at its default: SNIP on LeNet-300-100, Fashion-MNIST, 98% sparsity.

  Config files start from this and override what differs (``snip_jax/configs/``).
  """
  config = ml_collections.ConfigDict()
  for field in FIELDS:
    is_type = isinstance(field.default, type)
    config[field.name] = config_dict.placeholder(field.default) if is_type else field.default
  return config


def config_names() -> tuple[str, ...]:
  """The names of the configs that ship with the package (``snip_jax/configs/<name>.py``)."""
  directory = importlib.resources.files(configs)
  return tuple(
    sorted(
      entry.name.removesuffix(".py")
      for entry in directory.iterdir()
      if entry.name.endswith(".py") and not entry.name.startswith("_")
    )
  )


def config_file(name_or_path: str | os.PathLike[str]) -> str:
  """The path of a config file: ``name_or_path`` itself when it is a file, else the packaged
  config of that name (``'lenet5_mnist'`` or ``'lenet5_mnist.py'``).

  Raises:
    FileNotFoundError: neither, naming the packaged configs.
  """
  path = os.fspath(name_or_path)
  if os.path.isfile(path):
    return path
  name = path.removesuffix(".py")
  if name in config_names():
    # A regular file inside the installed package (a wheel is unpacked, never zipped).
    return os.fspath(importlib.resources.files(configs) / f"{name}.py")
  raise FileNotFoundError(
    f"No config file {path!r} and no packaged config of that name; give a path to a config "
    f"file or one of: {', '.join(config_names())}."
  )


def load_config(name_or_path: str | os.PathLike[str]) -> ml_collections.ConfigDict:
  """The ``get_config()`` of a config file, by path or by packaged name (see
  :func:`config_file`), as ``--config`` loads it."""
  path = config_file(name_or_path)
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"Cannot load the config file {path!r} as Python.")
  module = importlib.util.module_from_spec(spec)
  fix = "a config file is Python defining get_config() -> ml_collections.ConfigDict"
  try:
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception as e:  # Whatever the file does wrong, the user gets its name and the error.
    where = f", line {e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
    reason = e.msg if isinstance(e, SyntaxError) else e
    raise ValueError(
      f"Cannot load the config file {path!r}{where}: {type(e).__name__}: {reason} ({fix})."
    ) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(
      f"get_config() of the config file {path!r} returns a {type(config).__name__!r}, not a "
      f"ConfigDict ({fix})."
    )
  return config


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the field and the fix for any invalid config value."""
  unknown = sorted(set(config) - set(CONFIG_FIELDS))
  if unknown:
    close = difflib.get_close_matches(unknown[0], CONFIG_FIELDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(
      f"Unknown config field {unknown[0]!r}; {hint}The fields are those of "
      "snip_jax.train.config.FIELDS (snip-jax-train --help lists them)."
    )
  missing = sorted(set(CONFIG_FIELDS) - set(config))
  if missing:
    raise ValueError(
      f"The config lacks {', '.join(missing)}; start from a config of snip_jax/configs/ "
      "(or snip_jax.train.config.default_config()) and change its fields."
    )
  for field in FIELDS:
    field.check(field.name, config[field.name])
    if field.name == "prune_rounds" and config.prune_rounds is not None:
      criteria.schedule(config.sparsity, config.prune_rounds)  # Checks the rounds.
  _check_combinations(config)


def _check_combinations(config: ml_collections.ConfigDict) -> None:
  """The checks that span fields (each field is valid on its own)."""
  if selection.n_m(config.distribution) is not None:
    selection.check_n_m_sparsity(config.distribution, config.sparsity)
    rounds = config.prune_rounds or criteria.get_criterion(config.criterion).rounds
    if rounds > 1:
      raise ValueError(
        f"config.distribution={config.distribution!r} selects in one shot, but "
        f"{config.criterion!r} prunes in {rounds} rounds; set config.prune_rounds=1."
      )
  if config.dynamic is not None:
    _check_dynamic(config)
  if config.rewind_to_step is not None and config.prune_trained is None:
    raise ValueError(
      "config.rewind_to_step rewinds the run named by config.prune_trained; set that too, or "
      "unset rewind_to_step."
    )
  if config.prune_trained is not None and config.dynamic is not None:
    raise ValueError(
      "config.prune_trained and config.dynamic each decide how the mask comes about; unset one."
    )
  if config.rewind_to_step is not None and (
    config.reinit_after_pruning or config.sanity_check == "reinit"
  ):
    raise ValueError(
      "config.rewind_to_step trains the pruned run's weights of that step, a re-initialisation "
      "trains fresh ones; unset rewind_to_step, or reinit_after_pruning and the 'reinit' check."
    )
  if config.sanity_check is not None:
    if config.sparsity == 0:
      raise ValueError(
        f"config.sanity_check={config.sanity_check!r} checks a pruned network's mask, but "
        "config.sparsity is 0 (dense); set a sparsity, or unset the sanity check."
      )
    if config.dynamic == "gmp" and config.gmp_initial_sparsity == 0:
      raise ValueError(
        f"config.sanity_check={config.sanity_check!r} checks the mask pruned at initialisation, "
        "but config.dynamic='gmp' starts dense (config.gmp_initial_sparsity is 0), so there is "
        "none to check; set gmp_initial_sparsity, or unset the sanity check."
      )
    if config.sanity_check == "reinit" and config.reinit_after_pruning:
      raise ValueError(
        "config.sanity_check='reinit' trains the mask on a fresh initialisation, which "
        "config.reinit_after_pruning=True already does for every run of this config; unset one."
      )


def _check_dynamic(config: ml_collections.ConfigDict) -> None:
  name = f"config.dynamic={config.dynamic!r}"
  if config.mask_update_end_epoch is None:
    raise ValueError(
      f"{name} needs config.mask_update_end_epoch, the epoch after which the mask stays fixed "
      f"(RigL's authors: 3/4 of training, e.g. {max(1, 3 * config.num_epochs // 4)} of "
      f"{config.num_epochs} epochs)."
    )
  if not config.mask_update_begin_epoch < config.mask_update_end_epoch <= config.num_epochs:
    raise ValueError(
      f"{name} needs config.mask_update_begin_epoch < config.mask_update_end_epoch <= "
      f"config.num_epochs, got {config.mask_update_begin_epoch}, "
      f"{config.mask_update_end_epoch} and {config.num_epochs}."
    )
  if config.sparsity == 0:
    raise ValueError(f"{name} needs a sparsity above 0 (its target); set config.sparsity.")
  if config.dynamic == "gmp" and config.gmp_initial_sparsity >= config.sparsity:
    raise ValueError(
      f"{name} raises the sparsity from config.gmp_initial_sparsity="
      f"{config.gmp_initial_sparsity} to config.sparsity={config.sparsity}; the first must be "
      "the lower."
    )
  if selection.n_m(config.distribution) is not None or config.layer_sparsity is not None:
    raise ValueError(
      f"{name} changes a mask at one global or per-layer sparsity; unset "
      "config.layer_sparsity and use a 'global', 'uniform' or 'erk' distribution."
    )


#: The fields :data:`Field.added_later`, with their values in :func:`default_config`.
ADDED_LATER = {f.name: f.unset_value for f in FIELDS if f.added_later}


def complete(fields: dict[str, Any]) -> dict[str, Any]:
  """A stored config (``config.json``'s fields) with every field added since it was written
  (:data:`ADDED_LATER`) at its default; the other fields as they are."""
  return {**ADDED_LATER, **fields}


def summary_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config values ``summary.json`` reports, under their summary keys (a field added
  later only when it is set)."""
  return {
    f.summary: config[f.name]
    for f in FIELDS
    if f.summary and not (f.added_later and config[f.name] == f.unset_value)
  }
