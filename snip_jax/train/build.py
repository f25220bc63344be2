"""What a valid experiment config builds: its model, the model's shapes, its optimizer and
what it prunes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from snip_jax import data, masks, models


def make_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model of ``config``: ``config.model`` initialised by ``config.init``, with as many
  classes as ``config.dataset`` has."""
  num_classes = data.get_spec(config.dataset).num_classes
  return models.get_model(config.model, num_classes=num_classes, init=config.init)


def abstract_variables(config: ml_collections.ConfigDict, model: nn.Module) -> dict[str, Any]:
  """The shapes and dtypes of ``model``'s variables for ``config.dataset``'s inputs, as
  ``jax.ShapeDtypeStruct`` s (nothing is computed)."""
  example = jax.ShapeDtypeStruct((1, *data.get_spec(config.dataset).image_shape), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), example)


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate as a function of the optimizer's update count: ``config.learning_rate``
  times ``config.lr_decay_factor`` every ``config.lr_decay_every_steps`` steps.

  Optax evaluates it at the count before an update, so the update that takes the train state to
  step ``s`` uses ``schedule(s - 1)``. It depends on the step alone, which is what lets a
  finished run be extended (a larger ``num_epochs``) into exactly the longer run.
  """
  return optax.exponential_decay(
    config.learning_rate,
    transition_steps=config.lr_decay_every_steps,
    decay_rate=config.lr_decay_factor,
    staircase=True,
  )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The unmasked optimizer: L2 weight decay, then SGD(momentum) or Adam, with
  :func:`make_schedule`'s step decay."""
  schedule = make_schedule(config)
  if config.optimizer == "sgd":
    base = optax.sgd(schedule, momentum=config.momentum or None)
  else:
    base = optax.adam(schedule)
  # L2 on every weight and bias, as in the authors' code (weight decay 5e-4 <=> 0.00025 *
  # sum(w ** 2)), but not on batch-norm scales and offsets, which their code does not decay
  # either. Pruned weights are zero, so the masked optimizer sees no decay on them.
  decayed = lambda params: jax.tree.map_with_path(  # noqa: E731
    lambda path, _: not masks.in_norm_layer(path), params
  )
  return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decayed), base)


def filter_fn_for(config: ml_collections.ConfigDict) -> masks.FilterFn:
  """What ``config`` prunes: kernels, and biases too with ``config.prune_biases``."""
  return masks.kernels_and_biases if config.prune_biases else masks.kernels
