"""Writes RESULTS.md, the figures and README's results blocks from the committed raw results.

  python experiments/make_results.py

Runs nothing: it reads ``results/{sweep,random_labels,mask_pictures,ablations,sparse_export}/``
(the raw files the experiment scripts write) and ``results/model_zoo/models.json``, redraws
every figure, and rewrites RESULTS.md and the blocks ``paper-results`` and ``sparse-export``
(between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``) in README.md, so that no number there
is typed by hand. The prose is ``experiments/studies/results_template.md``. ``--results`` and
``--output`` point it elsewhere (the tests render the ``--quick`` outputs this way).

This file only parses flags; the work is ``studies/results_doc.py``.
"""

from pathlib import Path

from absl import app, flags

import runs
from studies import results_doc

_RESULTS = flags.DEFINE_string("results", str(runs.ROOT / "results"), "Raw results directory.")
_OUTPUT = flags.DEFINE_string("output", str(runs.ROOT / "RESULTS.md"), "RESULTS.md to write.")
_README = flags.DEFINE_string(
  "readme", str(runs.ROOT / "README.md"), "README whose results blocks to rewrite ('' = none)."
)


def main(argv):
  del argv
  output = Path(_OUTPUT.value)
  results_doc.write(Path(_RESULTS.value), output, Path(_README.value) if _README.value else None)
  print(f"wrote {output}")


if __name__ == "__main__":
  app.run(main)
