"""The published evaluation protocols' metrics, in NumPy (host side, after the model ran):

- top_k_accuracy: a hit when the label is among the k highest logits (ImageNet top-5);
- average_precision / mean_average_precision: AudioSet-style multi-label mAP, the mean over
  classes of the area under each class's precision-recall steps, classes without a positive
  in the split skipped (as the published AudioSet and AudioMAE code does: their AP is
  undefined);
- esc50_fold / fold_splits / fold_mean: ESC-50's 5-fold cross-validation, folds read from the
  file names (`{fold}-{freesound id}-{take}-{class}.wav`).

Multi-caption retrieval (COCO / Flickr30k, R@k both ways) is mmjax.evaluate.retrieval's.
"""
import os
import re
import statistics

import numpy as np

from mmjax.errors import UserError

ESC50_FOLDS = 5
_ESC50_NAME = re.compile(r"^(\d+)-(\d+)-([A-Z])-(\d+)\.(wav|ogg|flac)$")


def top_k_accuracy(logits_nc, labels_n, ks=(1, 5)):
  """{k: fraction of rows whose label is among their k highest logits}. Ties at the k-th
  logit count against the row (the label must be strictly within the top k by a stable
  ordering)."""
  logits_nc, labels_n = np.asarray(logits_nc), np.asarray(labels_n)
  order = np.argsort(-logits_nc, axis=1, kind="stable")
  rank = np.argmax(order == labels_n[:, None], axis=1)  # Position of the label.
  return {k: float(np.mean(rank < k)) for k in ks}


def average_precision(scores_n, targets_n):
  """Average precision of one class: sum over the distinct score thresholds, from the
  highest, of (recall gained) x (precision there). Rows with equal scores enter together.
  NaN for a class without positives."""
  scores_n, targets_n = np.asarray(scores_n, np.float64), np.asarray(targets_n, bool)
  positives = targets_n.sum()
  if positives == 0:
    return float("nan")
  order = np.argsort(-scores_n, kind="stable")
  s, t = scores_n[order], targets_n[order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # Each threshold's last row.
  tp = np.cumsum(t)[last]
  precision = tp / (last + 1)
  recall_gain = np.diff(np.r_[0, tp]) / positives
  return float(np.sum(recall_gain * precision))


def mean_average_precision(scores_nc, targets_nc):
  """(mAP over the classes with a positive, number of classes counted)."""
  scores_nc, targets_nc = np.asarray(scores_nc), np.asarray(targets_nc, bool)
  if scores_nc.shape != targets_nc.shape:
    raise ValueError(f"scores {scores_nc.shape} and targets {targets_nc.shape} differ")
  aps = [average_precision(scores_nc[:, c], targets_nc[:, c])
         for c in range(scores_nc.shape[1]) if targets_nc[:, c].any()]
  return (float(np.mean(aps)) if aps else float("nan")), len(aps)


def esc50_fold(path):
  """(fold 1..5, class 0..49) of an ESC-50 clip from its file name; UserError naming the file
  when it does not follow the dataset's pattern."""
  name = os.path.basename(path)
  m = _ESC50_NAME.match(name)
  if not m or not 1 <= int(m[1]) <= ESC50_FOLDS:
    raise UserError(f"{path}: not an ESC-50 file name ('{{fold 1-5}}-{{freesound id}}-"
                    "{take}-{class}.wav', e.g. 1-100032-A-0.wav).")
  return int(m[1]), int(m[4])


def fold_splits(folds_n):
  """[(fold, train row indices, test row indices)] for leave-one-fold-out cross-validation,
  folds in increasing order."""
  folds_n = np.asarray(folds_n)
  return [(f, np.flatnonzero(folds_n != f), np.flatnonzero(folds_n == f))
          for f in np.unique(folds_n)]


def fold_mean(accuracy_by_fold):
  """(mean, standard deviation) of per-fold accuracies ({fold: accuracy}): the number ESC-50
  papers report is the mean."""
  values = list(accuracy_by_fold.values())
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
