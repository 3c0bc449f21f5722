"""Retrieval metrics on hand-checkable embeddings; which evaluators a dataset can run."""
import dataclasses

import numpy as np
import pytest

import numpy_metrics
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


def test_several_captions_per_image_by_the_standard_protocol():
  """Three images with two or three captions each, one caption text shared by two images, read
  as a row per caption (the image repeated on each of its rows, as coco_captions is evaluated).
  Each image is one candidate: text->image ranks each caption against the 3 images,
  image->text ranks the 7 captions for each image, a hit when any of its own is within k.
  Equal to the NumPy reference, and to the counts by hand below."""
  angle = lambda deg: [np.cos(np.radians(deg)), np.sin(np.radians(deg))]
  images = {0: 0, 1: 90, 2: 180}  # Image id -> its angle.
  # (image id, caption angle); rows 1 and 2 are the same caption of two images.
  rows = [(0, 10), (0, 40), (1, 40), (1, 100), (2, 230), (2, 120), (1, 160)]
  image_ids = np.array([i for i, _ in rows])
  z = {"image": np.array([angle(images[i]) for i, _ in rows]),
       "text": np.array([angle(t) for _, t in rows])}
  got = retrieval.scores(retrieval.Rows(z, labels=image_ids, has={m: np.ones(7, bool) for m in z},
                                        image_ids=image_ids), ks=(1, 2))
  # text->image, nearest image first: 10° A, 40° A (B 50° away), 40° of B: A then B,
  # 100° B, 230° C, 120° of C: B then C, 160° of B: C then B. R@1 4/7, R@2 7/7.
  # image->text: A (0°): 10° its own; B (90°): 100° its own; C (180°): 160° (B's), then 230°.
  # Rows instead of images (each image counted on each of its rows) would give text->image
  # R@2 4/7: the two rows of A crowd B out of the 40° caption's top 2.
  assert got == {("image", "text"): {1: 2 / 3, 2: 1.0}, ("text", "image"): {1: 4 / 7, 2: 1.0}}
  reference = numpy_metrics.image_caption_retrieval(z["image"], z["text"], image_ids)
  for (a, b), recall in got.items():
    for k, r in recall.items():
      numpy_metrics.check_recall(r, *reference[f"{a}_to_{b}"], k, eps=0.0, what=f"{a}_to_{b}")


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
