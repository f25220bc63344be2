"""The compact sparse export (snip_jax/export.py, experiments/export.py) and sparse inference."""

import json
import os
import zipfile

import flax.serialization
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import scipy.sparse
from flax import linen as nn
from helpers import ROOT, config, run_script, tiny_config

from snip_jax import export, masks, models, selection, train


def pruned(name: str, sparsity: float = 0.98, seed: int = 0, **kwargs):
  """``(model, variables, mask)``: the model's init, masked by a top-κ mask of random scores."""
  model = models.get_model(name, **kwargs)
  key_init, key_scores = jax.random.split(jax.random.key(seed))
  variables = model.init(key_init, jnp.zeros((1, 28, 28, 1)))
  params = variables["params"]
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key_scores, len(leaves))
  scores = jax.tree.unflatten(
    treedef, [jax.random.uniform(k, jnp.shape(p)) for k, p in zip(keys, leaves, strict=True)]
  )
  mask = selection.top_k_mask(scores, sparsity)
  return model, {**variables, "params": masks.apply_mask(params, mask)}, mask


@pytest.fixture(scope="module")
def lenet300():
  return pruned("lenet300")


@pytest.fixture(scope="module")
def exported_lenet300(lenet300, tmp_path_factory):
  _, variables, mask = lenet300
  path = tmp_path_factory.mktemp("export") / "lenet300.npz"
  export.export_sparse(path, variables["params"], mask, config=config())
  return path


# --------------------------------------------------------------------------------------------
# Round trip.


def test_round_trip_gives_the_masked_params_bit_for_bit(tmp_path):
  model = models.get_model("lenet300")
  params = model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))["params"]
  mask = selection.top_k_mask(jax.tree.map(jnp.abs, params), 0.9)
  # Kept entries that a careless format would lose: -0.0, NaN, inf and a denormal.
  kernel = np.array(params["Dense_2"]["kernel"])
  rows, cols = np.nonzero(np.asarray(mask["Dense_2"]["kernel"]))
  kernel[rows[:4], cols[:4]] = [-0.0, np.nan, np.inf, np.float32(1e-45)]
  params["Dense_2"]["kernel"] = jnp.asarray(kernel)
  batch_stats = {"BatchNorm_0": {"mean": jnp.arange(3.0), "var": jnp.ones(3)}}
  info = export.export_sparse(tmp_path / "m.npz", params, mask, batch_stats=batch_stats, step=7)
  masked = masks.apply_mask(params, mask)
  loaded = export.load_dense(tmp_path / "m.npz")
  assert export.bit_equal(loaded.params, masked)
  assert not export.bit_equal(loaded.params, params)  # The pruned entries did change.
  assert export.bit_equal(loaded.batch_stats, batch_stats)
  assert loaded.step == 7 and loaded.config is None
  assert info["kept"] == masks.count_prunable(params) - round(0.9 * 266_200)
  assert info["prunable"] == 266_200
  # Without a mask, the entries that are not +0.0 are kept: the same file for masked params.
  export.export_sparse(tmp_path / "again.npz", masked, batch_stats=batch_stats, step=7)
  assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "m.npz").read_bytes()


def test_a_mask_that_prunes_biases_too_is_applied_to_the_leaves_stored_whole(tmp_path):
  """Pruned with kernels_and_biases, exported with the default filter (kernels sparse, the
  rest whole): the file still holds apply_mask(params, mask), biases included."""
  model = models.get_model("lenet300")
  params = model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))["params"]
  params = jax.tree.map(lambda p: p + 1.0, params)  # Non-zero biases.
  scores = jax.tree.map(jnp.abs, params)
  mask = selection.top_k_mask(scores, 0.9, filter_fn=masks.kernels_and_biases)
  assert not all(bool(jnp.all(layer["bias"])) for layer in mask.values())
  export.export_sparse(tmp_path / "m.npz", params, mask)
  loaded = export.load_dense(tmp_path / "m.npz")
  assert export.bit_equal(loaded.params, masks.apply_mask(params, mask))


