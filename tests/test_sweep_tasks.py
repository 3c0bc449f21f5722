"""A sweep's tasks and what their results record: baselines run their downstream stages alone,
from random init; each task is keyed by the hash of its resolved configs (the same on another
machine, another for another config), and a committed report's record is adopted only when its
hash matches, a folder that ran another config is refused; each result records the commit and
whether the tree was dirty; `compare` refuses an empty reference."""
import json
import os
import pathlib
import re
import subprocess

import pytest

from mmjax import provenance
from mmjax import sweep as sweep_lib
from mmjax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
WITH_CLAIMS = str(REPO / "tests" / "sweep_with_claims.py")
PROBE = "probe/eval/classification/accuracy"


@pytest.fixture(name="sweep", scope="module")
def _sweep():
  return sweep_lib.load_sweep(WITH_CLAIMS)


def test_a_baseline_runs_its_downstream_stages_alone(sweep, tmp_path):
  """No pretraining stage, no init_from (random init), the baseline's overrides on every
  downstream stage; its result has the downstream metrics and says which baseline it is."""
  all_tasks = sweep_lib.tasks(sweep, tmp_path)
  (task,) = [t for t in all_tasks if t.point == "baseline:random_init_lr2x" and t.seed == 1]
  assert task.folder == str(tmp_path / "baseline_random_init_lr2x" / "seed1")
  assert list(task.stages) == list(sweep.downstream) and task.baseline == "random_init_lr2x"
  (cmd,) = task.stages.values()
  assert "--config.optimizer.lr=0.02" in cmd and "--config.seed=1" in cmd
  assert not any(a.startswith("--config.init_from") for a in cmd)

  total = task.total_steps["probe"]
  os.makedirs(os.path.join(task.folder, "probe"))
  with open(os.path.join(task.folder, "probe", "metrics.jsonl"), "w", encoding="utf-8") as f:
    f.write(json.dumps({"step": total, "eval/classification/accuracy": 0.3}) + "\n")
  sweep_lib.finish(sweep, task)
  record = json.loads((pathlib.Path(task.folder) / "result.json").read_text())
  assert record["metrics"] == {PROBE: 0.3} and record["baseline"] == "random_init_lr2x"
  assert record["point"] == "baseline:random_init_lr2x" and task.done


def test_the_config_hash_follows_the_config_not_the_machine(sweep, tmp_path):
  """Another workdir (init_from elsewhere) or data directory: the same hash. Another seed,
  another override, a runlocal run: another."""
  here = sweep_lib.tasks(sweep, tmp_path / "a")
  there = sweep_lib.tasks(sweep, tmp_path / "b", extra={"data.dir": str(tmp_path / "data")})
  assert [t.config_hash for t in here] == [t.config_hash for t in there]
  assert len({t.config_hash for t in here}) == len(here)
  lr = sweep_lib.tasks(sweep, tmp_path / "a", extra={"optimizer.warmup_steps": 7})
  runlocal = sweep_lib.tasks(sweep, tmp_path / "a", runlocal=True)
  for other in (lr, runlocal):
    assert all(a.config_hash != b.config_hash for a, b in zip(here, other))


def test_a_switch_added_at_its_old_behaviour_keeps_the_hash(sweep, tmp_path):
  """Keys added to the config later (spec.ADDED_DEFAULTS) do not change the hash of results
  reported before them while they keep their default; another value does."""
  from mmjax.sweep import spec  # pylint: disable=g-import-not-at-top
  configs = {stage: spec.stage_config(*args) for stage, args in
             spec.stage_configs(sweep, sweep.points[0], seed=0).items()}
  stripped = {}
  for stage, config in configs.items():
    config = config.copy_and_resolve_references()
    with config.unlocked():
      for key in spec.ADDED_DEFAULTS:
        parent, _, leaf = key.rpartition(".")
        if leaf in config[parent]:
          del config[parent][leaf]
    stripped[stage] = config
  assert spec.config_hash(stripped) == spec.config_hash(configs)
  changed = {s: c.copy_and_resolve_references() for s, c in configs.items()}
  changed[next(iter(changed))].model.gelu = "exact"
  assert spec.config_hash(changed) != spec.config_hash(configs)


