"""snip_jax.xla: the steps' XLA options are used where they work and change nothing else."""

import re

import jax
import jax.numpy as jnp
import pytest

from snip_jax import xla
from snip_jax.models import lenet

on_cpu = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")


@on_cpu
def test_the_cpu_options_are_used_on_cpu():
  assert xla.compiler_options() == xla.CPU_OPTIONS


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_no_options_on_accelerators(backend):
  assert xla.compiler_options(backend) is None


def test_no_options_for_a_program_over_several_devices():
  """The options' speed was measured on one device only."""
  assert xla.compiler_options("cpu", num_devices=2) is None


@on_cpu
def test_a_flag_of_the_users_own_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert xla.compiler_options() is None


@on_cpu
def test_an_option_this_xla_does_not_know_is_dropped(monkeypatch):
  monkeypatch.setattr(xla, "CPU_OPTIONS", {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_TYPE"})
  assert xla.compiler_options() is None
  # The step still compiles, with XLA's defaults.
  assert xla.jit(lambda x: 2 * x)(jnp.float32(3)) == 6


def _compiled_text(fn, *args, options):
  return jax.jit(fn, compiler_options=options).lower(*args).compile().as_text()


def _lenet_grad(model, batch_size=2):
  x = jnp.zeros((batch_size, 28, 28, 1))
  params = model.init(jax.random.key(0), x)
  return jax.grad(lambda p, x: jnp.sum(model.apply(p, x) ** 2)), params, x


@on_cpu
def test_a_net_without_convolutions_compiles_to_the_same_program():
  """So LeNet-300-100's numbers (the default run's) are what they were without the options."""
  fn, params, x = _lenet_grad(lenet.LeNet300100(), batch_size=100)
  default = _compiled_text(fn, params, x, options=None)
  assert _compiled_text(fn, params, x, options=xla.compiler_options()) == default


@on_cpu
def test_the_options_give_convolutions_back_to_xla():
  fn, params, x = _lenet_grad(lenet.LeNet5Caffe())

  def convs_in_ynnpack(options):
    text = _compiled_text(fn, params, x, options=options)
    return len(re.findall(r"%ynn_fusion[.\d]* = [^\n]*conv_general_dilated", text))

  if not convs_in_ynnpack(None):
    pytest.skip("this XLA does not give convolutions to YNNPACK by default")
  assert convs_in_ynnpack(xla.compiler_options()) == 0


class Pending:
  """A result in flight: records when it is waited for."""

  def __init__(self, name: str, waited: list[str]):
    self.name, self.waited = name, waited

  def block_until_ready(self):
    self.waited.append(self.name)
    return self


def test_run_ahead_waits_for_the_oldest_result_beyond_its_limit():
  waited = []
  ahead = xla.RunAhead(limit=2)
  results = [{"loss": Pending(f"step {i}", waited)} for i in range(5)]
  assert ahead(results[0]) is results[0]
  ahead(results[1])
  assert waited == [] and len(ahead) == 2
  for result in results[2:]:
    ahead(result)
  assert waited == ["step 0", "step 1", "step 2"] and len(ahead) == 2
  # On real arrays: the result is returned unchanged.
  x = jnp.arange(3.0)
  assert xla.RunAhead(limit=1)(x) is x


def test_run_ahead_needs_a_positive_limit():
  with pytest.raises(ValueError, match="RunAhead needs a limit of at least 1, got 0"):
    xla.RunAhead(limit=0)
