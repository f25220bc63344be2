"""The input pipeline: batches per second it delivers vs what the train step consumes.

The pipeline is the train loop's own, :func:`snip_jax.data.train_batches`: shuffled batches
gathered from the normalised split in memory, plus the paper's flips and translations for
CIFAR-10, as NumPy arrays. The consumer is the masked jitted train step called on a NumPy batch,
as the train loop calls it: the copy to the device happens in that call and is counted there.
(For the record, ``jax.device_put`` of one batch is timed too: on this CPU it costs ~0.1 ms
per array whatever its size, a dispatch cost.) Each round times as many batches as steps.

* Fashion-MNIST, batch 100: the real training split; consumer LeNet-300-100, our fastest step.
* CIFAR-10, batch 128, with augmentation: CIFAR-10 is not available offline here, so the
  images are ``tfds.testing.mock_data``'s random ones (the pipeline's cost does not depend on
  the pixel values); consumer VGG-D.

Goal: the pipeline delivers at least 5x the batches the step consumes.
"""

from __future__ import annotations

import tempfile

import jax

from benchmarks import common
from snip_jax import data, train, xla

TITLE = "Input pipeline: batches delivered vs consumed"
#: (dataset, batch size, consumer model, consumer input shape or None, batches per round,
#: rounds, mock examples).
SETTINGS = {
  False: (
    ("fashion_mnist", 100, "lenet300", None, 50, 10, None),
    ("cifar10", 128, "vgg_d", None, 2, 3, 2560),
  ),
  True: (
    ("fashion_mnist", 100, "lenet300", None, 2, 2, None),
    ("cifar10", 128, "lenet300", (32, 32, 3), 2, 2, 256),
  ),
}


def _cifar10_mock_split(num_examples: int) -> data.Split:
  """The training split of mock CIFAR-10 (random images), normalised as the loop does."""
  import tensorflow_datasets as tfds

  with (
    tempfile.TemporaryDirectory() as data_dir,
    tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE),
  ):
    images, labels = data.read_prepared_split("cifar10", "train", data_dir)
  return data.Split(data.normalise(images), labels)


def run(quick: bool) -> dict:
  rows = [_measure(*setting) for setting in SETTINGS[quick]]
  return {"title": TITLE, "description": __doc__, "rows": rows}


def _measure(dataset, batch_size, model, shape, batches, rounds, mock) -> dict:
  """One row: the pipeline of ``dataset`` against the step of ``model``."""
  if mock is None:
    split = data.load_dataset(dataset)[0]["train"]
    source = "real training split"
  else:
    split = _cifar10_mock_split(mock)
    source = f"tfds mock data, {mock} examples"
  augment = dataset == "cifar10"
  epoch = 0
  stream = iter(())

  def next_batch():
    nonlocal stream, epoch
    batch = next(stream, None)
    if batch is None:  # A new epoch, as the train loop starts one.
      epoch += 1
      stream = data.train_batches(split, batch_size, seed=epoch, augment=augment)
      batch = next(stream)
    return batch

  work = common.Workload(model, batch_size, input_shape=shape)
  step = xla.jit(train.train_step, donate_argnums=0)
  host_batch = jax.device_get(work.batch)
  fns = {
    "pipeline": lambda: [next_batch() for _ in range(batches)],
    "step": common.stepper(step, work.masked_state(), host_batch, batches),
    "device_put": lambda: [jax.device_put(host_batch) for _ in range(batches)],
  }
  times = common.time_interleaved(fns, rounds)
  per_batch = {k: [t / batches for t in v] for k, v in times.items()}
  return common.row(
    f"delivered / consumed, {dataset} batch {batch_size}"
    + (" with augmentation" if augment else "")
    + f" ({source}), consumer {model}",
    common.ratio_stats(per_batch["step"], per_batch["pipeline"]),
    5.0,
    higher_is_better=True,
    seconds={
      "pipeline, per batch": common.stats(per_batch["pipeline"]),
      "step": common.stats(per_batch["step"]),
      "device_put of a batch": common.stats(per_batch["device_put"]),
    },
  )
