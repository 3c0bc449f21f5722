"""Standard TFDS datasets through their real TFDS builders, the loader and the op strings of
configs/pretrain_tfds.py, on tfds.testing.mock_data (random examples shaped by each builder's
features; nothing is downloaded): a short training run each."""
import itertools

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import numpy_metrics
from configs import pretrain_tfds
from mmjax.data import loader
from mmjax.data import standard
from mmjax.evaluate import reconstruction
from mmjax.evaluate import retrieval
from mmjax.train import metrics as metrics_lib
from mmjax.train import trainer


def _coco_captions(i):
  """Example i's captions: 5 to 7, as in COCO; images 0 and 1 share their first."""
  return [b"a photo" if j == 0 and i < 2 else f"a photo number {i} of kind {j}".encode()
          for j in range(5 + i % 3)]


def _coco_examples(builder, split, **kwargs):
  """coco_captions examples in its builder's feature structure. (mock_data's own random
  coco examples fail to encode: its nested 'captions' sequence gets unequal lengths.)"""
  del split, kwargs
  rng = np.random.default_rng(0)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top

  def example(i):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), np.uint8)).save(buf, format="PNG")
    captions = _coco_captions(i)
    return {"image": buf.getvalue(), "image/id": i, "image/filename": f"{i}.png",
            "captions": {"id": np.arange(len(captions)), "text": captions}, "objects": {}}
  assert "captions" in builder.info.features  # The real builder's features.
  return [example(i) for i in range(24)]


def test_every_caption_is_a_row_of_its_own_at_evaluation():
  """coco_captions' stored examples read for evaluation: a row per caption, labelled with its
  example (each image its own class: a caption's hits are its own image), whose image_id it
  shares; a stored label wins; an example without captions keeps one row, for the adapter to
  report. Datasets with one text per example are read as stored."""
  source = [{"image": b"0", "captions": {"id": np.arange(2), "text": np.array([b"a", b"b"])}},
            {"image": b"1", "captions": {"id": np.arange(0), "text": np.array([], object)}},
            {"image": b"2", "label": 7, "captions": {"id": np.arange(3),
                                                     "text": np.array([b"c", b"d", b"e"])}}]
  rows = standard.every_caption("coco_captions", source)
  assert len(rows) == 6
  got = [(r["image"], r["label"], r["image_id"], list(r["captions"]["text"]),
          list(r["captions"]["id"])) for r in (rows[i] for i in range(6))]
  assert got == [(b"0", 0, 0, [b"a"], [0]), (b"0", 0, 0, [b"b"], [1]), (b"1", 1, 1, [], []),
                 (b"2", 7, 2, [b"c"], [0]), (b"2", 7, 2, [b"d"], [1]),
                 (b"2", 7, 2, [b"e"], [2])]
  assert source[0]["captions"]["text"].tolist() == [b"a", b"b"]  # The stored ones untouched.
  assert standard.every_caption("librispeech", source) is source


def _record_evaluators(monkeypatch):
  """Records, without a second forward pass or compile, what the evaluators computed their
  metrics from: the retrieval rows (retrieval.Rows of each `embed_rows`) and the
  reconstruction forward's outputs ((columns, mse) of each call of its jitted `_forward`,
  which `run` sets on first use)."""
  recorded = {"retrieval": [], "reconstruction": []}
  embed_rows = retrieval.Evaluator.embed_rows

  def record_embed_rows(self, model):
    recorded["retrieval"].append(embed_rows(self, model))
    return recorded["retrieval"][-1]

  def set_forward(self, forward):
    def record(*args):
      recorded["reconstruction"].append(jax.device_get(forward(*args)))
      return recorded["reconstruction"][-1]
    self.__dict__["recorded_forward"] = None if forward is None else record

  monkeypatch.setattr(retrieval.Evaluator, "embed_rows", record_embed_rows)
  monkeypatch.setattr(reconstruction.Evaluator, "_forward", property(
      lambda self: self.__dict__["recorded_forward"], set_forward), raising=False)
  return recorded


