"""Retrieval metrics on hand-checkable embeddings; which evaluators a dataset can run."""
import dataclasses

import numpy as np
import pytest

from mmjax import evaluate
from mmjax.data import loader
from mmjax.errors import NotApplicable
from mmjax.evaluate import retrieval
from mmjax.parallel import mesh as mesh_lib


def test_recall_at_k_by_hand():
  # Queries on the unit circle; candidates at known angles with known labels.
  angle = lambda deg: [np.cos(np.radians(deg)), np.sin(np.radians(deg))]
  candidates = np.array([angle(0), angle(10), angle(90), angle(180), angle(270)])
  candidate_labels = np.array([0, 1, 1, 2, 3])
  queries = np.array([angle(1), angle(8), angle(175), angle(300)])
  query_labels = np.array([0, 0, 3, 3])
  # Query 0: nearest is 0° (label 0): hit at 1.
  # Query 1: nearest is 10° (label 1), then 0° (label 0): miss at 1, hit at 2.
  # Query 2: 180° (2), 90° (1), 270° (3) ...: hit only from k=3.
  # Query 3: 270° (3): hit at 1.
  r = retrieval.recall_at_k(queries, candidates, query_labels, candidate_labels, ks=(1, 2, 3))
  assert r == {1: 0.5, 2: 0.75, 3: 1.0}


def test_table_lists_every_direction():
  metrics = {f"eval/retrieval/{d}/r@{k}": 0.5 for d in ("image_to_text", "text_to_image")
             for k in retrieval.KS}
  lines = retrieval.table(metrics).splitlines()
  assert [line.split()[0] for line in lines[1:]] == ["image_to_text", "text_to_image"]


def test_evaluators_that_cannot_run_are_switched_off_unless_asked_for(runlocal_config, capsys):
  """Unlabelled pairs without images (e.g. an own audio-text manifest): zero-shot (no class
  names) and reconstruction (no images) are switched off with a notice; retrieval stays. Named
  on the command line, the evaluator's own message is the error."""
  config = runlocal_config.copy_and_resolve_references()
  info = dataclasses.replace(loader.prepare(config.data), class_names=(), num_classes=0,
                             eval_modalities=("text", "audio"))
  mesh = mesh_lib.make_mesh(config.mesh)
  evaluators = evaluate.build(config, info, mesh)
  assert sorted(evaluators) == ["retrieval"]
  out = capsys.readouterr().out
  assert "switched off (cannot run on this dataset): config.evals.zero_shot " in out
  assert "has no class names" in out
  assert "switched off (cannot run on this dataset): config.evals.reconstruction " in out
  with pytest.raises(NotApplicable, match="config.evals.zero_shot .* has no class names"):
    evaluate.build(config, info, mesh, requested=("zero_shot",))
