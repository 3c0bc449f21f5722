"""Every sweep file (configs/ablations/*.py, at this machine's scale and a pod's, and
tests/sweep_with_claims.py, the sweep tests' own) is valid without training: it loads,
spec.check passes (every override key exists, every point's and baseline's stages pass the
config checks, every metric comes from a stage and an evaluator or objective that stage runs),
it declares its paper's claims, each naming points and a metric of the sweep, it runs at least
3 seeds, and its docstring gives the command and what the pod scale costs. The planner's cost
(`--cost`) agrees with the equal-compute steps the fusion sweep hard-codes."""
import contextlib
import io
import pathlib
import re

import pytest

from configs.ablations import fusion
from mmjax import sweep as sweep_lib
from mmjax.sweep import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
ABLATIONS = sorted((REPO / "configs" / "ablations").glob("*.py"))
SWEEP_FILES = ([(p, "") for p in ABLATIONS] + [(p, ":pod") for p in ABLATIONS]
               + [(REPO / "tests" / "sweep_with_claims.py", "")])


@pytest.mark.parametrize("path,scale", SWEEP_FILES, ids=lambda p: getattr(p, "stem", p))
def test_sweep_file_is_valid_and_declares_its_claims(path, scale):
  sweep = sweep_lib.load_sweep(str(path) + scale)
  sweep_lib.check(sweep, str(path) + scale)
  names = {name for name, *_ in sweep_lib.spec.entries(sweep)}
  assert sweep.claims, f"{path.name}: no claims (Sweep(claims=(Claim(...), ...)))"
  for claim in sweep.claims:
    greater, than = claim.sides
    assert set(greater + than) <= names, (claim.text, sorted(names))
    assert claim.metric in sweep_lib.spec.columns(sweep), claim.text
  assert len(sweep.seeds) >= 3, f"{path.name}: {len(sweep.seeds)} seeds"
  doc = sweep_lib.spec._module(str(path), "doc").__doc__ or ""  # pylint: disable=protected-access
  assert f"--sweep={path.relative_to(REPO)}" in doc
  if scale:
    assert re.search(r"accelerator-hours", doc), f"{path.name}: the pod scale's cost"


def test_the_planner_counts_the_equal_compute_steps_of_the_fusion_sweep(tmp_path):
  """`--cost` traces each point's step: FLIP 50 % does CLIP's work per example divided by
  fusion.EQUAL_COMPUTE (within 0.1 %), so its equal-compute point does CLIP's work."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert cli.main(["--sweep=configs/ablations/fusion.py", "--points=3,4,5", "--seeds=0",
                     f"--workdir={tmp_path}", "--cost"]) == 0
  text = out.getvalue()
  per_example = {name: float(v.replace(",", "")) for name, v in re.findall(
      r"^  (.+?): .* pretrain ([\d,.]+) MFLOP/example", text, re.M)}
  total = {name: float(v) for name, v in re.findall(
      r"^  (.+?): .* = ([\d.e+]+) FLOP$", text, re.M)}
  assert sorted(per_example) == ["CLIP", "FLIP 50 %, equal compute", "FLIP 50 %, equal examples"]
  ratio = per_example["CLIP"] / per_example["FLIP 50 %, equal examples"]
  assert ratio == pytest.approx(fusion.EQUAL_COMPUTE[""], rel=1e-3)
  assert total["FLIP 50 %, equal compute"] == pytest.approx(total["CLIP"], rel=2e-3)
  assert "accelerator-hours" in text
