"""NumPy references for the evaluators' metrics, so that tests recompute what a run reported
instead of checking that it is a number in range."""
import numpy as np


def check_recall(reported, sims_qc, hit_qc, k, *, eps=1e-6, what="", max_in_doubt=0.1):
  """Asserts `reported` is the fraction of queries (rows of sims_qc) with a hit (hit_qc) among
  their k most similar candidates: R@k, or top-1 accuracy with classes as candidates and k=1.

  A reference that embeds in other batch shapes than the evaluator may get its similarities
  only up to float noise, and a barely trained model's can be 1e-8 apart: a candidate within
  `eps` of a query's best hit may rank on either side of it, so that query may go either way.
  At most a fraction `max_in_doubt` of the queries may be in doubt (else the check would be
  vacuous, e.g. for embeddings collapsed to one point).
  """
  sims_qc, hit_qc = np.asarray(sims_qc, np.float64), np.asarray(hit_qc, bool)
  best_hit_q1 = np.where(hit_qc, sims_qc, -np.inf).max(1, keepdims=True)
  misses_surely_above = (~hit_qc & (sims_qc > best_hit_q1 + eps)).sum(1)
  misses_maybe_above = (~hit_qc & (sims_qc >= best_hit_q1 - eps)).sum(1)
  surely_hit, maybe_hit = misses_maybe_above < k, misses_surely_above < k
  lowest, highest = surely_hit.mean(), maybe_hit.mean()
  assert lowest - 1e-9 <= reported <= highest + 1e-9, (
      f"{what}: reported {reported}, NumPy says {lowest}" +
      (f" to {highest} (near-ties)" if highest > lowest else ""))
  assert (maybe_hit & ~surely_hit).mean() <= max_in_doubt, (
      f"{what}: {(maybe_hit & ~surely_hit).sum()} of {len(hit_qc)} queries are near-ties")


def image_caption_retrieval(z_image_ne, z_text_ne, image_ids):
  """The standard image-caption retrieval protocol (COCO Karpathy test: 5k images, 25k
  captions) from N rows of (image, caption), an image on as many rows as it has captions,
  rows of one image sharing its image_id: {direction: (sims_qc, hit_qc)} for check_recall.
  text_to_image: each caption against the distinct images, a hit being its own;
  image_to_text: each distinct image against every caption, a hit being any of its own."""
  ids, first = np.unique(image_ids, return_index=True)
  images_me = np.asarray(z_image_ne)[first]
  own_nm = np.asarray(image_ids)[:, None] == ids[None, :]  # Caption n belongs to image m.
  return {"text_to_image": (np.asarray(z_text_ne) @ images_me.T, own_nm),
          "image_to_text": (images_me @ np.asarray(z_text_ne).T, own_nm.T)}
