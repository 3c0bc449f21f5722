"""Standard TFDS datasets through their real TFDS builders, the loader and the op strings of
configs/pretrain_tfds.py, on tfds.testing.mock_data (random examples shaped by each builder's
features; nothing is downloaded): a short training run each."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import pretrain_tfds
from mmjax.data import standard
from mmjax.train import trainer


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
    return {"image": buf.getvalue(), "image/id": i, "image/filename": f"{i}.png",
            "captions": {"id": np.arange(5), "text": [f"a photo number {i} of kind {j}".encode()
                                                       for j in range(5)]},
            "objects": {}}
  assert "captions" in builder.info.features  # The real builder's features.
  return [example(i) for i in range(24)]


@pytest.mark.parametrize("dataset", sorted(standard.DATASETS))
def test_short_run_on_mock_data(dataset, tmp_path):
  config = pretrain_tfds.get_config(f"dataset={dataset},runlocal")
  config.data.dir = str(tmp_path / "tfds")
  config.data.min_audio_seconds = 0.0  # Mock waveforms are a few dozen samples long.
  kwargs = dict(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE)
  if dataset == "coco_captions":
    kwargs["as_data_source_fn"] = _coco_examples
  with tfds.testing.mock_data(**kwargs):
    metrics = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  known = standard.DATASETS[dataset]
  if len(known.modalities) == 2:
    a, b = known.modalities
    assert 0 <= metrics[f"eval/retrieval/{a}_to_{b}/r@1"] <= 1
  if "image" in known.modalities:
    assert np.isfinite(metrics["eval/reconstruction/masked_mse"])
