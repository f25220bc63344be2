"""The house rules that keep the code easy to change, checked on the source itself.

* ``snip_jax``'s imports run one way: the core (masks, selection, criteria, optim, models, data,
  ...) never imports the run machinery; inside ``snip_jax.train`` each module imports only those
  before it (config → build → steps → pruning → workdir → progress → metrics → loop); the
  packaged config files build on ``train.config``; ``snip_jax.export`` comes next and the
  command line (``snip_jax.cli``) last; and there is no import cycle anywhere.
* No module reaches another's underscore names: a seam another module needs is a public name.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "snip_jax"
#: The run machinery in import order: a module may import only modules of its rank or lower.
RANKS = {
  "snip_jax.train.recipes": 1,  # Plain data: the MNIST configs apply it.
  "snip_jax.train.config": 1,
  "snip_jax.train.build": 2,
  "snip_jax.train.steps": 3,
  "snip_jax.train.pruning": 4,
  "snip_jax.train.workdir": 5,
  "snip_jax.train.progress": 6,
  "snip_jax.train.metrics": 7,
  "snip_jax.train.loop": 8,
  "snip_jax.train": 9,  # The package re-exports all of the above.
}
EXPORT_RANK = 10
#: The command line drives everything.
CLI_RANK = 11


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def rank(module: str) -> int:
  if module == "snip_jax.export" or module.startswith("snip_jax.export."):
    return EXPORT_RANK
  if module == "snip_jax.cli":
    return CLI_RANK
  if module.startswith("snip_jax.configs."):  # Config files start from train.config's default.
    return RANKS["snip_jax.train.config"]
  return RANKS.get(module, 0)


def imported_modules(module: str) -> set[str]:
  """The ``snip_jax`` modules that ``module`` imports, anywhere in it (function bodies too);
  importing a package's name from itself (``from snip_jax import masks``) counts as the
  submodule, and the ancestors every import passes through do not count."""
  tree = ast.parse(MODULES[module].read_text())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        child = f"{node.module}.{alias.name}"
        found.add(child if child in MODULES else node.module)
  ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
  return {m for m in found if m in MODULES and m != module and m not in ancestors} - {"snip_jax"}


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_the_layout_knows_every_train_module():
  train = {m for m in MODULES if m == "snip_jax.train" or m.startswith("snip_jax.train.")}
  assert train == set(RANKS)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_one_way(module):
  higher = sorted(m for m in GRAPH[module] if rank(m) > rank(module))
  assert not higher, f"{module} (rank {rank(module)}) imports {higher}"


def test_no_import_cycle():
  done, stack = set(), []

  def visit(module):
    if module in stack:
      raise AssertionError(f"import cycle: {' -> '.join([*stack[stack.index(module) :], module])}")
    if module in done:
      return
    stack.append(module)
    for imported in sorted(GRAPH[module]):
      visit(imported)
    stack.pop()
    done.add(module)

  for module in sorted(GRAPH):
    visit(module)


def underscore_uses(path: Path) -> list[str]:
  """``module._name`` and ``from module import _name`` where ``module`` is one of ours."""
  tree = ast.parse(path.read_text())
  ours = ("snip_jax", "benchmarks", "experiments", "tests")
  local = {
    p.stem
    for folder in ("experiments", "tests", "benchmarks")
    for p in (ROOT / folder).glob("*.py")
  }
  modules = set()
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] in ours or alias.name in local:
          modules.add((alias.asname or alias.name).split(".")[0])
    elif isinstance(node, ast.ImportFrom) and node.module:
      top = node.module.split(".")[0]
      if top in ours or top in local:
        names = [a.name for a in node.names]
        found += [f"from {node.module} import {n}" for n in names if n.startswith("_")]
        modules.update(a.asname or a.name for a in node.names)
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and isinstance(node.value, ast.Name)
      and node.value.id in modules
      and node.attr.startswith("_")
      and not node.attr.startswith("__")
    ):
      found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
  return found


SOURCES = sorted(
  p
  for folder in ("snip_jax", "experiments", "benchmarks", "tests")
  for p in (ROOT / folder).rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path):
  assert underscore_uses(path) == []