def test_64_bit_leaves_load_bit_for_bit_or_are_refused_naming_x64(tmp_path):
  """float64/int64 params (NumPy's, or an x64 session's) come back bit for bit under
  jax_enable_x64; without it JAX would narrow them to 32 bits, so the load refuses."""
  kernel = (np.arange(12, dtype=np.float64).reshape(3, 4) - 5) / 3  # Not exact in float32.
  params = {"Dense_0": {"kernel": kernel, "bias": np.arange(4, dtype=np.int64)}}
  export.export_sparse(tmp_path / "x64.npz", params)
  for like in (None, {"params": params}):
    with pytest.raises(export.ExportError, match=r"params/Dense_0/\w+ is \w+64, .*jax_enable_x64"):
      export.load_dense(tmp_path / "x64.npz", like=like)
  with jax.enable_x64(True):
    loaded = export.load_dense(tmp_path / "x64.npz", like={"params": params})
    assert loaded.params["Dense_0"]["kernel"].dtype == np.float64
    np.testing.assert_array_equal(np.asarray(loaded.params["Dense_0"]["kernel"]), kernel)
    np.testing.assert_array_equal(np.asarray(loaded.params["Dense_0"]["bias"]), np.arange(4))


def test_round_trip_of_bfloat16_and_the_structure_of_like(tmp_path, lenet300):
  _, variables, mask = lenet300
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), variables["params"])
  export.export_sparse(tmp_path / "bf16.npz", params, mask)
  like = {"params": jax.eval_shape(lambda: params)}
  loaded = export.load_dense(tmp_path / "bf16.npz", like=like)
  assert loaded.params["Dense_0"]["kernel"].dtype == ml_dtypes.bfloat16
  assert export.bit_equal(loaded.params, params)


def test_the_file_is_the_documented_csr(exported_lenet300, lenet300):
  """Plain NumPy and SciPy read it as the module docstring says."""
  _, variables, _ = lenet300
  with np.load(exported_lenet300) as f:
    manifest = json.loads(str(f["__manifest__"]))
    assert manifest["format"] == "snip-jax-sparse" and manifest["version"] == 1
    assert manifest["config"]["model"] == "lenet300"
    layouts = {e["path"]: e["layout"] for e in manifest["leaves"]}
    assert layouts == {
      f"Dense_{i}/{leaf}": "csr" if leaf == "kernel" else "dense"
      for i in range(3)
      for leaf in ("bias", "kernel")
    }
    for i in range(3):
      stem = f"params/Dense_{i}/kernel"
      kernel = np.asarray(variables["params"][f"Dense_{i}"]["kernel"])
      indptr, indices, values = (f[f"{stem}/{part}"] for part in ("indptr", "indices", "values"))
      csr = scipy.sparse.csr_matrix((values, indices, indptr), shape=kernel.shape)
      np.testing.assert_array_equal(csr.toarray(), kernel)
      assert indices.dtype == (np.uint8 if kernel.shape[1] <= 256 else np.uint16)
      np.testing.assert_array_equal(
        f[f"params/Dense_{i}/bias"], variables["params"][f"Dense_{i}"]["bias"]
      )


def test_conv_kernels_are_stored_as_their_matrix_view(tmp_path):
  _, variables, mask = pruned("lenet5", 0.95)
  export.export_sparse(tmp_path / "l5.npz", variables["params"], mask)
  kernel = np.asarray(variables["params"]["Conv_1"]["kernel"])  # [5, 5, 20, 50]
  with np.load(tmp_path / "l5.npz") as f:
    parts = [f[f"params/Conv_1/kernel/{p}"] for p in ("values", "indices", "indptr")]
  csr = scipy.sparse.csr_matrix(tuple(parts), shape=(5 * 5 * 20, 50))
  np.testing.assert_array_equal(csr.toarray().reshape(kernel.shape), kernel)
  assert export.bit_equal(export.load_dense(tmp_path / "l5.npz").params, variables["params"])


