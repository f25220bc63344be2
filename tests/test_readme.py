"""The README's library example runs as written."""

import re
from pathlib import Path

import numpy as np

import snip_jax

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_prunes(capsys):
  text = README.read_text()
  section = text.split("## Use it in your own loop", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  assert len([line for line in code.splitlines() if line.strip()]) <= 15
  namespace = {}
  exec(compile(code, str(README), "exec"), namespace)

  params, mask = namespace["params"], namespace["mask"]
  assert snip_jax.sparsity(mask) == np.float64(1 - 5_324 / 266_200)
  assert snip_jax.sparsity(params) == snip_jax.sparsity(mask)  # Still exactly zero after a step.
  assert "total" in capsys.readouterr().out
