"""Reference curves: a finished run's train losses at some steps and its final metrics, and
comparing another run with them (`python -m mmjax.sweep compare|reference`)."""
import json
import math
import os

from mmjax.errors import UserError
from mmjax.sweep.runner import last_value


def reference_record(workdir, steps, metrics, rtol, atol, note=""):
  """A reference of a finished run: the train losses at `steps` (compared with relative
  tolerance `rtol`) and the final `metrics` (absolute tolerance `atol`)."""
  record = {"note": note, "rtol": rtol, "atol": atol, "train": {}, "final": {}}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f]
  for r in lines:
    losses = {k: v for k, v in r.items() if k == "train/loss" or k.startswith("train/loss/")}
    if r["step"] in steps and losses:
      record["train"][str(r["step"])] = losses
  for key in metrics:
    record["final"][key] = last_value(workdir, key)
  return record


def compare(workdir, reference, where="the reference"):
  """[(what, reference value, run value, ok)] for every number of `reference` (a dict as
  written by reference_record, with 'rtol' for train losses and 'atol' for final metrics).
  UserError if it holds no number (nothing to compare would pass anything)."""
  if not isinstance(reference, dict) or not any(
      reference.get("train", {}).values()) and not reference.get("final"):
    raise UserError(f"{where} holds no values (no train losses at any step and no final "
                    "metrics), so it cannot tell a run that matches from one that does not.")
  rows = []
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    by_step = {}
    for line in f:
      r = json.loads(line)
      by_step.setdefault(r["step"], {}).update(r)
  for step, losses in reference["train"].items():
    for key, want in losses.items():
      got = by_step.get(int(step), {}).get(key)
      ok = got is not None and math.isclose(got, want, rel_tol=reference["rtol"])
      rows.append((f"step {step} {key}", want, got, ok))
  for key, want in reference["final"].items():
    got = last_value(workdir, key)
    ok = got is not None and abs(got - want) <= reference.get("atol", 0.0) + 1e-12
    rows.append((f"final {key}", want, got, ok))
  return rows