def test_exported_size_at_98_percent_is_below_5_percent_of_the_dense_checkpoint(
  exported_lenet300, lenet300
):
  """Against the dense params as Flax serializes them (msgpack, flax.serialization)."""
  _, variables, _ = lenet300
  dense = len(flax.serialization.to_bytes(jax.device_get(variables["params"])))
  assert dense > 266_610 * 4
  assert exported_lenet300.stat().st_size < 0.05 * dense


# --------------------------------------------------------------------------------------------
# Bad files.


def _rewrite(path, out, edit):
  """Copies the export at ``path`` to ``out`` after ``edit(arrays, manifest)``."""
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  manifest = json.loads(str(arrays.pop("__manifest__")))
  edit(arrays, manifest)
  with open(out, "wb") as f:
    np.savez(f, __manifest__=np.asarray(json.dumps(manifest)), **arrays)
  return out


def _set_version(arrays, manifest):
  manifest["version"] = 2


def _drop_values(arrays, manifest):
  del arrays["params/Dense_1/kernel/values"]


def _column_out_of_range(arrays, manifest):
  arrays["params/Dense_2/kernel/indices"][-1] = 10


def _unsorted_columns(arrays, manifest):
  indices = arrays["params/Dense_0/kernel/indices"]
  indices[:2] = indices[1::-1]


def _bad_row_offsets(arrays, manifest):
  arrays["params/Dense_0/kernel/indptr"][5] = 0


def _extra_array(arrays, manifest):
  arrays["params/Dense_3/bias"] = np.zeros(3, np.float32)


def _wrong_dtype(arrays, manifest):
  arrays["params/Dense_0/bias"] = arrays["params/Dense_0/bias"].astype(np.float64)


@pytest.mark.parametrize(
  ("edit", "message"),
  [
    (_set_version, "format version 2; this snip-jax reads version 1"),
    (_drop_values, "'params/Dense_1/kernel/values' is missing"),
    (_column_out_of_range, "columns of 'params/Dense_2/kernel' are not ascending"),
    (_unsorted_columns, "columns of 'params/Dense_0/kernel' are not ascending"),
    (_bad_row_offsets, "row offsets of 'params/Dense_0/kernel' do not run"),
    (_extra_array, "arrays its manifest does not list: ['params/Dense_3/bias']"),
    (_wrong_dtype, "'params/Dense_0/bias' is stored as float64, the manifest says float32"),
  ],
)
def test_an_inconsistent_file_is_refused_naming_what_is_wrong(
  exported_lenet300, tmp_path, edit, message
):
  bad = _rewrite(exported_lenet300, tmp_path / "bad.npz", edit)
  for load in (export.load_dense, export.load_sparse):
    with pytest.raises(export.ExportError, match="Export it again") as e:
      load(bad)
    assert message in str(e.value)