def test_location_keys_are_the_configs_path_keys():
  from mmjax.train import validate  # pylint: disable=g-import-not-at-top
  assert set(sweep_lib.spec.LOCATION_KEYS) == set(validate.PATH_KEYS)


def _report(tmp_path, records):
  report = str(tmp_path / "docs" / "with_claims")
  os.makedirs(os.path.dirname(report), exist_ok=True)
  with open(report + ".jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  return report


def test_a_committed_report_is_adopted_only_where_the_config_matches(sweep, tmp_path):
  """A sweep committed half-way (REPORT.jsonl) resumes elsewhere: the records whose config hash
  is the task's are done and in the table; one whose point's config changed since, and one
  from an older runner (no hash), are run again, and the runner says so."""
  first = sweep_lib.tasks(sweep, tmp_path / "a")
  records = [dict(point=t.point, overrides=t.overrides, seed=t.seed, config_hash=t.config_hash,
                  commit="c", seconds=1.0, metrics={PROBE: 0.5 + 0.1 * i})
             for i, t in enumerate(first[:5])]
  records[3]["config_hash"] = "0123456789abcdef"  # mask75 seed 0, under another config.
  del records[4]["config_hash"]  # mask75 seed 1, from an older runner.
  report = _report(tmp_path, records)

  fresh = sweep_lib.tasks(sweep, tmp_path / "b")  # Another machine: an empty workdir.
  said = []
  assert sweep_lib.adopt_reported(fresh, report, log=said.append) == 3
  assert [t.done for t in fresh] == [True] * 3 + [False] * (len(fresh) - 3)
  assert said == [
      f"sweep: {report}.jsonl holds mask75 seed 0, but its config changed since (hash "
      f"0123456789abcdef, now {fresh[3].config_hash}): running it again.",
      f"sweep: {report}.jsonl holds mask75 seed 1, but it has no config hash (an older "
      "runner): running it again."]
  assert len(sweep_lib.collect(sweep, fresh, tmp_path / "b", report)) == 3
  table = open(report + ".md", encoding="utf-8").read()
  assert "3 of 12 point x seed runs done, at commit `c`" in table
  assert re.search(r"^\| mask25 \| 0\.25 \| 3 \|  \| 0\.600 ± 0\.100 \|$", table, re.M), table


def test_a_run_another_report_holds_with_the_same_configs_is_taken_from_there(sweep, tmp_path):
  """Two sweeps with the same downstream stages share their baselines: a baseline task is
  found by its config hash in another report beside this one (the same configs, the same
  seed), recorded under this sweep's name with where it came from; a point whose configs
  differ (another sweep's mask75 at another seed's hash) is not."""
  first = sweep_lib.tasks(sweep, tmp_path / "a")
  base = [t for t in first if t.point == "baseline:random_init"]
  other = str(tmp_path / "docs" / "other_sweep")
  os.makedirs(os.path.dirname(other))
  with open(other + ".jsonl", "w", encoding="utf-8") as f:
    for t in base:
      f.write(json.dumps(dict(point=t.point, overrides={}, seed=t.seed, baseline="random_init",
                              config_hash=t.config_hash, commit="c", seconds=1.0,
                              metrics={PROBE: 0.25})) + "\n")
    f.write(json.dumps(dict(point="elsewhere", overrides={}, seed=0, config_hash="f" * 16,
                            commit="c", seconds=1.0, metrics={PROBE: 0.9})) + "\n")
  report = str(tmp_path / "docs" / "with_claims")  # Not written yet: a sweep's first run.
  fresh = sweep_lib.tasks(sweep, tmp_path / "b")
  said = []
  assert sweep_lib.adopt_reported(fresh, report, log=said.append) == 3
  assert [t.point for t in fresh if t.done] == ["baseline:random_init"] * 3
  assert said[0] == (f"sweep: baseline:random_init seed 0 ran with the same configs in "
                     f"{other}.jsonl: taken from there.")
  records = sweep_lib.collect(sweep, fresh, tmp_path / "b", report)
  assert {r["adopted_from"] for r in records} == {"other_sweep.jsonl"}
  assert [r["seed"] for r in records] == [0, 1, 2]
  # The adopted records are this sweep's own now: a second sweep adopting from this one
  # names the report that ran them.
  third = sweep_lib.tasks(sweep, tmp_path / "c")
  os.remove(other + ".jsonl")
  sweep_lib.adopt_reported(third, str(tmp_path / "docs" / "third"), log=said.append)
  assert {json.loads((pathlib.Path(t.folder) / "result.json").read_text())["adopted_from"]
          for t in third if t.done} == {"other_sweep.jsonl"}


def test_old_records_without_the_new_fields_still_load(sweep, tmp_path):
  """A report written before config hashes, dirty flags and baselines: the table reads it."""
  first = sweep_lib.tasks(sweep, tmp_path / "a")
  old = [dict(point=t.point, overrides=t.overrides, seed=t.seed, commit="c", seconds=1.0,
              metrics={PROBE: 0.5}) for t in first[:2]]
  table = sweep_lib.markdown(sweep, old, len(first))
  assert "2 of 12 point x seed runs done, at commit `c`;" in table
  for path in sorted((REPO / "docs" / "ablations").glob("*.jsonl")):  # The shipped ones.
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records and all("config_hash" not in r or r["config_hash"] for r in records)


@pytest.mark.parametrize("what", ["task.json", "result.json"])
def test_a_folder_that_ran_another_config_is_refused(sweep, tmp_path, what):
  """Its stages would be skipped as done and their results kept: the runner names the point,
  the seed and the folder instead."""
  (task,) = [t for t in sweep_lib.tasks(sweep, tmp_path) if t.point == "mask75" and t.seed == 2]
  os.makedirs(task.folder)
  (pathlib.Path(task.folder) / what).write_text(json.dumps(dict(
      config_hash="0123456789abcdef", point="mask75", seed=2, metrics={})))
  with pytest.raises(UserError, match=re.escape(
      f"mask75 seed 2: its config changed since {task.folder} ran it ({what}: config hash "
      f"0123456789abcdef, now {task.config_hash}); move that folder away")):
    sweep_lib.check_marked([task])


def test_provenance_says_whether_the_tree_is_dirty(tmp_path, monkeypatch):
  git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                  cwd=tmp_path, check=True, capture_output=True)
  monkeypatch.setattr(provenance, "_REPO", str(tmp_path))
  assert provenance.dirty() is None and provenance.commit() == "unknown"  # Not a checkout.
  git("init", "-q")
  (tmp_path / "docs").mkdir()
  (tmp_path / "a.py").write_text("x = 1\n")
  (tmp_path / "docs" / "r.md").write_text("table\n")
  git("add", "-A")
  git("commit", "-qm", "c")
  assert provenance.dirty() is False and len(provenance.commit()) == 10
  (tmp_path / "docs" / "r.md").write_text("new table\n")
  assert provenance.dirty() is True and provenance.dirty(ignore=("docs/",)) is False
  (tmp_path / "b.py").write_text("untracked\n")
  assert provenance.dirty(ignore=("docs/",)) is True


def test_compare_refuses_an_empty_reference(tmp_path, capsys):
  (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 1.0}) + "\n")
  empty = {"note": "", "rtol": 1e-3, "atol": 0.01, "train": {}, "final": {}}
  with pytest.raises(UserError, match="holds no values"):
    sweep_lib.compare(str(tmp_path), empty)
  (tmp_path / "empty.json").write_text(json.dumps(empty))
  assert sweep_lib.main(["compare", str(tmp_path), f"--reference={tmp_path / 'empty.json'}"]) == 2
  assert f"{tmp_path / 'empty.json'} holds no values" in capsys.readouterr().err
