"""Every sweep file (configs/ablations/*.py, and tests/sweep_with_claims.py, the sweep tests'
own) is valid without training: it loads, spec.check passes (every override key exists, every
point's and baseline's stages pass the config checks, every metric comes from a stage and an
evaluator or objective that stage runs), it declares its paper's claims, each naming points and
a metric of the sweep, it runs at least 3 seeds, and its docstring gives the command."""
import pathlib

import pytest

from mmjax import sweep as sweep_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((REPO / "configs" / "ablations").glob("*.py")) + [
    REPO / "tests" / "sweep_with_claims.py"]


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_is_valid_and_declares_its_claims(path):
  sweep = sweep_lib.load_sweep(str(path))
  sweep_lib.check(sweep, str(path))
  names = {name for name, *_ in sweep_lib.spec.entries(sweep)}
  assert sweep.claims, f"{path.name}: no claims (Sweep(claims=(Claim(...), ...)))"
  for claim in sweep.claims:
    greater, than = claim.sides
    assert set(greater + than) <= names, (claim.text, sorted(names))
    assert claim.metric in sweep_lib.spec.columns(sweep), claim.text
  assert len(sweep.seeds) >= 3, f"{path.name}: {len(sweep.seeds)} seeds"
  doc = sweep_lib.spec._module(str(path), "doc").__doc__ or ""  # pylint: disable=protected-access
  assert f"--sweep={path.relative_to(REPO)}" in doc
