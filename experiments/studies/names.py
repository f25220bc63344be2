"""How tables, figures and RESULTS.md name the models, datasets, criteria, optimizers and inits."""

MODELS = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe"}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
CRITERIA = {
  "snip": "SNIP",
  "random": "random",
  "magnitude": "magnitude",
  "grasp": "GraSP",
  "synflow": "SynFlow",
  "iterative_snip": "iterative SNIP",
}
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam"}
#: The paper's names of the initialisers (config.init), in the order of its ablation table.
INITS = {"normal": "RN", "truncated_normal": "TN", "vs_x": "VS-X", "vs_h": "VS-H"}
