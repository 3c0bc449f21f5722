"""The published protocols' metrics (mmjax.evaluate.protocols) against scikit-learn."""
import numpy as np
import pytest
from sklearn import metrics as skm

from mmjax.errors import UserError
from mmjax.evaluate import protocols


def test_top_k_accuracy_matches_sklearn():
  rng = np.random.default_rng(0)
  logits, labels = rng.normal(size=(300, 12)), rng.integers(0, 12, 300)
  ours = protocols.top_k_accuracy(logits, labels, ks=(1, 2, 5, 11))
  for k, value in ours.items():
    assert value == pytest.approx(
        skm.top_k_accuracy_score(labels, logits, k=k, labels=np.arange(12)), abs=1e-12)
  assert ours[1] < ours[5] < ours[11]


@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_matches_sklearn(ties):
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(500, 7))
  if ties:  # Equal scores enter together, as sklearn's thresholds do.
    scores = np.round(scores, 1)
  targets = rng.random((500, 7)) < np.linspace(0.02, 0.5, 7)
  for c in range(7):
    assert protocols.average_precision(scores[:, c], targets[:, c]) == pytest.approx(
        skm.average_precision_score(targets[:, c], scores[:, c]), abs=1e-12)


def test_map_skips_classes_without_positives():
  rng = np.random.default_rng(2)
  scores, targets = rng.normal(size=(200, 5)), rng.random((200, 5)) < 0.3
  targets[:, 3] = False  # Absent from this split: its AP is undefined, left out.
  value, counted = protocols.mean_average_precision(scores, targets)
  present = [c for c in range(5) if c != 3]
  assert counted == 4
  assert value == pytest.approx(skm.average_precision_score(
      targets[:, present], scores[:, present], average="macro"), abs=1e-12)
  assert np.isnan(protocols.average_precision(scores[:, 3], targets[:, 3]))


def test_esc50_folds_from_file_names():
  names = [f"{f}-{1000 + i}-{'AB'[i % 2]}-{i % 50}.wav" for f in range(1, 6) for i in range(8)]
  folds, classes = zip(*(protocols.esc50_fold(f"audio/{n}") for n in names))
  assert sorted(set(folds)) == [1, 2, 3, 4, 5] and classes[:3] == (0, 1, 2)
  splits = protocols.fold_splits(folds)
  assert [f for f, _, _ in splits] == [1, 2, 3, 4, 5]
  for f, train, test in splits:  # Leave-one-fold-out: disjoint, complete.
    assert set(np.asarray(folds)[test]) == {f} and f not in set(np.asarray(folds)[train])
    assert len(train) + len(test) == len(names)
  assert protocols.fold_mean({1: 0.8, 2: 0.9}) == pytest.approx((0.85, 0.0707106781))
  for bad in ("1-100032-A.wav", "6-100032-A-0.wav", "clip.wav"):
    with pytest.raises(UserError, match="not an ESC-50 file name"):
      protocols.esc50_fold(bad)


def test_prompt_files_give_their_templates(tmp_path):
  """zero_shot's templates: the shipped CLIP ImageNet set (80, each with one '{}'), a file of
  one's own (comments and blank lines left out), and a bad line named by its number."""
  from mmjax.evaluate import zero_shot  # pylint: disable=g-import-not-at-top
  clip80 = zero_shot.read_templates("configs/prompts/clip_imagenet.txt", "t")
  assert len(clip80) == 80 and clip80[0] == "a bad photo of a {}."
  path = tmp_path / "prompts.txt"
  path.write_text("# mine\n\na photo of a {}.\n  a drawing of the {}.  \n")
  assert zero_shot.read_templates(str(path), "t") == ("a photo of a {}.",
                                                       "a drawing of the {}.")
  assert zero_shot.read_templates(("a {}",), "t") == ("a {}",)
  path.write_text("a photo of a {}.\nno slot here\n")
  with pytest.raises(UserError, match="line 2: 'no slot here'"):
    zero_shot.read_templates(str(path), "config.evals.zero_shot.templates")
  with pytest.raises(UserError, match="no such prompt file"):
    zero_shot.read_templates("configs/prompts/missing.txt", "t")
