"""The PyTorch reference of benchmarks/torch_models.py: sizes match ours, masks hold in training.

Skipped where PyTorch is not installed; it is a benchmark-only dependency.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snip_jax import models

torch = pytest.importorskip("torch")

from benchmarks import torch_models as tm  # noqa: E402 (after the importorskip)

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").


def flax_counts(name):
  """(all params, prunable kernels) of our Flax model, from shapes only."""
  spec = models.get_spec(name)
  variables = jax.eval_shape(
    models.get_model(name).init, jax.random.key(0), jnp.zeros((1, *spec.input_shape))
  )
  params = jax.tree_util.tree_leaves_with_path(variables["params"])
  total = sum(x.size for _, x in params)
  kernels = sum(x.size for path, x in params if path[-1].key == "kernel")
  return total, kernels


@pytest.mark.parametrize("name", tm.MODELS)
def test_parameter_counts_match_flax(name):
  model = tm.build(name)
  total, kernels = flax_counts(name)
  assert tm.num_params(model) == total
  assert sum(layer.weight.numel() for layer in tm.masked_layers(model)) == kernels


@pytest.mark.parametrize("name", tm.MODELS)
def test_input_shape_is_flax_shape_in_nchw(name):
  height, width, channels = models.get_spec(name).input_shape
  assert tm.input_shape(name) == (channels, height, width)


def test_mask_density_and_determinism():
  a, b, c = tm.build("lenet5", seed=3), tm.build("lenet5", seed=3), tm.build("lenet5", seed=4)
  masks = [[layer.weight_mask for layer in tm.masked_layers(m)] for m in (a, b, c)]
  assert all(torch.equal(x, y) for x, y in zip(masks[0], masks[1], strict=True))
  assert not all(torch.equal(x, y) for x, y in zip(masks[0], masks[2], strict=True))
  for x, y in zip(tm.masked_layers(a), tm.masked_layers(b), strict=True):
    assert torch.equal(x.weight, y.weight)
  kept = sum(int(m.sum()) for m in masks[0])
  total = sum(m.numel() for m in masks[0])
  assert kept == round(0.05 * total)
  # Only conv and linear weights carry masks; pruned ones start at zero.
  for layer in tm.masked_layers(a):
    assert torch.all(layer.weight[layer.weight_mask == 0] == 0)


def test_unknown_model_and_bad_density():
  with pytest.raises(ValueError, match="Unknown model"):
    tm.build("resnet50")
  with pytest.raises(ValueError, match="Unknown model"):
    tm.input_shape("resnet50")
  with pytest.raises(ValueError, match="density"):
    tm.build("lenet300", density=1.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this PyTorch has a CUDA device")
def test_a_cuda_step_without_cuda_names_the_fix():
  with pytest.raises(ValueError, match="no CUDA device: install PyTorch's CUDA build"):
    tm.make_step("lenet300", 4, threads=1, device="cuda")


@pytest.mark.parametrize(("name", "batch_size"), [("lenet300", 16), ("lenet5", 16), ("vgg_d", 2)])
def test_steps_keep_pruned_weights_zero_and_train_kept_ones(name, batch_size):
  step = tm.make_step(name, batch_size, threads=1)
  layers = tm.masked_layers(step.model)
  before = [layer.weight.detach().clone() for layer in layers]
  losses = [step() for _ in range(3)]
  assert all(isinstance(loss, float) and math.isfinite(loss) for loss in losses)
  for layer, initial in zip(layers, before, strict=True):
    mask = layer.weight_mask.bool()
    assert torch.all(layer.weight[~mask] == 0)
    # Every layer keeps some weights, and they moved.
    assert mask.any()
    assert not torch.equal(layer.weight[mask], initial[mask])


def _layer_order(name):
  """Sorts Flax layer names into network order: convs first, then by number (conv2 < conv10)."""
  return (not name.lower().startswith("conv"), int(re.search(r"\d+", name).group()))


def _random_flax_variables(name, rng):
  """Variables for our Flax model with random values in every leaf, batch statistics included."""
  abstract = jax.eval_shape(
    models.get_model(name).init,
    jax.random.key(0),
    jnp.zeros((1, *models.get_spec(name).input_shape)),
  )

  def fill(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    kind = path[-1].key
    if kind == "kernel":
      return noise * np.sqrt(2 / math.prod(leaf.shape[:-1]), dtype=np.float32)
    if kind in ("scale", "var"):
      return np.exp(0.1 * noise)
    return 0.1 * noise  # bias, mean

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _load_flax_variables(model, variables):
  """Copies our Flax variables into ``model``, each converted to PyTorch's layout."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  layers = tm.masked_layers(model)
  norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
  dense = [params[k] for k in sorted(params, key=_layer_order) if "kernel" in params[k]]
  norm_names = sorted(stats, key=_layer_order)
  assert len(dense) == len(layers) and len(norm_names) == len(norms)
  flattened = False
  with torch.no_grad():
    for i, (layer, values) in enumerate(zip(layers, dense, strict=True)):
      kernel = torch.from_numpy(values["kernel"])
      if kernel.ndim == 4:  # HWIO -> OIHW.
        kernel = kernel.permute(3, 2, 0, 1)
      else:
        if not flattened and i > 0 and isinstance(layers[i - 1], tm.MaskedConv2d):
          # Rows of the first Dense after the convs: NHWC flattening order -> NCHW's.
          channels = layers[i - 1].out_channels
          side = math.isqrt(kernel.shape[0] // channels)
          kernel = kernel.reshape(side, side, channels, -1).permute(2, 0, 1, 3)
          kernel = kernel.reshape(channels * side * side, -1)
          flattened = True
        kernel = kernel.T  # [in, out] -> [out, in].
      layer.weight.copy_(kernel)
      if layer.bias is not None:
        layer.bias.copy_(torch.from_numpy(values["bias"]))
    for norm, norm_name in zip(norms, norm_names, strict=True):
      norm.weight.copy_(torch.from_numpy(params[norm_name]["scale"]))
      norm.bias.copy_(torch.from_numpy(params[norm_name]["bias"]))
      norm.running_mean.copy_(torch.from_numpy(stats[norm_name]["mean"]))
      norm.running_var.copy_(torch.from_numpy(stats[norm_name]["var"]))


@pytest.mark.parametrize("name", tm.MODELS)
def test_same_variables_give_same_logits_as_flax(name):
  """The architectures agree: given our Flax variables, the PyTorch twin computes our logits.

  Batch norm runs on the running statistics in both, so that no batch-statistics noise (large
  at a small batch) hides a difference.
  """
  rng = np.random.default_rng(0)
  variables = _random_flax_variables(name, rng)
  x_NHWC = rng.standard_normal((2, *models.get_spec(name).input_shape)).astype(np.float32)
  expected = models.get_model(name).apply(variables, x_NHWC, train=False)
  model = tm.build(name, density=1.0).eval()
  _load_flax_variables(model, variables)
  with torch.no_grad():
    logits = model(torch.from_numpy(x_NHWC).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(logits, np.asarray(expected), rtol=1e-4, atol=1e-4)