def test_a_truncated_or_corrupt_file_is_a_clear_error(exported_lenet300, tmp_path):
  data = exported_lenet300.read_bytes()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(data[: len(data) // 2])
  # One flipped byte inside the largest member's compressed data: zip's CRC-32 catches it.
  with zipfile.ZipFile(exported_lenet300) as z:
    member = max(z.infolist(), key=lambda i: i.compress_size)
  flipped = bytearray(data)
  offset = member.header_offset + 30 + len(member.filename) + len(member.extra) + 100
  flipped[offset] ^= 0xFF
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(bytes(flipped))
  text = tmp_path / "text.npz"
  text.write_text("not an export")
  for path in (truncated, corrupt, text):
    with pytest.raises(export.ExportError, match=r"truncated or corrupt.*Export it again"):
      export.load_dense(path)


def test_other_files_and_no_file(tmp_path, lenet300):
  _, _, mask = lenet300
  masks.save_mask(tmp_path / "mask.npz", mask)
  with pytest.raises(export.ExportError, match="no '__manifest__' entry: not a snip-jax"):
    export.load_dense(tmp_path / "mask.npz")
  with pytest.raises(FileNotFoundError, match=r"No export at .*experiments/export\.py"):
    export.load_sparse(tmp_path / "absent.npz")


def test_a_file_of_another_model_is_refused_naming_the_leaf(exported_lenet300):
  lenet5 = jax.eval_shape(
    models.get_model("lenet5").init, jax.random.key(0), jnp.zeros((1, 28, 28, 1))
  )
  with pytest.raises(export.ExportError, match="exported from another model: its params lack"):
    export.load_dense(exported_lenet300, like=lenet5)
  hundred = jax.eval_shape(
    models.get_model("lenet300", num_classes=100).init, jax.random.key(0), jnp.zeros((1, 28, 28, 1))
  )
  with pytest.raises(
    export.ExportError, match=r"params/Dense_2/bias is float32\[10\], the model's is float32\[100\]"
  ):
    export.load_sparse(exported_lenet300, like=hundred)


def test_a_mask_of_another_model_is_refused_before_writing(tmp_path, lenet300):
  _, variables, _ = lenet300
  _, _, other_mask = pruned("lenet5")
  with pytest.raises(ValueError, match="Mask tree does not match"):
    export.export_sparse(tmp_path / "m.npz", variables["params"], other_mask)
  assert not list(tmp_path.iterdir())


def test_leaves_that_would_share_a_name_in_the_file_are_refused_before_writing(tmp_path):
  kernel = jnp.ones((3, 2))
  # Two leaves named 'Dense_0/kernel'.
  with pytest.raises(ValueError, match="both named 'Dense_0/kernel'"):
    export.export_sparse(
      tmp_path / "m.npz", {"Dense_0/kernel": kernel, "Dense_0": {"kernel": kernel}}
    )
  # A dense leaf named as the CSR part of a kernel's ('x/indptr' of the kernel 'x').
  with pytest.raises(ValueError, match="both be stored as 'params/x/indptr'"):
    export.export_sparse(tmp_path / "m.npz", {"x": kernel, "x/indptr": jnp.ones(3)})
  assert not list(tmp_path.iterdir())


def test_model_from_config_needs_a_config(tmp_path, lenet300, exported_lenet300):
  _, variables, mask = lenet300
  model = export.model_from_config(export.load_dense(exported_lenet300).config)
  assert isinstance(model, models.LeNet300100)
  export.export_sparse(tmp_path / "bare.npz", variables["params"], mask)
  with pytest.raises(export.ExportError, match="no run config"):
    export.model_from_config(export.load_dense(tmp_path / "bare.npz").config)


# --------------------------------------------------------------------------------------------
# Sparse inference.


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_sparse_forward_equals_dense_forward_on_random_inputs(tmp_path, name):
  model, variables, mask = pruned(name, 0.98)
  export.export_sparse(tmp_path / "m.npz", variables["params"], mask)
  exported = export.load_sparse(tmp_path / "m.npz", like=variables)
  fc = [k for k in exported.params if k.startswith("Dense")]
  assert fc and all(
    isinstance(exported.params[k]["kernel"], jax.experimental.sparse.BCOO) for k in fc
  )
  convs = [k for k in exported.params if k.startswith("Conv")]
  assert all(isinstance(exported.params[k]["kernel"], jax.Array) for k in convs)
  for k in fc:  # Only the kept weights are held.
    assert exported.params[k]["kernel"].nse == int(np.sum(mask[k]["kernel"]))
  x = jax.random.normal(jax.random.key(3), (64, 28, 28, 1))
  sparse_forward = jax.jit(export.sparse_apply(model.apply))
  dense = jax.jit(model.apply)(variables, x)
  out = sparse_forward(exported.variables, x)
  np.testing.assert_allclose(out, dense, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(dense))))
  # The fully connected layers really multiply sparsely: one BCOO matmul each.
  jaxpr = str(jax.make_jaxpr(export.sparse_apply(model.apply))(exported.variables, x))
  assert jaxpr.count("bcoo_dot_general") == len(fc)
  assert out.shape == (64, 10)


