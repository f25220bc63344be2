"""SNIP on LeNet-300-100, Fashion-MNIST, 98% sparsity: the default experiment.

Run it with:

  python experiments/train.py --config experiments/configs/lenet300_fashion_mnist.py

The paper (Lee et al. 2019, Table 1) reports 2.4% test error on MNIST at 98% sparsity (dense:
1.7%). Fashion-MNIST is a harder drop-in replacement; compare the gap to dense, not the error.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Model: a name in snip_jax.models.MODELS (e.g. 'lenet300', 'vgg_d', 'wrn_16_8', 'lstm_s').
  config.model = "lenet300"
  # Kernel initialiser: 'vs_h' (He, the paper's default), 'vs_x', 'normal', 'truncated_normal'.
  config.init = "vs_h"
  # Dataset: a name in snip_jax.data.DATASETS ('fashion_mnist', 'mnist', 'cifar10').
  config.dataset = "fashion_mnist"
  # TFDS data directory; unset = $TFDS_DATA_DIR or ~/tensorflow_datasets.
  config.data_dir = config_dict.placeholder(str)
  # Directory of the original files (IDX for MNIST-likes, the CIFAR-10 archive) to prepare the
  # dataset from when it is not prepared yet; unset = the dataset's default locations
  # (Debian's dataset-fashion-mnist for fashion_mnist).
  config.source_dir = config_dict.placeholder(str)
  # Train (and score) on the first `train_examples` training examples only; unset = all 54,000.
  config.train_examples = config_dict.placeholder(int)
  # Shuffle the training labels by one fixed permutation (the paper's memorisation experiment);
  # validation and test keep their true labels.
  config.random_labels = False
  # Random horizontal flips and translations by up to 4 pixels (the paper's CIFAR-10 recipe).
  config.augment = False

  # Pruning criterion, a name in snip_jax.criteria.CRITERIA: 'snip' (the paper), or the
  # baselines 'random', 'magnitude', 'grasp', 'synflow', 'iterative_snip'.
  config.criterion = "snip"
  # Fraction of prunable weights removed, in [0, 1); 0 trains the dense network.
  config.sparsity = 0.98
  # How the kept connections are spread over layers: 'global' (one top-k over all layers, the
  # paper's choice), 'uniform' (every layer at `sparsity`) or 'erk' (Erdos-Renyi-Kernel).
  config.distribution = "global"
  # Keep at least this many connections in every prunable layer (0: no guard against collapse).
  config.min_kept_per_layer = 0
  # Pruning rounds with an exponential schedule; unset = the criterion's default (1 for
  # one-shot criteria, 100 for 'synflow' and 'iterative_snip').
  config.prune_rounds = config_dict.placeholder(int)
  # Also prune biases (the authors' TF code does); by default only kernels are prunable.
  config.prune_biases = False
  # Examples per scoring batch (the paper's |D|), and how many batches the scores are averaged
  # over (one batch at a time in memory); iterated criteria draw fresh batches each round.
  config.score_batch_size = 100
  config.score_batches = 1
  # GraSP divides the logits by this temperature while scoring (the GraSP authors' value).
  config.grasp_temperature = 200.0
  # Score one initialisation, then train an independent re-initialisation under its mask (as
  # the authors' code does); False trains the scored weights.
  config.reinit_after_pruning = False
  # Batch norm while scoring: 'inference' normalises with the freshly initialised running
  # statistics (mean 0, variance 1), as the authors' code does; 'train' uses the statistics of
  # the scoring batch. No effect on models without batch norm.
  config.score_bn_mode = "inference"

  # Optimizer: 'sgd' (with config.momentum) or 'adam'. Paper: SGD, momentum 0.9.
  config.optimizer = "sgd"
  # Initial learning rate (paper: 0.1).
  config.learning_rate = 0.1
  # Momentum for 'sgd' (paper: 0.9); 0 gives plain SGD.
  config.momentum = 0.9
  # L2 weight decay on all params (paper: 5e-4); pruned weights stay exactly zero.
  config.weight_decay = 5e-4
  # Step decay: multiply the learning rate by lr_decay_factor every lr_decay_every_steps steps
  # (paper, MNIST: x0.1 every 25k iterations).
  config.lr_decay_factor = 0.1
  config.lr_decay_every_steps = 25_000
  # Epochs over the 54,000 training examples (540 steps each at batch 100): 100 epochs = 54k
  # steps, decayed at 25k and 50k; ~2.5 min on a 2-core CPU.
  config.num_epochs = 100
  # Training batch size (paper: 100 for MNIST).
  config.batch_size = 100
  # Batch size for evaluation on the validation and test splits.
  config.eval_batch_size = 1000

  # Seed of the run: init, scoring batch, data order.
  config.seed = 0
  # How often (in steps) the progress bar synchronises with the device.
  config.log_every_steps = 50
  # Checkpoints (in <workdir>/checkpoints) every this many steps, besides those after pruning, at
  # the end and on SIGTERM (0: only those); running the same command again resumes from the
  # newest. How many of the newest checkpoints are kept.
  config.checkpoint_every_steps = 1000
  config.checkpoint_keep = 3

  # Devices: the run is data-parallel over a mesh of the first `num_devices` devices (unset: all
  # of them), each taking an equal slice of every batch, so every batch size must be divisible
  # by it. `distributed`: call jax.distributed.initialize() first, in every process of a
  # multi-host run (a TPU pod slice); see README "Multiple devices and TPUs".
  config.num_devices = config_dict.placeholder(int)
  config.distributed = False
  return config
