"""The package's shape: no import cycle between mmjax modules, lower packages never import the
ones above them, and no module grows past 400 lines. Read from the source (ast), nothing is
imported."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 400
# Packages that must not import the ones listed (the training loop and the evaluators sit on
# top of everything else).
BELOW = {"mmjax.parallel": ("mmjax.train", "mmjax.evaluate"),
         "mmjax.objectives": ("mmjax.train", "mmjax.evaluate"),
         "mmjax.models": ("mmjax.train", "mmjax.evaluate", "mmjax.data"),
         "mmjax.data": ("mmjax.train", "mmjax.evaluate", "mmjax.models"),
         "mmjax.interop": ("mmjax.train", "mmjax.evaluate", "mmjax.data")}


def _modules():
  """{module name: path} of every module under mmjax/."""
  out = {}
  for path in sorted((ROOT / "mmjax").rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _imports(path, modules):
  """The mmjax modules `path` imports at module level (imports inside functions are lazy
  and do not make cycles at import time)."""
  found = set()
  for node in ast.parse(path.read_text()).body:
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
    found |= {n for n in names if n in modules}
  return found


def test_no_import_cycle_and_no_upward_import():
  modules = _modules()
  graph = {m: _imports(p, modules) for m, p in modules.items()}
  for package, forbidden in BELOW.items():
    for m, deps in graph.items():
      if m == package or m.startswith(package + "."):
        bad = sorted(d for d in deps if d.startswith(forbidden))
        assert not bad, f"{m} imports {bad}, above {package}"
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