class ConvBatchNormNet(nn.Module):
  """A conv, batch norm, and two dense layers (one without bias), as the CIFAR nets have."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.Dense(32, use_bias=False)(x.reshape(x.shape[0], -1))
    return nn.Dense(10)(nn.relu(x))


def test_batch_norm_statistics_travel_with_the_export(tmp_path):
  model = ConvBatchNormNet()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))
  x = jax.random.normal(jax.random.key(1), (16, 12, 12, 3))
  # Statistics that differ from the initial ones, as after training.
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  mask = selection.top_k_mask(jax.tree.map(jnp.abs, variables["params"]), 0.9)
  params = masks.apply_mask(variables["params"], mask)
  variables = {"params": params, **updates}
  export.export_sparse(tmp_path / "bn.npz", params, mask, batch_stats=updates["batch_stats"])
  dense = export.load_dense(tmp_path / "bn.npz", like=variables)
  assert export.bit_equal(dense.variables, variables)
  exported = export.load_sparse(tmp_path / "bn.npz", like=variables)
  assert isinstance(exported.params["Dense_0"]["kernel"], jax.experimental.sparse.BCOO)
  expected = model.apply(variables, x)
  out = jax.jit(export.sparse_apply(model.apply))(exported.variables, x)
  np.testing.assert_allclose(
    out, expected, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(expected)))
  )


def test_sparse_apply_leaves_dense_kernels_alone(lenet300):
  model, variables, _ = lenet300
  x = jax.random.normal(jax.random.key(4), (8, 28, 28, 1))
  np.testing.assert_array_equal(
    export.sparse_apply(model.apply)(variables, x), model.apply(variables, x)
  )


def test_memory_of_sparse_params(exported_lenet300, lenet300):
  _, variables, _ = lenet300
  sparse = export.load_sparse(exported_lenet300).params
  kept = masks.count_prunable(variables["params"]) - round(0.98 * 266_200)
  biases = 300 + 100 + 10
  # float32 values and two int32 coordinates per kept weight, and the dense biases.
  assert export.tree_bytes(sparse) == kept * 12 + biases * 4
  assert export.tree_bytes(variables["params"]) == 266_610 * 4


# --------------------------------------------------------------------------------------------
# Runs: the library function and the CLI.


@pytest.mark.slow
def test_export_cli_on_a_real_fashion_mnist_run(tmp_path, real_fashion_mnist):
  """A LeNet-5-Caffe run at 98%: the export matches the checkpoint and, run sparsely, the
  dense masked model on the real test set."""
  workdir = tmp_path / "run"
  cfg = config(
    model="lenet5",
    sparsity=0.98,
    train_examples=3000,
    num_epochs=1,
  )
  summary = train.train_and_evaluate(cfg, str(workdir))
  result = run_script(ROOT / "experiments" / "export.py", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  assert "the dense params equal the checkpoint's masked params bit for bit" in result.stdout
  record = json.loads((workdir / "sparse_model.json").read_text())
  assert record["step"] == summary["steps"] == 30 and record["finished"]
  assert record["kept"] == summary["num_kept"] and record["prunable"] == summary["num_prunable"]
  assert record["file_bytes"] == (workdir / "sparse_model.npz").stat().st_size
  test = record["test"]
  assert test["examples"] == 10_000 and test["predictions_differ"] == 0
  assert test["sparse_accuracy"] == test["dense_accuracy"] > 0.5
  assert test["max_abs_diff"] <= 1e-5 * test["max_abs_logit"]
  run = export.read_run(workdir)
  loaded = export.load_dense(workdir / "sparse_model.npz", like=run.variables)
  assert export.bit_equal(loaded.params, run.params)
  assert loaded.config == json.loads((workdir / "config.json").read_text())
  cfg.seed = 1
  train.train_and_evaluate(cfg, str(workdir), overwrite=True)
  assert (
    not (workdir / "sparse_model.npz").exists() and not (workdir / "sparse_model.json").exists()
  )


@pytest.mark.slow
def test_export_workdir_overwrite_and_cli_errors(tmp_path, tiny_mnist):
  """In process, to another path and to the workdir; a run started afresh there with
  --overwrite deletes the export, which belongs to the old run."""
  workdir = tmp_path / "run"
  cfg = tiny_config(tiny_mnist, checkpoint_every_steps=0)
  train.train_and_evaluate(cfg, str(workdir))
  run, path, info = export.export_workdir(workdir, tmp_path / "elsewhere.npz")
  assert path == str(tmp_path / "elsewhere.npz") and run.finished and run.step == 18
  assert info["kept"] == int(sum(np.sum(m) for m in jax.tree.leaves(run.mask)) - 410)
  _, path, _ = export.export_workdir(workdir)
  assert path == str(workdir / "sparse_model.npz")
  cfg.seed = 1
  train.train_and_evaluate(cfg, str(workdir), overwrite=True)
  assert not (workdir / "sparse_model.npz").exists()
  result = run_script(ROOT / "experiments" / "export.py", f"--workdir={tmp_path / 'none'}")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    f"error: No trained run in {str(tmp_path / 'none')!r}: it needs config.json, mask.npz and "
    f"checkpoints/. Train one with python experiments/train.py --workdir {tmp_path / 'none'}."
  ]


@pytest.mark.attack
def test_the_export_trusts_the_checkpoint_and_holds_the_workdir(tmp_path, tiny_mnist):
  """Another run's (or a cut-off) mask.npz is refused, not exported; the training command
  writes it afresh. The CLI waits for no one: a workdir in use is one line, and so is an
  --output the report would collide with."""
  workdir = tmp_path / "run"
  cfg = tiny_config(tiny_mnist, checkpoint_every_steps=0)
  train.train_and_evaluate(cfg, str(workdir))
  good = (workdir / "mask.npz").read_bytes()
  masks.save_mask(workdir / "mask.npz", jax.tree.map(np.logical_not, train.read_run(workdir).mask))
  with pytest.raises(ValueError, match=r"mask\.npz is not the mask of the checkpoint of step 18"):
    export.export_workdir(workdir)
  (workdir / "mask.npz").write_bytes(good[: len(good) // 2])
  with pytest.raises(ValueError, match=r"mask\.npz cannot be read as this run's mask"):
    export.export_workdir(workdir)
  assert not (workdir / "sparse_model.npz").exists()
  train.train_and_evaluate(cfg, str(workdir))  # As the message says: the file comes back.
  assert (workdir / "mask.npz").read_bytes() == good
  # config.json cut off, or another run's; summary.json empty: each named.
  config_text = (workdir / "config.json").read_text()
  (workdir / "config.json").write_text(config_text[:40])
  with pytest.raises(ValueError, match=r"config\.json cannot be read as a run's config .* again"):
    export.export_workdir(workdir)
  (workdir / "config.json").write_text(json.dumps({**json.loads(config_text), "seed": 1}))
  with pytest.raises(ValueError, match=r"config\.json is not the config of the checkpoint of step"):
    export.export_workdir(workdir)
  (workdir / "config.json").write_text(config_text)
  summary_text = (workdir / "summary.json").read_text()
  (workdir / "summary.json").write_text("")
  with pytest.warns(UserWarning, match=r"summary\.json cannot be read .* counts as unfinished"):
    assert not train.read_run(workdir).finished
  (workdir / "summary.json").write_text(summary_text)

  script = ROOT / "experiments" / "export.py"
  result = run_script(script, f"--workdir={workdir}", f"--output={tmp_path / 'model.json'}")
  assert result.returncode == 1 and result.stderr.strip().splitlines() == [
    f"error: The export's path must end in .npz (its report is the .json beside it): "
    f"{str(tmp_path / 'model.json')!r}."
  ]
  with train.lock_workdir(workdir):
    result = run_script(script, f"--workdir={workdir}", "--nocheck")
  assert result.returncode == 1
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith(f"error: Workdir {str(workdir)!r} is in use by pid {os.getpid()} on ")
  assert not (workdir / "sparse_model.npz").exists()
  result = run_script(script, f"--workdir={workdir}", "--nocheck")
  assert result.returncode == 0, result.stderr
  assert json.loads((workdir / "sparse_model.json").read_text())["test"] is None
