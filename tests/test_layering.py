"""The package's shape: the packages in one order (ORDER), each importing only those below it;
no import cycle between mmjax modules; no module past 400 lines. Read from the source (ast),
nothing is imported."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 400
# The packages' order, bottom first: a package imports only those before it (docs/
# architecture.md draws it). The top-level modules of mmjax/ are floors of their own.
ORDER = ("mmjax", "mmjax.errors", "mmjax.paths", "mmjax.provenance", "mmjax.registry",
         "mmjax.modality",     # the modality protocol and registry
         "mmjax.data",         # datasets, preprocessing, the loader
         "mmjax.parallel",     # meshes, sharding, multi-process start-up
         "mmjax.models",       # tokenizers, the Transformer, masking, model registry
         "mmjax.objectives",   # losses
         "mmjax.modalities",   # the built-in modalities, over data and models
         "mmjax.interop",      # public checkpoints in and out
         "mmjax.evaluate",     # evaluators
         "mmjax.train",        # the run: trainer, step, checkpoints
         "mmjax.sweep",        # ablation sweeps over runs
         "mmjax.export",       # python -m mmjax.export: a run's checkpoint to transformers
         "mmjax.cli")          # main.py's command line


def _modules():
  """{module name: path} of every module under mmjax/."""
  out = {}
  for path in sorted((ROOT / "mmjax").rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _imports(path, modules, lazy=False):
  """The mmjax modules `path` imports at module level (with `lazy`, inside functions too:
  those do not make cycles at import time, but are dependencies all the same)."""
  found = set()
  tree = ast.parse(path.read_text())
  for node in (ast.walk(tree) if lazy else tree.body):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
    found |= {n for n in names if n in modules}
  return found


def _package(module):
  """The floor of ORDER that `module` is on."""
  return ".".join(module.split(".")[:2])


def test_packages_import_only_the_ones_below():
  """Every import between packages, lazy ones inside functions too, runs down ORDER: no loop
  between packages, nothing reaching up."""
  modules = _modules()
  assert sorted({_package(m) for m in modules}) == sorted(ORDER), "ORDER lists every package"
  up = []
  for m, path in modules.items():
    for d in _imports(path, modules, lazy=True):
      if ORDER.index(_package(d)) > ORDER.index(_package(m)):
        up.append(f"{m} imports {d}")
  assert not up, up


def test_no_import_cycle_between_modules():
  modules = _modules()
  graph = {m: _imports(p, modules) for m, p in modules.items()}
  # Depth-first search for a cycle (a package's __init__ counts as imported with it).
  state = {}

  def visit(m, stack):
    state[m] = "open"
    for d in sorted(graph[m]):
      if state.get(d) == "open":
        pytest.fail(f"import cycle: {' -> '.join(stack[stack.index(d):] + [d])}")
      if d not in state:
        visit(d, stack + [d])
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])


def test_no_module_over_400_lines():
  long = {str(p.relative_to(ROOT)): n for p in _modules().values()
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, long