@pytest.mark.slow  # End-to-end training.
@pytest.mark.parametrize("dataset", sorted(standard.DATASETS))
def test_short_run_on_mock_data(dataset, tmp_path, monkeypatch):
  config = pretrain_tfds.get_config(f"dataset={dataset},runlocal")
  config.data.dir = str(tmp_path / "tfds")
  config.data.min_audio_seconds = 0.0  # Mock waveforms are a few dozen samples long.
  kwargs = dict(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE)
  if dataset == "coco_captions":
    kwargs["as_data_source_fn"] = _coco_examples
  recorded = _record_evaluators(monkeypatch)
  with tfds.testing.mock_data(**kwargs):
    metrics = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    info = loader.prepare(config.data)
  known = standard.DATASETS[dataset]
  # The reported metrics, recomputed in NumPy from what the last evaluation computed them from.
  if dataset == "coco_captions":  # Every caption of every image (standard protocol).
    z, _, has, image_ids = recorded["retrieval"][-1]
    assert all(h.all() for h in has.values())
    captions = [_coco_captions(i) for i in range(info.split_sizes[known.eval_split])]
    np.testing.assert_array_equal(image_ids, [i for i, c in enumerate(captions) for _ in c])
    # Image 0's and image 1's first caption are one text: one embedding.
    np.testing.assert_array_equal(z["text"][0], z["text"][len(captions[0])])
    reference = numpy_metrics.image_caption_retrieval(z["image"], z["text"], image_ids)
    for direction, (sims, hits) in reference.items():
      for k in retrieval.KS:
        name = f"eval/retrieval/{direction}/r@{k}"
        numpy_metrics.check_recall(metrics[name], sims, hits, k, eps=0.0, what=name)
  elif len(known.modalities) == 2:
    z, labels, has, _ = recorded["retrieval"][-1]
    assert len(labels) == info.split_sizes[known.eval_split]  # The whole split, once.
    assert {k.split("/")[2] for k in metrics if k.startswith("eval/retrieval/")} == {
        f"{a}_to_{b}" for a, b in itertools.permutations(known.modalities)}
    for a, b in itertools.permutations(known.modalities):
      rows = has[a] & has[b]
      for k in retrieval.KS:
        name = f"eval/retrieval/{a}_to_{b}/r@{k}"
        numpy_metrics.check_recall(metrics[name], z[a][rows] @ z[b][rows].T,
                                   labels[rows][:, None] == labels[rows][None, :], k, eps=0.0,
                                   what=name)
  if "image" in known.modalities:
    # Original, masked (hidden patches blank) and reconstructed (hidden patches predicted).
    (target, shown, mixed), mse = recorded["reconstruction"][-1]
    hidden = shown != target  # (Random mock pixels are never exactly 0.)
    assert 0 < hidden.mean() < 1
    want = np.square(mixed - target)[hidden].mean()
    np.testing.assert_allclose(metrics["eval/reconstruction/masked_mse"], want, rtol=1e-5)
    np.testing.assert_allclose(mse, want, rtol=1e-5)


@pytest.mark.slow  # End-to-end training.
def test_mixture_of_modalities_on_mock_data(tmp_path):
  """Speech-transcript pairs and images alone (librispeech:0.5+cifar10:0.5): batches carry the
  union of the modalities with presence flags, and each example trains what it has."""
  config = pretrain_tfds.get_config("dataset=librispeech:0.5+cifar10:0.5,runlocal")
  config.data.dir = str(tmp_path / "tfds")
  config.data.min_audio_seconds = 0.0
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    info = loader.prepare(config.data)
    batches = loader.train_loader(config.data, info, global_batch_size=16, seed=0)
    batch = next(iter(batches))
    metrics = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert info.modalities == ("image", "text", "audio")
  images = batch["source"] == list(config.data.mixture).index("cifar10")
  assert 0 < images.sum() < 16
  np.testing.assert_array_equal(batch["has_image"], images)
  np.testing.assert_array_equal(batch["has_text"], ~images)
  np.testing.assert_array_equal(batch["has_audio"], ~images)
  assert not batch["image"][~images].any() and not batch["audio_mask"][images].any()
  # Evaluation reads librispeech: speech-transcript retrieval only.
  assert {k.split("/")[2] for k in metrics} == {"audio_to_text", "text_to_audio"}
  train = [m for m in metrics_lib.read_jsonl(str(tmp_path / "run")) if "train/loss" in m]
  # (Not masked_audio: mock waveforms, a few dozen samples, fill no audio patch.)
  for key in ("train/loss/masked_image", "train/loss/masked_text",
              "train/contrastive/text_audio"):
    assert all(np.isfinite(m[key]) and m[key] > 0 for m in train), key
  assert "train/contrastive/image_text" in train[0]  # Its pairs exist in no example: zero.
  assert all(m["train/contrastive/image_text"] == 0 for m in train)
