"""Moved: the memory planner is mmjax.train.planner (mmjax.parallel does not import
mmjax.train). This module keeps `dataset_info` for benchmarks outside the repository that
build a shapes-only DatasetInfo through it (../shared/bench/anchors.py)."""
from mmjax.data import info as info_lib


def dataset_info(image_shape=(224, 224, 3), text_len=64, vocab_size=32000, audio_seconds=10.0,
                 sample_rate=16000, modalities=("image", "text", "audio")):
  """What mmjax.train.planner.dataset_info gives, with the same defaults."""
  sizes = {"image": tuple(image_shape), "text": text_len,
           "audio": round(audio_seconds * sample_rate)}
  return info_lib.planned({m: sizes[m] for m in modalities}, vocab_size=vocab_size,
                          sample_rate=sample_rate)
