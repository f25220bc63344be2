"""How tables, figures and RESULTS.md name the models, datasets, criteria, optimizers and inits."""

MODELS = {
  "lenet300": "LeNet-300-100",
  "lenet5": "LeNet-5-Caffe",
  "lstm_s": "LSTM-s",
  "lstm_b": "LSTM-b",
  "gru_s": "GRU-s",
  "gru_b": "GRU-b",
}
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
#: The probes of ``studies.paper_mnist``: what each change to a reported recipe is called.
PROBES = {
  "no_weight_decay": "no weight decay",
  "vs_lecun": "LeCun-normal init (variance 1/fan-in)",
  "momentum": "momentum 0.9",
  "constant_20": "20 epochs at a constant learning rate",
}
#: The MNIST recipes of ``studies.paper_mnist``.
RECIPES = {
  "paper_text": "the paper's text",
  "authors_code": "the authors' code",
  "authors_code_text_schedule": "the authors' code at the text's schedule",
}
