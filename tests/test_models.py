"""Models: parameter counts of the paper, and one compiled train step."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from snip_jax import count_prunable, ones_like, train
from snip_jax.models import get_model


@pytest.mark.parametrize(
  ("name", "num_params", "num_prunable"),
  [("lenet300", 266_610, 266_200), ("lenet5", 431_080, 430_500)],
)
def test_parameter_counts(name, num_params, num_prunable):
  model = get_model(name)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  assert sum(x.size for x in jax.tree.leaves(shapes)) == num_params
  assert count_prunable(shapes) == num_prunable


def test_unknown_model_and_init():
  with pytest.raises(ValueError, match="Unknown model 'vgg99'"):
    get_model("vgg99")
  with pytest.raises(ValueError, match="Unknown init 'zeros'"):
    get_model("lenet300", init="zeros")


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_train_step_compiles_once(name):
  model = get_model(name)
  key = jax.random.key(0)
  params = model.init(key, jnp.zeros((1, 28, 28, 1)))["params"]
  state = train.create_train_state(model, params, ones_like(params), optax.sgd(0.01), key)
  chex.clear_trace_counter()  # The counter is per function, shared across parameters.
  step = jax.jit(chex.assert_max_traces(train.train_step, n=1), donate_argnums=0)
  for i in range(4):
    images = jax.random.normal(jax.random.key(i), (8, 28, 28, 1))
    labels = jax.random.randint(jax.random.key(i), (8,), 0, 10)
    state, metrics = step(state, (images, labels))
  assert int(state.step) == 4
  assert jnp.isfinite(metrics["loss"])
